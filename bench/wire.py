"""A minimal AMQP 0-9-1 client for the simulated fleet: many nodes on one connection, cheaply.

The fleet exists to load the gateway, not itself. Through aio-pika/aiormq a
node reply costs about 0.5 ms of CPU (a frame queue, a lock and three reads
per frame, pamqp objects for every frame, a writer task), which at N = 100
makes the simulated fleet the largest CPU user on the machine. Here the hot
path, a broadcast delivered and a reply published, is parsed and built with
``struct`` inside ``data_received``, and the replies of one read leave in one
socket write. The rest of the protocol (handshake, declarations, errors)
goes through pamqp. It speaks exactly the node protocol of docs/protocol.md.

What it does not do: TLS, publisher confirms, reconnects, flow control. Given
a list of broker addresses it connects to the first that answers, but never
fails over: a benchmark fleet that loses its broker has failed its run.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from pamqp import commands, frame, header, heartbeat

from shared.frames import (
    BODY,
    CONTENT_TYPE,
    CORRELATION_ID,
    DELIVERY_MODE,
    FRAME_END,
    FRAME_HEAD,
    HEADER,
    HEADERS,
    METHOD,
    U32,
    USER_ID,
    ContentProperties,
    parse_properties,
)
from shared.settings import split_amqp_urls

HEARTBEAT = 8
DELIVER = (60, 60)
CLASS_METHOD = struct.Struct(">HH")
HEARTBEAT_FRAME = frame.marshal(heartbeat.Heartbeat(), 0)

# (channel, consumer tag, reply_to, correlation id, raw headers table, body)
DeliveryHandler = Callable[[int, str, str, str, bytes, bytes], None]


class WireError(Exception):
    """The broker closed the channel or the connection."""


def shortstr(value: str) -> bytes:
    raw = value.encode()
    return bytes((len(raw),)) + raw


def string_table(entries: dict[str, str]) -> bytes:
    """A field table of long strings, with its length prefix."""
    raw = b"".join(shortstr(key) + b"S" + U32.pack(len(v := value.encode())) + v
                   for key, value in entries.items())
    return U32.pack(len(raw)) + raw


def properties(content_type: str, correlation_id: str | None = None,
               headers: dict[str, str] | None = None, user_id: str | None = None) -> bytes:
    """Flags and encoded properties of a transient message (header frame tail)."""
    flags, parts = CONTENT_TYPE | DELIVERY_MODE, [shortstr(content_type)]
    if headers:
        flags |= HEADERS
        parts.append(string_table(headers))
    parts.append(b"\x01")  # delivery mode 1: transient
    if correlation_id is not None:
        flags |= CORRELATION_ID
        parts.append(shortstr(correlation_id))
    if user_id is not None:
        flags |= USER_ID
        parts.append(shortstr(user_id))
    return struct.pack(">H", flags) + b"".join(parts)


@dataclass
class _Delivery:
    tag: str
    size: int
    properties: ContentProperties | None = None
    chunks: list[bytes] | None = None


class WireConnection(asyncio.Protocol):
    """One AMQP connection: a few channels, no-ack consumers, unconfirmed publishes."""

    def __init__(self, on_delivery: DeliveryHandler) -> None:
        self.on_delivery = on_delivery
        self.frame_max = 131072
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._in_read = False
        self._deliveries: dict[int, _Delivery] = {}
        # One synchronous method in flight per channel: its answer's future.
        self._waiting: dict[int, asyncio.Future] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # --- opening and closing ----------------------------------------------------

    @classmethod
    async def open(cls, url: str, on_delivery: DeliveryHandler, name: str,
                   timeout_s: float = 10.0) -> WireConnection:
        """Connect to the first address of ``url`` (``AMQP_URL``, maybe a list) that answers."""
        addresses = split_amqp_urls(url)
        for address in addresses[:-1]:
            try:
                return await cls._open(address, on_delivery, name, timeout_s)
            except (OSError, TimeoutError, WireError):
                continue
        return await cls._open(addresses[-1], on_delivery, name, timeout_s)

    @classmethod
    async def _open(cls, url: str, on_delivery: DeliveryHandler, name: str,
                    timeout_s: float) -> WireConnection:
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            transport, self = await loop.create_connection(
                lambda: cls(on_delivery), parts.hostname or "localhost", parts.port or 5672)
            try:
                await self._handshake(unquote(parts.username or "guest"),
                                      unquote(parts.password or "guest"),
                                      unquote(parts.path[1:]) or "/", name)
            except BaseException:
                transport.abort()
                raise
        return self

    async def _handshake(self, user: str, password: str, vhost: str, name: str) -> None:
        start = self._expect(0)
        self._send(header.ProtocolHeader().marshal())
        await start
        tune = self._expect(0)
        self._send_method(0, commands.Connection.StartOk(
            client_properties={"connection_name": name, "product": "grid-bench-fleet"},
            mechanism="PLAIN", response=f"\0{user}\0{password}", locale="en_US"))
        tuned = await tune
        self.frame_max = tuned.frame_max or self.frame_max
        self._send_method(0, commands.Connection.TuneOk(
            channel_max=tuned.channel_max, frame_max=self.frame_max, heartbeat=0))
        await self.call(0, commands.Connection.Open(virtual_host=vhost))

    async def open_channel(self, channel: int) -> None:
        await self.call(channel, commands.Channel.Open())

    async def close(self, timeout_s: float = 3.0) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self.call(0, commands.Connection.Close(reply_code=200, reply_text="bye",
                                                                class_id=0, method_id=0))
        except (TimeoutError, WireError):
            pass
        self._transport.close()

    # --- synchronous methods (declarations) ---------------------------------------

    async def call(self, channel: int, method: commands.Frame) -> commands.Frame:
        """Send a method and await the broker's answer on that channel."""
        lock = self._locks.setdefault(channel, asyncio.Lock())
        async with lock:
            answer = self._expect(channel)
            self._send_method(channel, method)
            return await answer

    def _expect(self, channel: int) -> asyncio.Future:
        if self.closed.done():
            raise WireError("connection closed")
        future = asyncio.get_running_loop().create_future()
        self._waiting[channel] = future
        return future

    # --- publishing -----------------------------------------------------------------

    def publish(self, channel: int, exchange: str, routing_key: str, props: bytes,
                body: bytes) -> None:
        """Queue a message for the socket; it leaves at the end of the current read."""
        method = (CLASS_METHOD.pack(60, 40) + b"\0\0" + shortstr(exchange)
                  + shortstr(routing_key) + b"\0")
        head = CLASS_METHOD.pack(60, 0) + struct.pack(">Q", len(body)) + props
        out = self._out
        out.append(FRAME_HEAD.pack(METHOD, channel, len(method)) + method + b"\xce")
        out.append(FRAME_HEAD.pack(HEADER, channel, len(head)) + head + b"\xce")
        step = self.frame_max - 8
        for start in range(0, len(body), step):
            chunk = body[start:start + step]
            out.append(FRAME_HEAD.pack(BODY, channel, len(chunk)) + chunk + b"\xce")
        if not self._in_read:
            self._flush()

    def _send_method(self, channel: int, method: commands.Frame) -> None:
        self._send(frame.marshal(method, channel))

    def _send(self, data: bytes) -> None:
        self._out.append(data)
        if not self._in_read:
            self._flush()

    def _flush(self) -> None:
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._out))
        self._out.clear()

    # --- reading ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(WireError(f"connection lost: {exc}" if exc else "connection closed"))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        position, size_in = 0, len(buffer)
        self._in_read = True
        try:
            while size_in - position >= 8:
                kind, channel, length = FRAME_HEAD.unpack_from(buffer, position)
                end = position + 7 + length
                if end >= size_in:
                    break
                if buffer[end] != FRAME_END:
                    raise WireError("malformed frame from the broker")
                self._frame(kind, channel, bytes(buffer[position + 7:end]),
                            buffer, position, end + 1)
                position = end + 1
        except WireError as exc:
            self._fail_all(exc)
            if self._transport is not None:
                self._transport.abort()
        finally:
            del buffer[:position]
            self._in_read = False
            self._flush()

    def _frame(self, kind: int, channel: int, payload: bytes, buffer: bytearray,
               start: int, stop: int) -> None:
        if kind == METHOD:
            if CLASS_METHOD.unpack_from(payload) == DELIVER:
                tag_length = payload[4]
                tag = payload[5:5 + tag_length].decode()
                self._deliveries[channel] = _Delivery(tag, -1)
            else:
                self._method(channel, frame.unmarshal(bytes(buffer[start:stop]))[2])
        elif kind == HEADER:
            delivery = self._deliveries.get(channel)
            if delivery is not None:
                delivery.properties = parse_properties(payload)
                delivery.size = delivery.properties.body_size
                if delivery.size == 0:
                    self._deliver(channel, delivery, b"")
        elif kind == BODY:
            delivery = self._deliveries.get(channel)
            if delivery is not None:
                if delivery.chunks is None and len(payload) == delivery.size:
                    self._deliver(channel, delivery, payload)
                else:
                    delivery.chunks = [*(delivery.chunks or ()), payload]
                    body = b"".join(delivery.chunks)
                    if len(body) >= delivery.size:
                        self._deliver(channel, delivery, body)
        elif kind == HEARTBEAT:
            self._send(HEARTBEAT_FRAME)

    def _deliver(self, channel: int, delivery: _Delivery, body: bytes) -> None:
        del self._deliveries[channel]
        properties = delivery.properties
        self.on_delivery(channel, delivery.tag, properties.reply_to or "",
                         properties.correlation_id or "", properties.headers or b"", body)

    def _method(self, channel: int, method: commands.Frame) -> None:
        if isinstance(method, commands.Connection.Close):
            self._send_method(0, commands.Connection.CloseOk())
            self._fail_all(WireError(f"broker closed the connection: {method.reply_text}"))
            return
        if isinstance(method, commands.Channel.Close):
            self._send_method(channel, commands.Channel.CloseOk())
            self._fail(channel, WireError(f"broker closed channel {channel}: "
                                          f"{method.reply_code} {method.reply_text}"))
            return
        if isinstance(method, commands.Connection.CloseOk):
            self._fail_all(WireError("connection closed"))
            return
        future = self._waiting.pop(channel, None)
        if future is not None and not future.done():
            future.set_result(method)
        # anything else unasked (Basic.Cancel, Connection.Blocked) is ignored

    def _fail(self, channel: int, exc: Exception) -> None:
        future = self._waiting.pop(channel, None)
        if future is not None and not future.done():
            future.set_exception(exc)

    def _fail_all(self, exc: Exception) -> None:
        for channel in list(self._waiting):
            self._fail(channel, exc)
        if not self.closed.done():
            self.closed.set_result(None)
