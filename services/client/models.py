"""What the client answers with: small frozen dataclasses, one per kind of answer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeAddress:
    """A grid node: its id and the address it registered with."""

    id: str
    address: str


@dataclass(frozen=True)
class Searched:
    """How many live nodes a search went to, and how many answered before its deadline.

    None when the server does not send the counts (the original gateway did not).
    """

    asked: int | None
    answered: int | None


@dataclass(frozen=True)
class NodeMatches(Searched):
    """The nodes a search matched, sorted by id (``search``, ``search_model``)."""

    nodes: tuple[NodeAddress, ...]

    def __iter__(self) -> Iterator[NodeAddress]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)


@dataclass(frozen=True)
class Names(Searched):
    """Model ids or tags held by the live nodes, sorted."""

    names: tuple[str, ...]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class EncryptedHost:
    """A node hosting an encrypted model, its SMPC workers and its crypto provider."""

    host: NodeAddress
    workers: tuple[NodeAddress, ...]
    crypto_provider: NodeAddress


@dataclass(frozen=True)
class EncryptedModel(Searched):
    """The hosts of an encrypted model, sorted by id: every one when the gateway serves
    the ``by-node`` shape, the first one with the default ``api-text`` shape."""

    hosts: tuple[EncryptedHost, ...]

    @property
    def first(self) -> EncryptedHost | None:
        """The first host by id, or None when no node hosts the model."""
        return self.hosts[0] if self.hosts else None


@dataclass(frozen=True)
class EncryptedPlacement:
    """One replica of an encrypted model's hosts, as /choose-encrypted-model-host picks them."""

    workers: tuple[NodeAddress, NodeAddress]
    crypto_provider: NodeAddress
    host: NodeAddress


@dataclass(frozen=True)
class NodeCredentials:
    """What an enrollment issues: the node's settings, shown only once.

    ``env()`` gives them as ``KEY=VALUE`` lines for the node's environment file.
    """

    node_id: str
    amqp_url: str
    token: str
    address: str | None = None

    def env(self) -> str:
        lines = [f"GRID_NODE_ID={self.node_id}", f"AMQP_URL={self.amqp_url}",
                 f"GRID_NODE_TOKEN={self.token}"]
        if self.address:
            lines.append(f"GRID_NODE_ADDRESS={self.address}")
        return "\n".join(lines)
