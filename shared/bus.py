"""The AMQP connection every process uses: robust, with a deadline on connecting.

A :class:`Bus` holds one robust connection (aio-pika reconnects it and
restores its channels, queues, bindings and consumers by itself, on the next
broker address of ``AMQP_URL`` when there are several: see
:mod:`shared.transport`) and two
channels: ``confirmed`` for requests into work queues, where a publish must
not be lost, and ``fast`` (no publisher confirms) for replies, broadcasts and
events, which are covered by their caller's deadline instead.

The busiest consumers and publishers (node queries and replies, RPC replies,
broadcasts) go straight through aiormq under ``fast`` (``consume_raw``,
``publish_raw``, aiormq's public channel API), and the reply queues further
still, parsed inside the frame reader (``consume_direct``, see
:mod:`shared.frames`) with the reader fast path, or by aio-pika's own consumer
without it; the bus renews the raw subscriptions itself after a reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from shared.errors import BusUnavailable
from shared.frames import Delivery, DirectHandler, deliver_directly
from shared.settings import BaseGridSettings
from shared.tls import QUERY_NAMES, tls_failure, with_tls_files
from shared.transport import connect_robust

log = logging.getLogger(__name__)
CLOSE_TIMEOUT_S = 3.0
# Pause between two failed attempts to reopen a dropped connection (the first
# attempt after a drop is immediate, to the next broker address).
RECONNECT_INTERVAL_S = 1.0
RawHandler = Callable[[DeliveredMessage], Awaitable[None]]


class Bus:
    """One robust connection to the broker and the channels built on it."""

    def __init__(self, settings: BaseGridSettings, client_name: str) -> None:
        self.settings = settings
        self.client_name = client_name
        self.connection: AbstractRobustConnection | None = None
        self.confirmed: AbstractChannel | None = None
        self.fast: AbstractChannel | None = None
        self._on_lost: list[Callable[[], None]] = []
        # consumer tag -> (queue, handler) of the raw consumers on ``fast``
        self._raw: dict[str, tuple[str, RawHandler]] = {}
        # consumer tag -> queue of the direct consumers aio-pika serves (no reader fast path)
        self._stock: dict[str, AbstractQueue] = {}
        self._closed = False
        # False from a drop until aio-pika has restored every channel, queue,
        # binding and consumer on the new connection.
        self._restored = False
        # The broker user of this connection; the broker checks it against ``user_id``
        # (read once: every reply of a node carries it).
        self.user = settings.amqp_user
        # Why the last attempt to connect failed, when TLS was the reason (a setting
        # to fix, not a broker to wait for); None after a success.
        self.tls_failure: str | None = None

    @property
    def ready(self) -> bool:
        """True while the connection is open and restored (False during a reconnect).

        The connection counts as open before aio-pika has redeclared the
        channels, queues and consumers on it: a request sent then could have
        its reply dropped for want of the reply queue, so it is not ready yet.
        """
        conn = self.connection
        return (conn is not None and not conn.is_closed and conn.connected.is_set()
                and self._restored)

    def on_connection_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time the connection drops (before reconnecting)."""
        self._on_lost.append(callback)

    async def connect(self) -> None:
        """Connect to the first broker address that answers, each tried for ``connect_timeout_s``.

        Raises BusUnavailable when none does.
        """
        settings = self.settings
        urls = with_tls_files(settings.amqp_urls,
                              {name: getattr(settings, name) for name in QUERY_NAMES})
        try:
            self.connection = await connect_robust(
                urls, self.client_name, reconnect_interval_s=RECONNECT_INTERVAL_S,
                timeout_s=settings.connect_timeout_s, fast_paths=settings.fast_paths)
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
            where = f"any of {len(urls)} addresses" if len(urls) > 1 else "its address"
            self.tls_failure = tls_failure(exc)
            why = self.tls_failure or exc or type(exc).__name__
            raise BusUnavailable(f"cannot reach the message broker at {where}: {why}") from None
        self.tls_failure = None
        self.connection.close_callbacks.add(self._connection_lost)
        # Called once every channel is restored after a reconnect.
        self.connection.reconnect_callbacks.add(self._reconnected)
        self.confirmed = await self.connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self.fast = await self.connection.channel(publisher_confirms=False)
        # aio-pika restores its own consumers; the raw ones are renewed here, after
        # the channel (and the queues declared on it) is back.
        self.fast.reopen_callbacks.add(self._renew_raw_consumers)
        self._restored = True

    async def connect_with_retry(self, stop: asyncio.Event | None = None) -> None:
        """Keep trying to connect until it works (or ``stop`` is set)."""
        delay = 0.2
        while not self._closed and not (stop and stop.is_set()):
            try:
                await self.connect()
                return
            except BusUnavailable as exc:
                level = logging.ERROR if self.tls_failure else logging.WARNING
                log.log(level, "broker unavailable, retrying", extra={"error": exc.message})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def channel(self, prefetch: int | None = None) -> AbstractChannel:
        """A new channel without publisher confirms, e.g. for a consumer with its own prefetch."""
        if self.connection is None:
            raise BusUnavailable("not connected to the message broker")
        channel = await self.connection.channel(publisher_confirms=False)
        if prefetch:
            await channel.set_qos(prefetch_count=prefetch)
        return channel

    # --- the hot path: straight through aiormq ------------------------------------

    async def consume_raw(self, queue: str, handler: RawHandler) -> str:
        """Consume ``queue`` on ``fast`` without acks, handing aiormq's messages to ``handler``.

        For a node's queue (the node SDK), the busiest consumer a node has: aio-pika
        builds a message object and a second task per delivery, the largest cost of
        such a consumer. The subscription is renewed whenever the channel reopens.
        Returns the consumer tag.
        """
        tag = f"raw.{uuid.uuid4().hex}"
        self._raw[tag] = (queue, handler)
        await self._subscribe_raw(tag)
        return tag

    async def consume_direct(self, queue: str, handler: DirectHandler) -> str:
        """Consume ``queue`` (declared on ``fast``) without acks, for a synchronous handler.

        With the reader fast path the frame reader parses each delivery and
        calls ``handler`` itself (:mod:`shared.frames`): no pamqp objects, no
        channel queue, no task per message; for the reply queues, where a search
        reads hundreds of replies, and the liveness owner's heartbeats. Without it,
        aio-pika's own consumer serves it.
        """
        if "reader" not in self.settings.fast_paths:
            return await self._consume_stock(queue, handler)
        tag = f"direct.{uuid.uuid4().hex}"
        deliver_directly(tag, handler)
        self._raw[tag] = (queue, _withdrawn)
        await self._subscribe_raw(tag)
        return tag

    async def _consume_stock(self, name: str, handler: DirectHandler) -> str:
        # Passive on the channel that declared it: aio-pika hands back that queue,
        # which it redeclares and re-consumes after a reconnect.
        queue = await self.fast.declare_queue(name, passive=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            handler(Delivery(message.body, message.correlation_id, message.reply_to,
                             message.user_id))

        tag = await queue.consume(on_message, no_ack=True)
        self._stock[tag] = queue
        return tag

    async def cancel_raw(self, tag: str) -> None:
        deliver_directly(tag, None)
        queue = self._stock.pop(tag, None)
        if queue is not None and self.ready:
            await queue.cancel(tag)
        if self._raw.pop(tag, None) is not None and self.ready:
            underlay = await self.fast.get_underlay_channel()
            await underlay.basic_cancel(tag)

    async def publish_raw(self, body: bytes, routing_key: str, properties: Basic.Properties,
                          exchange: str = "") -> None:
        """Publish on ``fast`` (no confirm) without building an aio-pika Message.

        Waits for a reconnect in progress no longer than ``connect_timeout_s``.
        """
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                underlay = await self.fast.get_underlay_channel()
                await underlay.basic_publish(body, exchange=exchange, routing_key=routing_key,
                                             properties=properties)
        except TimeoutError:
            raise BusUnavailable("the message broker connection is not back yet") from None

    async def _subscribe_raw(self, tag: str) -> None:
        queue, handler = self._raw[tag]
        underlay = await self.fast.get_underlay_channel()
        await underlay.basic_consume(queue, handler, no_ack=True, consumer_tag=tag)

    async def _renew_raw_consumers(self, *_: object) -> None:
        for tag in list(self._raw):
            try:
                await self._subscribe_raw(tag)
            except Exception as exc:  # noqa: BLE001 - the next reopen tries again
                log.error("cannot renew a consumer", extra={"error": str(exc)})

    def _connection_lost(self, *_: object) -> None:
        self._restored = False
        for callback in self._on_lost:
            callback()

    def _reconnected(self, *_: object) -> None:
        self._restored = True

    async def close(self) -> None:
        """Close channels, then the connection; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for tag in self._raw:
            deliver_directly(tag, None)
        # Each close is bounded: a channel whose last command was cancelled midway
        # may never see its close confirmed, and shutdown must not wait on it.
        for channel in (self.fast, self.confirmed):
            if channel is not None and not channel.is_closed:
                try:
                    await asyncio.wait_for(channel.close(), CLOSE_TIMEOUT_S)
                except Exception:  # noqa: BLE001 - closing best-effort on a dead link
                    pass
        if self.connection is not None:
            try:
                await asyncio.wait_for(self.connection.close(), CLOSE_TIMEOUT_S)
            except Exception:  # noqa: BLE001
                pass


async def _withdrawn(message: DeliveredMessage) -> None:
    """aiormq's handler of a direct consumer: the frame reader takes its deliveries.

    One reaches aiormq only after its handler was withdrawn (the consumer being
    cancelled, the bus closing): a no-ack reply nobody waits for, dropped.
    """


def deadline_after(seconds: float) -> int:
    """A wall-clock deadline in whole milliseconds since the epoch, for message headers.

    Integers, because AMQP header floats may travel as 32-bit floats, which
    cannot hold an epoch time to the second.
    """
    return int((time.time() + seconds) * 1000)
