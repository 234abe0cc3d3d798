"""Request/reply over RabbitMQ: one client per process, one server per work queue.

Wire format: a request carries ``type`` (the operation), ``correlation_id``,
``reply_to``, an ``expiration`` equal to its timeout (the time it has left) and its deadline
in the ``x-deadline-ms`` header (milliseconds since the epoch). The reply body is
``{"result": {...}}`` or ``{"error": {"type": ..., "message": ...}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pamqp.commands import Basic
from pydantic import BaseModel

from shared import codec
from shared.auth import RequestGate, stamp
from shared.bus import Bus, deadline_after
from shared.errors import (
    BusUnavailable,
    DeadlineExceeded,
    GridError,
    InvalidRequest,
    NoConsumer,
    RemoteError,
    from_wire,
)
from shared.frames import Delivery
from shared.logs import REQUEST_ID_HEADER, request_id
from shared.topology import Names, declare_work_queue

log = logging.getLogger(__name__)
DEADLINE_HEADER = "x-deadline-ms"
# When the caller sent the request (ms since the epoch): a worker can count the
# time a request spent queued against a budget of its own.
SENT_HEADER = "x-sent-ms"
R = TypeVar("R", bound=BaseModel)
# Told each call's operation, outcome and seconds (for metrics).
Observer = Callable[[str, str, float], None]


def request_message(body: bytes, op: str, correlation_id: str, reply_to: str, timeout: float,
                    headers: dict | None = None, user_id: str | None = None) -> aio_pika.Message:
    """Build a request with its deadline both as a TTL and as a header."""
    return aio_pika.Message(
        body,
        user_id=user_id,
        content_type=codec.CONTENT_TYPE,
        type=op,
        correlation_id=correlation_id,
        reply_to=reply_to,
        expiration=max(timeout, 0.001),
        headers={DEADLINE_HEADER: deadline_after(timeout), SENT_HEADER: deadline_after(0),
                 **(headers or {})},
        delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
    )


@dataclass(frozen=True)
class RequestContext:
    """What a handler is told of the request it serves, besides its body."""

    # The caller's request id (the HTTP request's, for a request made by the API).
    request_id: str = ""
    # The deadline (epoch seconds), None if it has none: a handler whose effect must not
    # land after the caller gave up checks it before committing.
    deadline: float | None = None
    # When the caller sent the request (epoch seconds), None if it did not say: a worker can
    # count the time a request spent queued against a budget of its own.
    sent: float | None = None

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> RequestContext:
        headers = message.headers or {}
        sent = headers.get(SENT_HEADER)
        return cls(request_id=str(headers.get(REQUEST_ID_HEADER, "")),
                   deadline=deadline_in(headers),
                   sent=sent / 1000 if isinstance(sent, int) else None)


def deadline_in(headers: dict | None) -> float | None:
    """The deadline (epoch seconds) carried by message headers, None if there is none."""
    deadline = (headers or {}).get(DEADLINE_HEADER)
    return deadline / 1000 if isinstance(deadline, int) else None


def expired(headers: dict | None) -> bool:
    deadline = deadline_in(headers)
    return deadline is not None and time.time() > deadline


def reply_properties(correlation_id: str | None, headers: dict | None = None,
                     user_id: str | None = None) -> Basic.Properties:
    """Properties of a reply: JSON, transient, matched to its request by correlation id."""
    return Basic.Properties(content_type=codec.CONTENT_TYPE, correlation_id=correlation_id,
                            headers=headers, user_id=user_id, delivery_mode=1)


def past_deadline(message: AbstractIncomingMessage) -> bool:
    return expired(message.headers)


class RpcClient:
    """Sends requests to work queues and awaits the correlated replies.

    One exclusive reply queue per process; calls run concurrently, each with
    its own deadline; stray and late replies are dropped.
    """

    def __init__(self, bus: Bus, names: Names, owner: str,
                 observe: Observer | None = None) -> None:
        self.bus = bus
        self.names = names
        self.reply_queue_name = names.reply_queue(owner, uuid.uuid4().hex[:12])
        self._pending: dict[str, asyncio.Future[dict]] = {}
        # Secure mode: requests carry this process's user; replies count only from the gateway's.
        self.gate = RequestGate(bus.settings)
        self.user_id = stamp(bus.settings)
        self.observe = observe
        bus.on_connection_lost(self._fail_pending)

    async def start(self) -> None:
        channel = self.bus.fast
        assert channel is not None, "connect the bus first"
        await channel.declare_queue(self.reply_queue_name, exclusive=True, auto_delete=True)
        await self.bus.consume_direct(self.reply_queue_name, self._on_reply)

    async def call(self, queue: str, op: str, request: BaseModel, reply_model: type[R],
                   deadline_s: float) -> R:
        """Send ``request`` as operation ``op`` to ``queue`` and return the validated reply."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            result = await self._call(queue, op, codec.dumps(request), deadline_s)
            return codec.validate(reply_model, result)
        except GridError as exc:
            outcome = exc.type
            raise
        finally:
            if self.observe is not None:
                self.observe(op, outcome, time.perf_counter() - started)

    async def _call(self, queue: str, op: str, body: bytes, deadline_s: float) -> Any:
        if not self.bus.ready or self.bus.confirmed is None:
            raise BusUnavailable("the message broker is unavailable")
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        headers = {REQUEST_ID_HEADER: request_id.get() or correlation_id}
        message = request_message(body, op, correlation_id, self.reply_queue_name, deadline_s,
                                  headers, self.user_id)
        try:
            async with asyncio.timeout(deadline_s):
                await self._publish(message, queue)
                reply = await future
        except TimeoutError:
            raise DeadlineExceeded(f"no answer from {queue} within {deadline_s:g} s") from None
        finally:
            self._pending.pop(correlation_id, None)
        if "error" in reply:
            raise from_wire(reply["error"])
        if "result" not in reply:
            raise RemoteError("reply carries neither result nor error")
        return reply["result"]

    async def _publish(self, message: aio_pika.Message, queue: str) -> None:
        try:
            await self.bus.confirmed.default_exchange.publish(
                message, routing_key=queue, mandatory=True
            )
        except aio_pika.exceptions.DeliveryError:
            raise NoConsumer(f"no queue {queue} to receive the request") from None
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            log.warning("could not publish a request", extra={"error": str(exc)})
            raise BusUnavailable("The message broker connection was lost while sending the "
                                 "request; try again shortly.") from None

    def _on_reply(self, message: Delivery) -> None:
        future = self._pending.get(message.correlation_id or "")
        # Stray or late (its caller gave up), or not from the gateway's own users.
        if future is None or future.done() or not self.gate.from_gateway(message.user_id):
            return
        try:
            reply = codec.loads(message.body)
            if not isinstance(reply, dict):
                raise ValueError("reply is not an object")
        except ValueError:
            future.set_exception(RemoteError("malformed reply"))
            return
        future.set_result(reply)

    def _fail_pending(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BusUnavailable(
                    "The message broker connection was lost before the answer came; "
                    "try again shortly."))


