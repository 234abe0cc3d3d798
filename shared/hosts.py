"""Host choices (``/choose-*``): distinct live nodes at random, made alike wherever they are
made (the API from its own view, a registry worker while the API's view is not in sync)."""

from __future__ import annotations

import random
from collections.abc import Sequence

# Per replica: 2 SMPC workers, 1 crypto provider, 1 host.
NODES_PER_ENCRYPTED_REPLICA = 4

Node = tuple[str, str]  # (id, address)


def choose_hosts(live: Sequence[Node], n_replica: int, encrypted: bool) -> list[Node]:
    """N_REPLICA distinct live nodes at random (fewer if there are fewer); for an encrypted
    model 4 x N_REPLICA of them, or none when there are not that many."""
    if encrypted:
        wanted = NODES_PER_ENCRYPTED_REPLICA * n_replica
        return random.sample(live, wanted) if len(live) >= wanted else []
    return random.sample(live, min(n_replica, len(live)))
