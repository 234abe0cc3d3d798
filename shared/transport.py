"""The connection under every bus: aio-pika's robust connection, failover, and two fast paths.

Both fast paths are on by default and each can be turned off
(``GRID_BUS_FAST_PATH``, docs/fast-paths.md); with neither, the connection is
aio-pika's own over aiormq's own transport and frame reader.

Writing (``writer``): aiormq writes each message to the socket on its own, a
``send`` system call per message. Profiles of a node answering broadcasts and
of the search worker put that call at a third of their CPU: a process that
answers ten queries delivered in one read made ten calls. Here the writes of
one event-loop iteration are joined and handed to the socket at the end of it,
in one call, like Nagle's algorithm without its delay: a lone message still
leaves in the same tick.

Reading (``reader``): see :mod:`shared.frames`.

Failover, on every path: a connection is given every broker address of
``AMQP_URL`` (the nodes of a cluster). It opens on the first that answers, and
each time it drops, or an attempt to reopen it fails, the next attempt goes to
the next address in the list, round and round; aio-pika then restores its
channels, queues, bindings and consumers on whichever node answered. It uses
aio-pika's public ``close_callbacks`` and ``url`` only (:class:`Failover`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aio_pika import RobustConnection
from aio_pika.abc import ConnectionParameter
from aio_pika.exceptions import AMQPError
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from aiormq.exceptions import AMQPConnectionError
from yarl import URL

from shared.frames import adopt, install_frame_receiver

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


class FastTransport(TransportFactory):
    """aiormq's TCP transport with the chosen fast paths: a CoalescingWriter, the frame reader.

    ``amqps://`` keeps aiormq's TLS transport (its reader may still be adopted).
    """

    tls = TLSTransportFactory()

    def __init__(self, fast_paths: frozenset[str]) -> None:
        self.reader = "reader" in fast_paths
        self.writer = "writer" in fast_paths

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader,
                                                             asyncio.StreamWriter]:
        if url.scheme == "amqps" or not self.writer:
            factory = self.tls if url.scheme == "amqps" else TCPTransportFactory()
            reader, writer = await factory.create(url, **kwargs)
        else:
            reader, writer = await self._coalescing(url, **kwargs)
        if self.reader:
            adopt(reader)
        return reader, writer

    @staticmethod
    async def _coalescing(url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader,
                                                            asyncio.StreamWriter]:
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


class FastRobustConnection(RobustConnection):
    """aio-pika's robust connection, taking a transport factory (aiormq's public option).

    ``aio_pika.connect_robust`` copies every keyword argument into the URL's
    query string, where a factory cannot go; this class lets it through.
    """

    PARAMETERS = (*RobustConnection.PARAMETERS,
                  ConnectionParameter(name="transport_factory", parser=lambda value: value,
                                      is_kwarg=True))


class Failover:
    """Moves a robust connection on to the next broker address each time it closes unasked.

    aio-pika reconnects to ``connection.url`` every time, and reports a drop,
    and a failed attempt to reopen, to ``close_callbacks`` before it tries
    again: this callback changes ``url`` there. With one address it does nothing.
    """

    def __init__(self, urls: list[URL], first: int) -> None:
        self.urls = urls
        self.index = first % len(urls)
        self._last: BaseException | None = None

    def __call__(self, connection: RobustConnection, exc: BaseException | None = None) -> None:
        # A failed restore reports the same error twice (callbacks, then the close).
        if connection.close_called or len(self.urls) < 2 or (exc is not None
                                                              and exc is self._last):
            return
        self._last = exc
        self.index = (self.index + 1) % len(self.urls)
        connection.url = self.urls[self.index]


async def connect_robust(urls: list[str], connection_name: str, reconnect_interval_s: float,
                         timeout_s: float, fast_paths: frozenset[str] = frozenset()
                         ) -> RobustConnection:
    """Open a robust connection on the first of ``urls`` that answers within ``timeout_s``.

    Every later attempt to reopen it is bounded by ``timeout_s`` too. With no
    ``fast_paths`` it is aio-pika's own connection over aiormq's own transport
    and frame reader. Raises the last address's error when none answers.
    """
    targets = [URL(url) for url in urls]
    cls, options = RobustConnection, {}
    if fast_paths:
        if "reader" in fast_paths:
            install_frame_receiver()
        cls, options = FastRobustConnection, {"transport_factory": FastTransport(fast_paths)}
    error: Exception | None = None
    for first in range(len(targets)):
        connection = cls(targets[first], client_properties={"connection_name": connection_name},
                         reconnect_interval=reconnect_interval_s, **options)
        connection.close_callbacks.add(Failover(targets, first))
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


async def _discard(connection: RobustConnection) -> None:
    try:
        await asyncio.wait_for(connection.close(), timeout=1)
    except Exception:  # noqa: BLE001 - it never opened; nothing else to release
        pass
