"""Answers of past searches, served again while nothing a search would see has changed.

One policy, used twice: by the search worker, and by each API process in front
of it (which then answers a repeated search without a round trip to the worker).

- A search takes one :class:`~shared.membership.MembershipView` before it asks
  anyone, and uses it throughout: to look up, to ask, and to keep.
- Its answer may be kept only when it names the state it holds for
  (``SearchResult.state``): the search worker names the digest of its view when
  every node it asked answered, each from the inventory version it announced
  (:meth:`services.search.gather.Gather.settled`). Nodes that announce no
  version make the view uncacheable: they are asked every time.
- It is kept only when that state is the digest of the view taken before
  asking, and the view has not moved on meanwhile: an API process that saw a
  change the worker had not seen yet (or the other way round) disagrees on the
  digest, and keeps nothing.
- It is served only at the generation it was kept at: a version bump, a node
  going offline or coming back, a join or a delete moves the generation on, and
  every answer kept for the old one is dropped at the next look-up.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from shared.contracts import SearchResult
from shared.membership import Membership, MembershipView


@dataclass(frozen=True)
class Lookup:
    """A look-up's outcome."""

    answer: SearchResult | None
    outcome: str  # "hit", "miss", or "uncacheable" (the view may not be cached now)


class AnswerCache:
    """Least-recently-used answers by query key, all of one membership generation."""

    def __init__(self, membership: Membership, max_entries: int) -> None:
        self.membership = membership
        self.max_entries = max_entries
        self.generation = -1
        self._answers: OrderedDict[tuple, SearchResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def lookup(self, key: tuple, view: MembershipView) -> Lookup:
        """The answer kept for ``key`` at ``view`` (the search's own), marked cached, if any."""
        if not view.cacheable:
            return Lookup(None, "uncacheable")
        if view.generation != self.generation:
            self._renew(view.generation)
            return Lookup(None, "miss")
        answer = self._answers.get(key)
        if answer is None:
            return Lookup(None, "miss")
        self._answers.move_to_end(key)
        return Lookup(answer, "hit")

    def keep(self, key: tuple, taken: MembershipView, result: SearchResult) -> None:
        """Keep ``result`` if it holds for ``taken`` and nothing changed since it was taken."""
        # The cache's generation only ever comes from the membership's: never past it.
        if (result.state is None or result.state != taken.digest
                or self.membership.generation != taken.generation):
            return
        if taken.generation != self.generation:
            self._renew(taken.generation)
        # Served again, it asks nobody.
        self._answers[key] = result.model_copy(update={"cached": True, "queried": 0})
        self._answers.move_to_end(key)
        if len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)

    def _renew(self, generation: int) -> None:
        self._answers.clear()
        self.generation = generation
