"""The two shapes of a ``/search-encrypted-model`` answer (``GRID_ENCRYPTED_SEARCH_FORMAT``).

``api-text`` (the default) is the shape the API text shows: the first hosting node
by id as ``{id: address}`` beside a ``"nodes"`` key with its workers and crypto
provider. ``by-node`` is the shape the original gateway served and its Python
clients read: one ``{"address", "nodes"}`` entry per hosting node. Both are ``{}``
when no node hosts the model.
"""

from __future__ import annotations

from typing import Any

from shared.contracts import EncryptedHost, EncryptedModelHosts, SearchResult


def _nodes(hosts: EncryptedModelHosts) -> dict[str, Any]:
    return {"workers": [list(pair) for pair in hosts.workers],
            "crypto_provider": list(hosts.crypto_provider)}


def api_text(result: SearchResult) -> dict[str, Any]:
    """The first hosting node by id, and its nodes."""
    if result.host is None or result.encrypted is None:
        return {}
    host_id, host_address = result.host
    return {host_id: host_address, "nodes": _nodes(result.encrypted)}


def hosting_nodes(result: SearchResult) -> list[EncryptedHost]:
    """Every hosting node; from a search worker older than ``hosts``, the first one."""
    if result.hosts or result.host is None or result.encrypted is None:
        return result.hosts
    host_id, host_address = result.host
    return [EncryptedHost(node_id=host_id, node_address=host_address, encrypted=result.encrypted)]


def by_node(result: SearchResult) -> dict[str, Any]:
    """One entry per hosting node, in node id order."""
    return {host.node_id: {"address": host.node_address, "nodes": _nodes(host.encrypted)}
            for host in hosting_nodes(result)}


SHAPES = {"api-text": api_text, "by-node": by_node}
