"""The TCP transport under every bus connection: frames written in one loop tick go out together.

Writing: aiormq writes each message to the socket on its own, a ``send``
system call per message. Profiles of a node answering broadcasts and of the
search worker put that call at a third of their CPU: a process that answers
ten queries delivered in one read made ten calls. Here the writes of one
event-loop iteration are joined and handed to the socket at the end of it, in
one call, like Nagle's algorithm without its delay: a lone message still
leaves in the same tick.

Reading: see :mod:`shared.frames`, installed by :func:`connect_robust`.

Failover: a connection is given every broker address of ``AMQP_URL`` (the
nodes of a cluster). It opens on the first that answers, and each time it
drops, or an attempt to reopen it fails, the next attempt goes to the next
address in the list, round and round; aio-pika then restores its channels,
queues, bindings and consumers on whichever node answered.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aio_pika import RobustConnection
from aio_pika.abc import ConnectionParameter
from aio_pika.exceptions import AMQPError
from aiormq.connection import TLSTransportFactory, TransportFactory
from aiormq.exceptions import AMQPConnectionError
from yarl import URL

from shared.frames import install_frame_receiver

STREAM_LIMIT = 2**16
CONNECT_SLACK_S = 0.5


class CoalescingWriter(asyncio.StreamWriter):
    """A StreamWriter whose writes within one loop iteration become one socket write."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._pending: list[bytes] = []
        self._flush_scheduled = False

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self.transport.is_closing():
            super().write(data)

    # drain() is inherited: it is flow control (wait while the socket's buffer is
    # full), not a flush, so it does not break up a batch; aiormq calls it after
    # every published message.

    def close(self) -> None:
        self._flush()
        super().close()


class CoalescingTcpTransport(TransportFactory):
    """aiormq's plain-TCP transport, with a CoalescingWriter; ``amqps://`` keeps aiormq's TLS."""

    tls = TLSTransportFactory()

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader,
                                                             asyncio.StreamWriter]:
        if url.scheme == "amqps":
            return await self.tls.create(url, **kwargs)
        kwargs.pop("ssl_context_provider", None)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol, host=url.host, port=url.port, **kwargs)
        except OSError as exc:
            raise AMQPConnectionError(*exc.args) from exc
        return reader, CoalescingWriter(transport, protocol, reader, loop)


class GridRobustConnection(RobustConnection):
    """aio-pika's robust connection over a list of broker addresses, tried in turn.

    aio-pika reconnects to ``self.url`` every time; here ``self.url`` moves on
    to the next address whenever the connection closes without being asked to:
    a drop, or a failed attempt to reopen it (aio-pika reports both through
    ``_on_connection_close``, before it tries again). With one address this is
    aio-pika's own behaviour. Options in a URL's query string are read from the
    first address.
    """

    PARAMETERS = (*RobustConnection.PARAMETERS,
                  ConnectionParameter(name="transport_factory", parser=lambda value: value,
                                      is_kwarg=True))

    def __init__(self, urls: list[URL], first: int = 0, **kwargs: Any) -> None:
        self.urls = urls
        self._index = first % len(urls)
        super().__init__(urls[self._index], **kwargs)

    async def _on_connection_close(self, closing: asyncio.Future) -> None:
        if not self._close_called and len(self.urls) > 1:
            self._index = (self._index + 1) % len(self.urls)
            self.url = self.urls[self._index]
        await super()._on_connection_close(closing)


async def connect_robust(urls: list[str], connection_name: str, reconnect_interval_s: float,
                         timeout_s: float) -> GridRobustConnection:
    """Open a robust connection on the first of ``urls`` that answers within ``timeout_s``.

    Every later attempt to reopen it is bounded by ``timeout_s`` too. Built
    here rather than with ``aio_pika.connect_robust``, which copies every
    keyword argument into the URL's query string, where a factory cannot go.
    Raises the last address's error when none answers.
    """
    install_frame_receiver()
    targets = [URL(url) for url in urls]
    transport = CoalescingTcpTransport()
    error: Exception | None = None
    for first in range(len(targets)):
        connection = GridRobustConnection(
            targets, first, client_properties={"connection_name": connection_name},
            reconnect_interval=reconnect_interval_s, transport_factory=transport)
        try:
            # aio-pika bounds the attempt itself; this bounds the wait around it.
            async with asyncio.timeout(timeout_s + CONNECT_SLACK_S):
                await connection.connect(timeout_s)
            return connection
        except (TimeoutError, OSError, AMQPError) as exc:
            error = exc
            await _discard(connection)
    assert error is not None, "no broker URL"
    raise error


async def _discard(connection: GridRobustConnection) -> None:
    try:
        await asyncio.wait_for(connection.close(), timeout=1)
    except Exception:  # noqa: BLE001 - it never opened; nothing else to release
        pass
