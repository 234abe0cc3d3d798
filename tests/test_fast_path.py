"""The bus's fast paths: what of aio-pika, aiormq and pamqp they rely on, and the stock path.

The shape checks fail, naming the fast path and the file to mend, as soon as a
release of aiormq, pamqp or aio-pika moves what shared/frames.py or
shared/transport.py build on; GRID_BUS_FAST_PATH=false runs without them
meanwhile (docs/fast-paths.md).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect

import aio_pika
import aiormq.connection
import pamqp.frame
import pytest
from aio_pika.abc import ConnectionParameter, UnderlayConnection
from pamqp.heartbeat import Heartbeat
from yarl import URL

from shared import frames
from shared.bus import Bus
from shared.frames import WRITTEN_FOR, BufferedFrameReceiver, Delivery
from shared.settings import BaseGridSettings
from shared.transport import Failover, FastRobustConnection, FastTransport

READER = "the bus reader fast path (shared/frames.py, off with GRID_BUS_FAST_PATH=false)"
ADOPTING = "the bus reader fast path (shared/transport.py FastTransport, which marks the reader)"
FAILOVER = "broker failover (shared/transport.py Failover, on every bus path)"
STOCK_RECEIVER = frames.FrameReceiver  # aiormq's own, as imported before any install


def _source(function: object) -> str:
    return inspect.getsource(function)


@pytest.mark.parametrize("package", sorted(WRITTEN_FOR))
def test_versions_are_those_the_fast_paths_were_written_for(package: str) -> None:
    installed = importlib.metadata.version(package)
    assert installed == WRITTEN_FOR[package], (
        f"{package} {installed} is installed, but the bus fast paths (shared/frames.py, "
        f"shared/transport.py) were written and measured against {WRITTEN_FOR[package]}: "
        "check the shape tests below and bench/README.md's fast-path figures on it, then "
        "update WRITTEN_FOR; GRID_BUS_FAST_PATH=false runs without the fast paths meanwhile")


def test_aiormq_builds_its_receiver_by_its_module_level_name() -> None:
    # install_frame_receiver swaps that name; if aiormq stops looking it up, nothing is used.
    assert "FrameReceiver(reader)" in _source(aiormq.connection.Connection.connect), (
        f"{READER}: aiormq's Connection.connect no longer builds FrameReceiver(reader)")
    parameters = list(inspect.signature(STOCK_RECEIVER.__init__).parameters)
    assert parameters == ["self", "reader"], (
        f"{READER}: aiormq's FrameReceiver.__init__ takes {parameters}, not (self, reader)")


async def test_aiormq_receiver_has_the_attributes_the_buffered_one_keeps() -> None:
    receiver = STOCK_RECEIVER(asyncio.StreamReader())
    for name in ("reader", "started"):
        assert hasattr(receiver, name), f"{READER}: aiormq's FrameReceiver has no .{name}"
    assert inspect.iscoroutinefunction(STOCK_RECEIVER.get_frame), (
        f"{READER}: aiormq's FrameReceiver.get_frame is no longer a coroutine")
    assert "self.get_frame()" in _source(STOCK_RECEIVER.__anext__), (
        f"{READER}: aiormq's FrameReceiver.__anext__ no longer awaits get_frame()")
    reader_loop = _source(aiormq.connection.Connection._Connection__reader)
    assert "async for weight, channel, frame in frame_receiver" in reader_loop, (
        f"{READER}: aiormq's reader loop no longer takes (weight, channel, frame) tuples")


def test_pamqp_unmarshals_to_the_tuples_the_reader_hands_on() -> None:
    data = pamqp.frame.marshal(Heartbeat(), 0)
    size, channel, frame = pamqp.frame.unmarshal(data)
    assert (size, channel, type(frame)) == (len(data), 0, Heartbeat), (
        f"{READER}: pamqp.frame.unmarshal no longer returns (size, channel, frame)")


def test_aiormq_takes_a_transport_factory() -> None:
    create = inspect.signature(aiormq.connection.TransportFactory.create)
    assert list(create.parameters) == ["self", "url", "kwargs"], (
        f"{ADOPTING}: aiormq's TransportFactory.create takes {list(create.parameters)}, "
        "not (self, url, **kwargs)")
    assert "transport_factory" in inspect.signature(aiormq.connection.Connection).parameters, (
        f"{ADOPTING}: aiormq's Connection takes no transport_factory")
    assert "self._transport_factory.create(" in _source(aiormq.connection.Connection.connect), (
        f"{ADOPTING}: aiormq's Connection.connect no longer opens through its transport factory")
    assert all(isinstance(p, ConnectionParameter) for p in aio_pika.RobustConnection.PARAMETERS), (
        f"{ADOPTING}: aio-pika's RobustConnection.PARAMETERS changed shape")


def test_aio_pika_reports_drops_and_failed_attempts_to_close_callbacks() -> None:
    assert "close_callbacks(" in _source(aio_pika.Connection._on_connection_close), (
        f"{FAILOVER}: aio-pika no longer calls close_callbacks when the connection closes")
    assert "await close_callback(closing)" in _source(UnderlayConnection.connect), (
        f"{FAILOVER}: aio-pika no longer reports a failed connection attempt")
    assert "self.url" in _source(aio_pika.Connection.connect), (
        f"{FAILOVER}: aio-pika no longer reconnects to connection.url")
    assert hasattr(aio_pika.RobustConnection, "close_called"), (
        f"{FAILOVER}: aio-pika's connections have no close_called")


@pytest.mark.parametrize(("value", "paths"), [
    ("true", {"reader"}), ("false", set()), ("reader", {"reader"}), ("off", set()),
    ("", set())])
def test_the_setting(value: str, paths: set[str]) -> None:
    assert BaseGridSettings(bus_fast_path=value).fast_paths == paths


def test_the_setting_rejects_an_unknown_path() -> None:
    with pytest.raises(ValueError, match="true, false, or a comma list of reader"):
        BaseGridSettings(bus_fast_path="reader,writer")


async def test_only_adopted_readers_get_the_buffered_receiver() -> None:
    frames.install_frame_receiver()
    adopted, plain = asyncio.StreamReader(), asyncio.StreamReader()
    frames.adopt(adopted)
    assert type(aiormq.connection.FrameReceiver(adopted)) is BufferedFrameReceiver
    assert type(aiormq.connection.FrameReceiver(plain)) is STOCK_RECEIVER


async def test_the_transport_adopts_its_reader(amqp_url: str) -> None:
    reader, writer = await FastTransport().create(URL(amqp_url))
    try:
        assert reader in frames._adopted
        assert type(writer) is asyncio.StreamWriter  # aiormq's own
    finally:
        writer.close()


@pytest.mark.parametrize(("value", "connection_class"), [
    ("true", FastRobustConnection), ("false", aio_pika.RobustConnection)])
async def test_direct_replies_on_each_path(settings, value: str, connection_class: type) -> None:
    bus = Bus(settings(BaseGridSettings, bus_fast_path=value), "test-fast-path")
    await bus.connect()
    try:
        assert type(bus.connection) is connection_class
        got: asyncio.Queue[Delivery] = asyncio.Queue()
        queue = await bus.fast.declare_queue("", exclusive=True, auto_delete=True)
        tag = await bus.consume_direct(queue.name, got.put_nowait)
        await bus.fast.default_exchange.publish(aio_pika.Message(
            b'{"a": 1}', correlation_id="c1", reply_to="back", user_id="guest"), queue.name)
        delivery = await asyncio.wait_for(got.get(), 5)
        assert delivery == Delivery(b'{"a": 1}', "c1", "back", "guest")
        await bus.cancel_raw(tag)
    finally:
        await bus.close()


class Closable:
    """What Failover reads and writes of a connection."""

    def __init__(self) -> None:
        self.close_called = False
        self.url: URL | None = None


def test_failover_moves_on_once_per_close_and_never_after_close() -> None:
    urls = [URL("amqp://a/"), URL("amqp://b/"), URL("amqp://c/")]
    failover, connection = Failover(urls, 0), Closable()
    error = ConnectionError("dropped")
    failover(connection, error)
    assert connection.url == urls[1]
    failover(connection, error)  # a failed restore reports its error twice
    assert connection.url == urls[1]
    failover(connection, ConnectionError("refused"))
    assert connection.url == urls[2]
    failover(connection, None)
    assert connection.url == urls[0]  # round and round
    connection.close_called = True
    failover(connection, ConnectionError("closing"))
    assert connection.url == urls[0]
