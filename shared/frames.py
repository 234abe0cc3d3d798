"""Reading AMQP frames: whole socket reads at once, and the busiest deliveries handed over directly.

aiormq reads each frame with a lock, a BytesIO and three ``readexactly``
awaits, decodes it into pamqp objects (a Deliver, a ContentHeader with every
property), queues it for the channel's reader task, and starts a task per
delivered message. A profile of the search worker at N = 1000 put two thirds
of its CPU there, for replies of which it reads three fields.

:class:`BufferedFrameReceiver` replaces aiormq's receiver in the connections
opened with the reader fast path (:func:`install_frame_receiver`, :func:`adopt`;
``GRID_BUS_FAST_PATH``, docs/fast-paths.md). It reads whatever the socket
has and splits every whole frame out of it. Deliveries to a consumer tag
registered with :func:`deliver_directly` (no-ack consumers with a synchronous
handler: the reply queues) are parsed with ``struct`` right there and handed
to the handler as a :class:`Delivery`, never reaching aiormq; every other
frame goes to aiormq as before.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import struct
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import aiormq.connection
import pamqp.frame
from aiormq.connection import FrameReceiver
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp.exceptions import PAMQPException

log = logging.getLogger(__name__)
READ_SIZE = 2**16
FRAME_HEAD = struct.Struct(">BHI")
BODY_SIZE_AND_FLAGS = struct.Struct(">QH")
U32 = struct.Struct(">I")
METHOD, HEADER, BODY = 1, 2, 3
FRAME_END = 0xCE
BASIC_DELIVER = b"\x00\x3c\x00\x3c"  # class 60 (basic), method 60 (deliver)
# Basic property flags, in wire order (AMQP 0-9-1, 4.2.6.1).
CONTENT_TYPE, CONTENT_ENCODING, HEADERS, DELIVERY_MODE = 0x8000, 0x4000, 0x2000, 0x1000
PRIORITY, CORRELATION_ID, REPLY_TO, EXPIRATION = 0x0800, 0x0400, 0x0200, 0x0100
MESSAGE_ID, TIMESTAMP, TYPE, USER_ID = 0x0080, 0x0040, 0x0020, 0x0010


@dataclass(slots=True)
class Delivery:
    """A delivered message, with the properties a reply consumer reads."""

    body: bytes
    correlation_id: str | None
    reply_to: str | None
    user_id: str | None


DirectHandler = Callable[[Delivery], None]
# consumer tag -> handler. Tags are unique per process (random), so every
# connection's receiver can look its deliveries up here.
_handlers: dict[str, DirectHandler] = {}


def deliver_directly(consumer_tag: str, handler: DirectHandler | None) -> None:
    """Hand the deliveries of a no-ack consumer to ``handler`` (None: back to aiormq)."""
    if handler is None:
        _handlers.pop(consumer_tag, None)
    else:
        _handlers[consumer_tag] = handler


def _shortstr(payload: bytes, offset: int) -> tuple[str, int]:
    length = payload[offset]
    end = offset + 1 + length
    return payload[offset + 1:end].decode(errors="replace"), end


class ContentProperties(NamedTuple):
    """What a consumer reads from a content header frame."""

    body_size: int
    headers: bytes | None  # the encoded field table, length prefix included
    correlation_id: str | None
    reply_to: str | None
    user_id: str | None


def parse_properties(payload: bytes) -> ContentProperties:
    """Body size, headers, correlation_id, reply_to and user_id of a content header payload.

    The properties come in flag order (AMQP 0-9-1, 4.2.6.1); those not read
    are skipped by their encoded size.
    """
    size, flags = BODY_SIZE_AND_FLAGS.unpack_from(payload, 4)
    offset = 14
    headers = correlation_id = reply_to = user_id = None
    if flags & CONTENT_TYPE:
        offset += 1 + payload[offset]
    if flags & CONTENT_ENCODING:
        offset += 1 + payload[offset]
    if flags & HEADERS:  # a field table with a 32-bit length
        end = offset + 4 + U32.unpack_from(payload, offset)[0]
        headers, offset = payload[offset:end], end
    offset += bool(flags & DELIVERY_MODE) + bool(flags & PRIORITY)
    if flags & CORRELATION_ID:
        correlation_id, offset = _shortstr(payload, offset)
    if flags & REPLY_TO:
        reply_to, offset = _shortstr(payload, offset)
    if flags & EXPIRATION:
        offset += 1 + payload[offset]
    if flags & MESSAGE_ID:
        offset += 1 + payload[offset]
    if flags & TIMESTAMP:
        offset += 8
    if flags & TYPE:
        offset += 1 + payload[offset]
    if flags & USER_ID:
        user_id, offset = _shortstr(payload, offset)
    return ContentProperties(size, headers, correlation_id, reply_to, user_id)


class _Incoming:
    """A direct delivery whose header or body frames are still to come."""

    __slots__ = ("handler", "size", "properties", "chunks")

    def __init__(self, handler: DirectHandler) -> None:
        self.handler = handler
        self.size = -1
        self.properties: tuple = ()
        self.chunks: list[bytes] = []


class BufferedFrameReceiver(FrameReceiver):
    """aiormq's frame source, reading every whole frame of a socket read at once."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        self._buffer = bytearray()
        self._frames: deque = deque()
        self._incoming: dict[int, _Incoming] = {}  # channel -> direct delivery in progress

    async def get_frame(self) -> Any:
        """The next ``(size, channel, frame)``; awaits the socket only when none is buffered."""
        while not self._frames:
            try:
                data = await self.reader.read(READ_SIZE)
            except OSError as exc:
                raise AMQPConnectionError(f"Server communication error: {exc!r}") from exc
            if not data:
                if self._buffer:
                    raise AMQPConnectionError("Server connection unexpectedly closed "
                                              "in the middle of a frame")
                raise StopAsyncIteration
            self._buffer += data
            self._split()
        return self._frames.popleft()

    def _split(self) -> None:
        buffer, position = self._buffer, 0
        if not self.started:
            if buffer.startswith(b"AMQP"):
                raise ProtocolSyntaxError("Unexpected AMQP protocol header")
            self.started = True
        while len(buffer) - position >= 8:
            kind, channel, size = FRAME_HEAD.unpack_from(buffer, position)
            end = position + 8 + size
            if end > len(buffer):
                break
            frame = bytes(buffer[position:end])
            if not self._direct(kind, channel, frame):
                try:
                    self._frames.append(pamqp.frame.unmarshal(frame))
                except PAMQPException as exc:
                    raise InvalidFrameError(str(exc)) from exc
            position = end
        del buffer[:position]

    def _direct(self, kind: int, channel: int, frame: bytes) -> bool:
        """Take the frame if it belongs to a direct delivery; False leaves it to aiormq."""
        incoming = self._incoming.get(channel)
        if incoming is None:
            if kind != METHOD or frame[7:11] != BASIC_DELIVER:
                return False
            handler = _handlers.get(_shortstr(frame, 11)[0])
            if handler is None:
                return False
            self._incoming[channel] = incoming = _Incoming(handler)
        if frame[-1] != FRAME_END:
            raise InvalidFrameError("frame does not end with the frame-end octet")
        if kind == METHOD:
            return True  # the Deliver: its header and body frames follow
        if kind == HEADER and incoming.size < 0:
            parsed = parse_properties(frame[7:-1])
            incoming.size = parsed.body_size
            incoming.properties = (parsed.correlation_id, parsed.reply_to, parsed.user_id)
        elif kind == BODY and incoming.size >= 0:
            incoming.chunks.append(frame[7:-1])
        else:
            raise InvalidFrameError(f"unexpected frame type {kind} inside a delivery")
        body = b"".join(incoming.chunks)
        if len(body) >= incoming.size:
            del self._incoming[channel]
            self._dispatch(incoming.handler, Delivery(body, *incoming.properties))
        return True

    @staticmethod
    def _dispatch(handler: DirectHandler, delivery: Delivery) -> None:
        try:
            handler(delivery)
        except Exception:  # a consumer's bug must not break the connection
            log.exception("a direct consumer failed")


