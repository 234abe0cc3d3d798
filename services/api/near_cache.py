"""The API's own copy of cacheable search answers: a repeated search without a round trip.

The search worker marks an answer that may be cached with the digest of the
network it holds for (:attr:`shared.membership.MembershipView.digest`). The
API follows the same membership deltas with a view of its own and keeps such
an answer while that view stays at the digest the answer names: an API
process that saw a change the worker had not yet seen (or the other way
round) disagrees on the digest, and keeps nothing. Any change moves the
view's generation on and drops every answer kept.
"""

from __future__ import annotations

from shared.answers import AnswerCache
from shared.contracts import SearchResult
from shared.membership import Membership, MembershipView
from shared.settings import ApiSettings


class NearCache:
    """Search answers kept in the API process, valid while its view of the network agrees."""

    def __init__(self, settings: ApiSettings, membership: Membership) -> None:
        self.membership = membership
        self.answers = AnswerCache(settings.search_cache_entries)

    def get(self, key: tuple) -> SearchResult | None:
        view = self.membership.view()
        if not view.cacheable:
            return None
        return self.answers.get(key, view.generation)

    def view(self) -> MembershipView:
        """The view now: taken before asking the worker, handed to ``keep``."""
        return self.membership.view()

    def keep(self, key: tuple, before: MembershipView, result: SearchResult) -> None:
        if (result.state is not None and result.state == before.digest
                and self.membership.view() is before):
            self.answers.put(key, before.generation, result)
