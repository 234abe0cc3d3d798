"""The TCP transport under every bus connection: frames written in one loop tick go out together.

Writing: aiormq writes each message to the socket on its own, a ``send``
system call per message. Profiles of a node answering broadcasts and of the
search worker put that call at a third of their CPU: a process that answers
ten queries delivered in one read made ten calls. Here the writes of one
event-loop iteration are joined and handed to the socket at the end of it, in
one call, like Nagle's algorithm without its delay: a lone message still
leaves in the same tick.

Reading: see :mod:`shared.frames`, installed by :func:`connect_robust`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aio_pika import RobustConnection
from aio_pika.abc import ConnectionParameter
from aiormq.connection import TransportFactory
from aiormq.exceptions import AMQPConnectionError
from yarl import URL

from shared.frames import install_frame_receiver

STREAM_LIMIT = 2**16


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
    """aiormq's plain-TCP transport, with a CoalescingWriter (``amqp://`` URLs only)."""

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader,
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


class GridRobustConnection(RobustConnection):
    """aio-pika's robust connection, passing ``transport_factory`` on to aiormq."""

    PARAMETERS = (*RobustConnection.PARAMETERS,
                  ConnectionParameter(name="transport_factory", parser=lambda value: value,
                                      is_kwarg=True))


async def connect_robust(url: str, connection_name: str,
                         reconnect_interval_s: float) -> GridRobustConnection:
    """Open a robust connection; over plain TCP (amqp://) with the coalescing transport.

    Built here rather than with ``aio_pika.connect_robust``, which copies every
    keyword argument into the URL's query string, where a factory cannot go.
    """
    install_frame_receiver()
    target = URL(url)
    options: dict[str, Any] = {}
    if target.scheme == "amqp":  # TLS keeps aiormq's own transport
        options["transport_factory"] = CoalescingTcpTransport()
    connection = GridRobustConnection(
        target, client_properties={"connection_name": connection_name},
        reconnect_interval=reconnect_interval_s, **options)
    await connection.connect()
    return connection
