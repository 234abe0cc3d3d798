"""Who has been heard lately, and the events that say so.

Nodes publish heartbeats on ``<ns>.events`` (routing key ``heartbeat.<id>``);
the registry publishes membership events there (``node.joined``,
``node.left``, ``node.offline``, ``node.online``) and the liveness owner its
membership deltas (``membership.delta``). The owner alone reads heartbeats and
keeps, per kind of hearing, an :class:`Expiry` (oldest first, so that finding
the silent costs O(silent)).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

from shared import codec
from shared.auth import RequestGate
from shared.bus import Bus
from shared.contracts import Heartbeat, MembershipDelta, MembershipEvent
from shared.errors import InvalidRequest
from shared.topology import DELTA_KEY, EVENT_KEY, HEARTBEAT_KEY, Names, declare_events

log = logging.getLogger(__name__)


class Expiry:
    """When each node was last heard, oldest first, so that finding the silent costs O(silent).

    ``touch`` moves a node to the back; ``due`` pops from the front every node
    silent for longer than the TTL. Times come from one monotonic clock, so the
    order of touches is the order of times.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._heard: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, node_id: str) -> bool:
        return node_id in self._heard

    def touch(self, node_id: str, now: float) -> None:
        self._heard[node_id] = now
        self._heard.move_to_end(node_id)

    def drop(self, node_id: str) -> None:
        self._heard.pop(node_id, None)

    def heard_at(self, node_id: str) -> float | None:
        """When the node was last heard (on the clock of ``touch``), None if it is not."""
        return self._heard.get(node_id)

    def next_due(self) -> float | None:
        """When the oldest node turns silent unless heard again (None: nobody is heard)."""
        for heard in self._heard.values():
            return heard + self.ttl_s
        return None

    def due(self, now: float) -> Iterator[str]:
        """Pop and yield the nodes silent for longer than the TTL at ``now``."""
        heard = self._heard
        while heard:
            node_id, at = next(iter(heard.items()))
            if now - at <= self.ttl_s:
                return
            del heard[node_id]
            yield node_id


EventHandler = Callable[[MembershipEvent], Awaitable[None] | None]


async def find_events(bus: Bus, channel: AbstractChannel, names: Names) -> AbstractExchange:
    """The events exchange: declared by the gateway's processes, looked up by a bridge.

    In secure mode a bridge's broker user may not declare the gateway's exchanges.
    """
    settings = bus.settings
    if settings.node_auth and bus.user not in settings.gateway_user_set:
        return await channel.declare_exchange(names.events_exchange, passive=True)
    return await declare_events(channel, names)


async def subscribe_events(bus: Bus, names: Names, on_event: EventHandler) -> None:
    """Follow membership events (``node.*``: joined, left, online, offline) through a private,
    auto-deleted queue. Heartbeats are the liveness owner's alone (``<ns>.liveness``)."""
    gate = RequestGate(bus.settings)  # secure mode: events only from the gateway's users
    channel = await bus.channel(prefetch=256)
    exchange = await find_events(bus, channel, names)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, routing_key=EVENT_KEY.format(kind="*"))

    async def on_message(message: AbstractIncomingMessage) -> None:
        if not gate.from_gateway(message.user_id):
            log.warning("ignored a membership event from outside the gateway",
                        extra={"user_id": message.user_id})
            return
        try:
            result = on_event(codec.decode(MembershipEvent, message.body))
            if result is not None:
                await result
        except InvalidRequest as exc:
            log.warning("ignored a malformed event", extra={"error": exc.message})

    await queue.consume(on_message, no_ack=True)


class EventPublisher:
    """Publishes membership events and heartbeats on the events exchange."""

    def __init__(self, bus: Bus, names: Names, passive: bool = False) -> None:
        self.bus = bus
        self.names = names
        # Nodes only look the exchange up: they need no right to create or delete it.
        self.passive = passive
        self._exchange: AbstractExchange | None = None

    async def start(self) -> None:
        assert self.bus.fast is not None, "connect the bus first"
        # Declared here so a publish can never hit a missing exchange (which
        # would close the channel).
        if self.passive:
            self._exchange = await self.bus.fast.declare_exchange(
                self.names.events_exchange, passive=True)
        else:
            self._exchange = await declare_events(self.bus.fast, self.names)

    async def publish(self, event: MembershipEvent | Heartbeat | MembershipDelta) -> None:
        if self._exchange is None or not self.bus.ready:
            return
        if isinstance(event, Heartbeat):
            key = HEARTBEAT_KEY.format(node_id=event.node_id)
        elif isinstance(event, MembershipDelta):
            key = DELTA_KEY
        else:
            key = EVENT_KEY.format(kind=event.kind)
        message = aio_pika.Message(
            codec.dumps(event),
            content_type=codec.CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            user_id=self.bus.user,
        )
        await self._exchange.publish(message, routing_key=key)