Handler = Callable[[Any, RequestContext], Awaitable[BaseModel]]


@dataclass(frozen=True)
class Operation:
    """One operation a server answers: its request contract and its handler."""

    request: type[BaseModel]
    handler: Handler


class RpcServer:
    """Consumes one work queue and answers each request on its ``reply_to``.

    A request is acknowledged only after its reply is published, so a request
    held by a worker that dies is redelivered to another. Poison messages
    (undecodable, wrong schema, unknown type) are rejected to the dead-letter
    queue, with an error reply when the sender can be told.
    """

    def __init__(self, bus: Bus, names: Names, queue_name: str,
                 operations: dict[str, Operation], prefetch: int,
                 observe: Observer | None = None) -> None:
        self.bus = bus
        self.names = names
        self.queue_name = queue_name
        self.operations = operations
        self.prefetch = prefetch
        self.poison = 0
        # Requests dead-lettered unanswered: their sender is not one of the gateway's users.
        self.refused = 0
        self.gate = RequestGate(bus.settings)
        self._user_id = stamp(bus.settings)
        self.observe = observe
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._in_flight: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._channel = await self.bus.channel(prefetch=self.prefetch)
        self._queue = await declare_work_queue(self._channel, self.names, self.queue_name,
                                               self.bus.settings.queue_type)
        self._consumer_tag = await self._queue.consume(self._on_message)

    async def stop(self, grace_s: float) -> None:
        """Stop consuming, let in-flight requests finish within ``grace_s``.

        Whatever is still unfinished is cancelled unacknowledged, so the
        broker redelivers it to another worker when the channel closes.
        """
        tag, self._consumer_tag = self._consumer_tag, None
        if self._queue is not None and tag is not None and self.bus.ready:
            with contextlib.suppress(Exception):  # the channel may already be gone
                await asyncio.wait_for(self._queue.cancel(tag), 3)
        if self._in_flight:
            _, pending = await asyncio.wait(self._in_flight, timeout=grace_s)
            for task in pending:
                task.cancel()
        if self._channel is not None and not self._channel.is_closed and self.bus.ready:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._channel.close(), 3)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        context = RequestContext.of(message)
        request_id.set(context.request_id)  # for the log lines written while serving it
        started = time.perf_counter()
        op = message.type or ""
        try:
            outcome = await self._handle(message, op, context)
        finally:
            if task is not None:
                self._in_flight.discard(task)
        elapsed = time.perf_counter() - started
        if self.observe is not None:
            self.observe(op, outcome, elapsed)
        if log.isEnabledFor(logging.INFO):
            log.info("handled", extra={"queue": self.queue_name, "op": op, "outcome": outcome,
                                       "ms": round(elapsed * 1000, 2)})

    async def _handle(self, message: AbstractIncomingMessage, op: str,
                      context: RequestContext) -> str:
        if not self.gate.admits(message.user_id, op):
            return await self._refuse(message, op)
        if past_deadline(message):
            log.info("dropped a request past its deadline", extra={"op": op})
            await message.ack()
            return "expired"
        operation = self.operations.get(op)
        try:
            if operation is None:
                raise InvalidRequest(f"unknown operation {op!r}")
            request = codec.decode(operation.request, message.body)
        except InvalidRequest as exc:
            return await self._reject_poison(message, exc)
        try:
            reply: dict = {"result": await operation.handler(request, context)}
            outcome = "ok"
        except GridError as exc:
            reply, outcome = {"error": exc.to_wire()}, exc.type
        except Exception:
            log.exception("handler failed", extra={"op": op})
            reply, outcome = {"error": RemoteError("internal error").to_wire()}, "remote_error"
        await self._reply(message, reply)
        await message.ack()
        return outcome

    async def _refuse(self, message: AbstractIncomingMessage, op: str) -> str:
        """Dead-letter a request from outside the gateway: never answered, never acted on."""
        self.refused += 1
        log.warning("refused a request from a user outside the gateway",
                    extra={"queue": self.queue_name, "op": op, "user_id": message.user_id})
        await message.reject(requeue=False)
        return "refused"

    async def _reject_poison(self, message: AbstractIncomingMessage, exc: InvalidRequest) -> str:
        self.poison += 1
        log.warning("rejected a poison message", extra={"op": message.type, "error": exc.message})
        await self._reply(message, {"error": exc.to_wire()})
        await message.reject(requeue=False)
        return "poison"

    async def _reply(self, message: AbstractIncomingMessage, reply: dict) -> None:
        if not message.reply_to or self.bus.fast is None:
            return
        await self.bus.publish_raw(codec.dumps(reply), message.reply_to,
                                   reply_properties(message.correlation_id,
                                                    user_id=self._user_id))
