"""The frame reader: whole reads split into frames, direct deliveries parsed as pamqp would."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pamqp.frame
import pytest
from aiormq.exceptions import AMQPConnectionError
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands, header
from pamqp.body import ContentBody
from pamqp.decode import field_table
from pamqp.heartbeat import Heartbeat

from shared.frames import BufferedFrameReceiver, Delivery, deliver_directly, parse_properties

shortstr = st.text(max_size=40).filter(lambda text: len(text.encode()) < 256)
optional = st.none() | shortstr


def delivery_frames(tag: str, body: bytes, channel: int = 1, frame_max: int = 4096,
                    **properties: object) -> bytes:
    frames = [pamqp.frame.marshal(commands.Basic.Deliver(consumer_tag=tag, delivery_tag=7,
                                                         exchange="", routing_key="q"), channel),
              pamqp.frame.marshal(header.ContentHeader(
                  body_size=len(body), properties=commands.Basic.Properties(**properties)),
                  channel)]
    for start in range(0, len(body), frame_max):
        frames.append(pamqp.frame.marshal(ContentBody(body[start:start + frame_max]), channel))
    return b"".join(frames)


async def receive(data: bytes, piece: int) -> list:
    """Feed ``data`` in pieces of ``piece`` bytes; the frames that reach aiormq."""
    reader = asyncio.StreamReader()
    for start in range(0, len(data), piece):
        reader.feed_data(data[start:start + piece])
    reader.feed_eof()
    receiver = BufferedFrameReceiver(reader)
    return [frame async for _, _, frame in receiver]


@given(content_type=optional, correlation_id=optional, reply_to=optional, user_id=optional,
       message_type=optional, expiration=st.none() | st.integers(1, 10**6).map(str),
       message_id=optional, with_headers=st.booleans(), with_timestamp=st.booleans(),
       body_size=st.integers(0, 10**6))
def test_properties_parse_as_pamqp_does(content_type, correlation_id, reply_to, user_id,
                                        message_type, expiration, message_id, with_headers,
                                        with_timestamp, body_size) -> None:
    properties = commands.Basic.Properties(
        content_type=content_type, correlation_id=correlation_id, reply_to=reply_to,
        user_id=user_id, message_type=message_type, expiration=expiration,
        message_id=message_id, delivery_mode=1, priority=3,
        headers={"x-deadline-ms": 1234567890123, "x-request-id": "r"} if with_headers else None,
        timestamp=datetime(2026, 1, 1, tzinfo=UTC) if with_timestamp else None)
    frame = pamqp.frame.marshal(header.ContentHeader(body_size=body_size,
                                                     properties=properties), 1)
    decoded = pamqp.frame.unmarshal(frame)[2]
    expected = decoded.properties
    parsed = parse_properties(frame[7:-1])
    assert parsed[:1] + parsed[2:] == (decoded.body_size, expected.correlation_id,
                                       expected.reply_to, expected.user_id)
    assert (field_table(parsed.headers)[1] if parsed.headers else None) == expected.headers
    if correlation_id:  # pamqp leaves empty strings out
        assert expected.correlation_id == correlation_id


@pytest.mark.parametrize("piece", [1, 7, 100, 1 << 20])
async def test_direct_deliveries_skip_aiormq_and_others_reach_it(piece: int) -> None:
    got: list[Delivery] = []
    deliver_directly("direct.t", got.append)
    try:
        big = bytes(range(256)) * 40  # three body frames
        data = b"".join([
            delivery_frames("direct.t", b'{"a": 1}', correlation_id="c1", user_id="alice",
                            headers={"x": "y"}, content_type="application/json"),
            pamqp.frame.marshal(Heartbeat(), 0),
            delivery_frames("other", b"for aiormq", correlation_id="c2"),
            delivery_frames("direct.t", big, channel=2, reply_to="back"),
            delivery_frames("direct.t", b"", correlation_id="empty"),
        ])
        to_aiormq = await receive(data, piece)
    finally:
        deliver_directly("direct.t", None)
    assert got == [Delivery(b'{"a": 1}', "c1", None, "alice"),
                   Delivery(big, None, "back", None),
                   Delivery(b"", "empty", None, None)]
    kinds = [type(frame).__name__ for frame in to_aiormq]
    assert kinds == ["Heartbeat", "Deliver", "ContentHeader", "ContentBody"]
    assert to_aiormq[3].value == b"for aiormq"


async def test_a_failing_handler_does_not_break_the_reader() -> None:
    def fail(_: Delivery) -> None:
        raise RuntimeError("consumer bug")

    deliver_directly("direct.f", fail)
    try:
        data = delivery_frames("direct.f", b"x") + pamqp.frame.marshal(Heartbeat(), 0)
        to_aiormq = await receive(data, 1 << 20)
    finally:
        deliver_directly("direct.f", None)
    assert [type(frame).__name__ for frame in to_aiormq] == ["Heartbeat"]


async def test_a_truncated_frame_is_a_connection_error() -> None:
    data = delivery_frames("other", b"x")[:-3]
    with pytest.raises(AMQPConnectionError):
        await receive(data, 1 << 20)
