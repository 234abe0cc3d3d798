"""The connection under every bus: aio-pika's robust connection, failover, and the reader fast path.

The reader fast path (:mod:`shared.frames`) is on by default and off with
``GRID_BUS_FAST_PATH=false`` (docs/fast-paths.md); without it the connection is
aio-pika's own over aiormq's own transport and frame reader. With it, the
connection is given aiormq's own transport through aiormq's public
``transport_factory`` option, only to mark its reader.

A writer that joined the writes of one event-loop tick into one ``send`` was
measured against aiormq's own writer and did not pay at N = 100 or N = 1000
(bench/README.md, "The bus's fast paths against stock"): it is gone.

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
from yarl import URL

from shared.frames import adopt, install_frame_receiver

CONNECT_SLACK_S = 0.5


class FastTransport(TransportFactory):
    """aiormq's own TCP or TLS transport, whose reader the frame reader fast path adopts.

    Only the reader is marked (:func:`shared.frames.adopt`): aiormq then builds
    :class:`shared.frames.BufferedFrameReceiver` for this connection alone.
    """

    tcp = TCPTransportFactory()
    tls = TLSTransportFactory()

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader,
                                                             asyncio.StreamWriter]:
        factory = self.tls if url.scheme == "amqps" else self.tcp
        reader, writer = await factory.create(url, **kwargs)
        adopt(reader)
        return reader, writer


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
    Options in a URL's query string are read from the first address.
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
    if "reader" in fast_paths:
        install_frame_receiver()
        cls, options = FastRobustConnection, {"transport_factory": FastTransport()}
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
