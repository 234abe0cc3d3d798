"""Answers of past searches, served again while nothing a search would see has changed.

Used twice: by the search worker, and by each API process in front of it
(which then answers a repeated search without a round trip to the worker).

An answer is kept only when every node it asked answered, each reply naming
the inventory version its node announced, and it is served only at the membership generation it was
computed at (:class:`shared.membership.Membership`): a version bump,
a node going offline or coming back, a join or a delete moves the generation
on, and every answer kept for the old one is dropped at the next look-up.
Nodes that send no version are asked every time.
"""

from __future__ import annotations

from collections import OrderedDict

from shared.contracts import SearchResult


class AnswerCache:
    """Least-recently-used answers by query key, all of one membership generation."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.generation = -1
        self._answers: OrderedDict[tuple, SearchResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: tuple, generation: int) -> SearchResult | None:
        """The answer kept for ``key`` at ``generation``, marked cached; None if there is none."""
        if generation != self.generation:
            self._renew(generation)
            return None
        answer = self._answers.get(key)
        if answer is not None:
            self._answers.move_to_end(key)
        return answer

    def put(self, key: tuple, generation: int, answer: SearchResult) -> None:
        """Keep ``answer``, computed entirely at ``generation`` (callers check that)."""
        if generation != self.generation:
            if generation < self.generation:
                return  # computed before a change this cache has already seen
            self._renew(generation)
        # Served again, it asks nobody.
        self._answers[key] = answer.model_copy(update={"cached": True, "queried": 0})
        self._answers.move_to_end(key)
        if len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)

    def _renew(self, generation: int) -> None:
        self._answers.clear()
        self.generation = generation
