"""Synthetic node inventories, and the answers the gateway must give for them.

Node ``i`` belongs to class ``c = i % CLASSES``. Its first tensor carries
``#all``, ``#t<c % 8>``, ``#g<c // 8>`` and ``#p0`` .. ``#p11``; its second
``#labels`` and ``#t<c % 8>``. It hosts model ``m-<c>``; one node in ten also hosts the
encrypted model ``enc-<i % 3>``. So query number ``k`` of the load generator
(``["#t<k % 8>", "#g<k // 8>"]`` or ``m-<k>``) matches exactly the nodes with
``i % CLASSES == k``: small answers (empty when no node is of that class),
known in advance. Distinct query ``k`` adds to query ``k``'s two tags the
``#p`` tags of the bits of ``k // CLASSES``: every node carries them all, so
the answer is the same, but no two of the first 64 x 4096 queries are alike
(nothing to cache).
"""

from __future__ import annotations

from functools import cache

from services.node.inventory import Inventory, Tensor
from shared.contracts import EncryptedModelHosts

CLASSES = 64
# Tags every node's first tensor carries, which make distinct queries.
SHARED_TAGS = [f"#p{bit}" for bit in range(12)]
# Added and taken away again by inventory churn; no benchmark query asks for it.
CHURN_TENSOR = Tensor(id="churn", tags=["#churn"])


def node_id(index: int) -> str:
    """Zero-padded, so that sorting ids sorts indices."""
    return f"node-{index:05d}"


def node_address(index: int) -> str:
    return f"http://{node_id(index)}.bench:5000"


def tensor_tags(index: int) -> list[list[str]]:
    cls = index % CLASSES
    return [["#all", f"#t{cls % 8}", f"#g{cls // 8}", *SHARED_TAGS], ["#labels", f"#t{cls % 8}"]]


def encrypted_model(index: int) -> str | None:
    return f"enc-{index % 3}" if index % 10 == 0 else None


def inventory(index: int, nodes: int) -> Inventory:
    """The inventory of node ``index`` in a fleet of ``nodes``."""
    tensors = [Tensor(id=f"x{index}-{n}", tags=tags)
               for n, tags in enumerate(tensor_tags(index))]
    encrypted = {}
    name = encrypted_model(index)
    if name is not None:
        peers = [(node_id((index + k) % nodes), node_address((index + k) % nodes))
                 for k in (1, 2, 3)]
        encrypted[name] = EncryptedModelHosts(workers=peers[:2], crypto_provider=peers[2])
    return Inventory(models=[f"m-{index % CLASSES}"], encrypted_models=encrypted,
                     tensors=tensors)


def churned(inventory: Inventory) -> Inventory:
    """``inventory`` with the churn tensor added, or taken away again."""
    tensors = inventory.tensors
    changed = ([t for t in tensors if t != CHURN_TENSOR] if CHURN_TENSOR in tensors
               else [*tensors, CHURN_TENSOR])
    return inventory.model_copy(update={"tensors": changed})


def search_query(k: int) -> list[str]:
    cls = k % CLASSES
    return [f"#t{cls % 8}", f"#g{cls // 8}"]


def distinct_query(k: int) -> list[str]:
    """Query ``k``'s tags plus shared ones: the same answer, a query never asked before."""
    bits = k // CLASSES
    return search_query(k) + [tag for n, tag in enumerate(SHARED_TAGS) if bits >> n & 1]


def model_query(k: int) -> str:
    return f"m-{k % CLASSES}"


def encrypted_query(k: int) -> str:
    return f"enc-{k % 3}"


@cache
def pairs_of_class(k: int, nodes: int) -> list[list[str]]:
    """Expected answer of search query ``k`` and of model query ``k``."""
    return [[node_id(i), node_address(i)] for i in range(k % CLASSES, nodes, CLASSES)]


@cache
def all_tags(nodes: int) -> list[str]:
    return sorted({tag for i in range(nodes) for tags in tensor_tags(i) for tag in tags})


@cache
def all_models(nodes: int) -> list[str]:
    return sorted({f"m-{i % CLASSES}" for i in range(nodes)})


@cache
def fleet_ids(nodes: int) -> frozenset[str]:
    return frozenset(node_id(i) for i in range(nodes))


@cache
def first_encrypted_host(k: int, nodes: int) -> str | None:
    """Id of the node that /search-encrypted-model must name for query ``k``."""
    wanted = encrypted_query(k)
    hosts = [i for i in range(nodes) if encrypted_model(i) == wanted]
    return node_id(hosts[0]) if hosts else None
