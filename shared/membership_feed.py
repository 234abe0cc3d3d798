"""Keeps a :class:`~shared.membership.Membership` current from the owner's deltas.

Subscribes to ``membership.delta`` on ``<ns>.events`` first, then reads a
snapshot from the registry (operation ``membership``), so that no delta falls
in between. A delta that cannot be applied (another epoch, a gap) is kept and
a snapshot is read again; the deltas kept are applied on top of it. A
snapshot is also read after every reconnect, and every ``refresh_s`` the view
checks that it is current: it sends its epoch and delta number, and only when
the registry is elsewhere (a last delta lost with nothing after it to show
the gap) does the whole snapshot come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from aio_pika.abc import AbstractIncomingMessage

from shared import codec
from shared.auth import RequestGate
from shared.contracts import MEMBERSHIP, MembershipDelta, MembershipRequest, MembershipSnapshot
from shared.errors import GridError, InvalidRequest
from shared.liveness import find_events
from shared.membership import Membership
from shared.rpc import RpcClient
from shared.topology import DELTA_KEY

log = logging.getLogger(__name__)
# Deltas kept while a snapshot is on its way (older ones are dropped: another read follows).
KEPT_DELTAS = 4096
# Pause between two snapshot reads that did not bring the view back in sync.
RETRY_S = 0.2


class MembershipFeed:
    """Feeds one :class:`Membership`: deltas as they come, snapshots when needed."""

    def __init__(self, membership: Membership, registry: RpcClient, refresh_s: float) -> None:
        self.bus = bus = registry.bus
        self.names = registry.names
        self.membership = membership
        self.registry = registry
        self.refresh_s = refresh_s
        self._kept: deque[MembershipDelta] = deque(maxlen=KEPT_DELTAS)
        self._wanted = asyncio.Event()
        self._task: asyncio.Task | None = None
        # Set once a snapshot has been read at least once.
        self.loaded = asyncio.Event()
        self.resyncs = 0
        self.checks = 0  # periodic looks answered "current" (no snapshot sent)
        # Secure mode: deltas count only from the gateway's own broker users.
        self.gate = RequestGate(bus.settings)
        self.ignored = 0
        bus.on_connection_lost(self._lost)

    async def start(self) -> None:
        """Subscribe first, then read the snapshot, so no delta falls in between."""
        channel = await self.bus.channel(prefetch=64)
        exchange = await find_events(self.bus, channel, self.names)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=DELTA_KEY)
        await queue.consume(self._on_message, no_ack=True)
        self._task = asyncio.create_task(self._sync_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def on_delta(self, delta: MembershipDelta) -> None:
        """Apply a delta, or keep it and ask for a snapshot when it does not follow."""
        if not self.membership.apply(delta):
            self._kept.append(delta)
            self._wanted.set()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if not self.gate.from_gateway(message.user_id):
            self.ignored += 1
            log.warning("ignored a membership delta from outside the gateway",
                        extra={"user_id": message.user_id})
            return
        try:
            self.on_delta(codec.decode(MembershipDelta, message.body))
        except InvalidRequest as exc:
            log.warning("ignored a malformed membership delta", extra={"error": exc.message})

    def _lost(self) -> None:
        self.membership.invalidate()  # deltas sent meanwhile are lost
        self._wanted.set()

    async def resync(self, check: bool = False) -> bool:
        """Read a snapshot, then apply the deltas kept since; True when back in sync.

        With ``check`` (and a view in sync), ask only whether the view is current.
        """
        membership = self.membership
        request = (MembershipRequest(epoch=membership.epoch, seq=membership.seq)
                   if check and membership.synced else MembershipRequest())
        snapshot = await self.registry.call(
            self.names.registry_queue, MEMBERSHIP, request, MembershipSnapshot,
            self.bus.settings.rpc_timeout_s)
        if snapshot.current:
            self.checks += 1
            # Current, unless a delta that did not follow came meanwhile (then read it all).
            return membership.synced and not self._kept
        kept, self._kept = list(self._kept), deque(maxlen=KEPT_DELTAS)
        self.resyncs += 1
        if not membership.catch_up(snapshot, kept):
            return False
        self.loaded.set()
        return True

    async def _sync_forever(self) -> None:
        delay, check = RETRY_S, False
        while True:
            try:
                synced = await self.resync(check)
                delay = self.refresh_s if synced else RETRY_S
            except GridError as exc:  # registry not up yet, or not in sync itself: soon again
                log.info("cannot read the membership", extra={"error": exc.message})
                delay = min(max(delay * 2, RETRY_S), 2.0)
            self._wanted.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._wanted.wait()
                check = False  # a gap, or a lost connection: read everything
            except TimeoutError:
                # The periodic look: is the view current? Everything, after local edits.
                check = not self._kept and not self.membership.local_edits
