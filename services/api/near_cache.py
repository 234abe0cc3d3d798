"""The API's own copy of cacheable search answers: a repeated search without a round trip.

The search worker marks an answer that may be cached with the state of the
network it holds for (:meth:`shared.membership.Membership.state`). The API
follows the same heartbeats and membership events with a view of its own and
keeps such an answer while that view stays at the state the answer names: an
API process that saw a change the worker had not yet seen (or the other way
round) disagrees on the state, and keeps nothing. Any change moves the view's
generation on and drops every answer kept.
"""

from __future__ import annotations

from shared.answers import AnswerCache
from shared.contracts import SearchResult
from shared.membership import Membership, MembershipFeed
from shared.rpc import RpcClient
from shared.settings import ApiSettings


class NearCache:
    """Search answers kept in the API process, valid while its view of the network agrees."""

    def __init__(self, settings: ApiSettings, rpc: RpcClient) -> None:
        self.membership = Membership(settings.node_ttl_s)
        self.feed = MembershipFeed(self.membership, rpc, settings.membership_refresh_s)
        self.answers = AnswerCache(settings.search_cache_entries)

    async def start(self) -> None:
        await self.feed.start()

    async def stop(self) -> None:
        await self.feed.stop()

    def get(self, key: tuple) -> SearchResult | None:
        if not self.membership.all_versioned():
            return None
        return self.answers.get(key, self.membership.generation)

    def view(self) -> tuple[int, str | None]:
        """(generation, state) now: taken before asking the worker, handed to ``keep``."""
        state = self.membership.state()  # first: it notices nodes that fell silent
        return self.membership.generation, state

    def keep(self, key: tuple, before: tuple[int, str | None], result: SearchResult) -> None:
        generation, state = before
        if (result.state is not None and result.state == state
                and self.view() == (generation, state)):
            self.answers.put(key, generation, result)

    def forget(self) -> None:
        """Drop every answer kept (the feed does so when the connection drops)."""
        self.membership.invalidate()