# The versions this module was written and measured against (tests/test_fast_path.py).
WRITTEN_FOR = {"aio-pika": "10.2.1", "aiormq": "7.2.4", "pamqp": "4.0.1"}
# The readers of the connections opened with the reader fast path (shared.transport).
_adopted: weakref.WeakSet[asyncio.StreamReader] = weakref.WeakSet()


def adopt(reader: asyncio.StreamReader) -> None:
    """Have the connection over ``reader`` read its frames with :class:`BufferedFrameReceiver`."""
    _adopted.add(reader)


def _receiver_for(reader: asyncio.StreamReader) -> FrameReceiver:
    """The receiver aiormq builds for a new connection: ours for adopted readers, else its own."""
    if reader in _adopted:
        return BufferedFrameReceiver(reader)
    return FrameReceiver(reader)


def install_frame_receiver() -> None:
    """Make aiormq build :class:`BufferedFrameReceiver` for the connections over adopted readers.

    aiormq names its receiver class at module level and offers no option for
    it; every other connection of the process keeps aiormq's own receiver.
    Nothing is replaced until a connection with the reader fast path opens.
    """
    if aiormq.connection.FrameReceiver is _receiver_for:
        return
    for package, version in WRITTEN_FOR.items():
        installed = importlib.metadata.version(package)
        if installed != version:
            log.warning("the bus reader fast path was written for %s %s, not %s; "
                        "GRID_BUS_FAST_PATH=false runs without it", package, version, installed)
    aiormq.connection.FrameReceiver = _receiver_for
