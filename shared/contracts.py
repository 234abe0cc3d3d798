"""Every message that crosses the bus, as a pydantic model.

Requests to the workers carry their operation in the AMQP ``type`` property
(the constants below); replies are ``{"result": ...}`` or ``{"error": ...}``
(see ``shared.rpc``). Node queries and replies are documented for node
authors in ``docs/protocol.md`` and ``docs/asyncapi.yaml``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

# A node id names a queue (<ns>.node.<id>), so it is kept short and plain.
NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
# Portable (no inline flags) so that JSON Schema validators in any language accept it.
NODE_ADDRESS_PATTERN = r"^(?:[hH][tT][tT][pP][sS]?|[wW][sS][sS]?)://[^\s/?#]+\S*$"

NodeId = Annotated[str, StringConstraints(pattern=NODE_ID_PATTERN)]
NodeAddress = Annotated[str, StringConstraints(pattern=NODE_ADDRESS_PATTERN, max_length=2048)]
ModelId = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=512)]
NodePair = tuple[str, str]

# Registry operations (AMQP "type" of a request to <ns>.registry).
JOIN = "join"
DELETE = "delete"
LIST_NODES = "list"
CHOOSE_HOSTS = "choose_hosts"
# Enrollment (registry operations too; secure mode, see docs/security.md).
ENROLL = "enroll"
REVOKE = "revoke"
LIST_ENROLLED = "list_enrolled"
BRIDGE_USER = "bridge_user"
# The membership as one snapshot (for a follower that starts, or missed a delta).
MEMBERSHIP = "membership"
# Search operation (AMQP "type" of a request to <ns>.search).
SEARCH = "search"
# Node query (AMQP "type" of a broadcast).
NODE_QUERY = "node_query"


class Contract(BaseModel):
    """Base of every bus message: unknown fields are ignored, models are immutable."""

    model_config = ConfigDict(extra="ignore", frozen=True)


# --- registry -------------------------------------------------------------


# The SHA-256 (hex) of a node token: the token itself never crosses the bus.
TokenHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class JoinRequest(Contract):
    node_id: NodeId
    node_address: NodeAddress
    # Makes a redelivered join answer 200 to its own request, not 409.
    request_id: str = Field(min_length=1, max_length=64)
    # Set when a node token (not the admin token) authorised the call: it must be this node's.
    token_hash: TokenHash | None = None


class DeleteRequest(Contract):
    node_id: NodeId
    node_address: str
    token_hash: TokenHash | None = None


class Done(Contract):
    """The reply of an operation that returns nothing but success."""


class ListRequest(Contract):
    # False: only live nodes. True: every registered node, offline ones too.
    include_offline: bool = False


class NodeRecord(Contract):
    node_id: str
    node_address: str
    live: bool
    # Seconds since the node was last heard on the bus (None: not heard, or not known to
    # the registry worker that answered: only the liveness owner keeps heartbeat times).
    heartbeat_age_s: float | None = None
    # Enrolled as bridged: in secure mode an HTTP bridge may answer for it.
    bridged: bool = False


class NodeList(Contract):
    nodes: list[NodeRecord]


class ChooseHostsRequest(Contract):
    encrypted: bool


class HostChoice(Contract):
    hosts: list[NodePair]


# --- enrollment ---------------------------------------------------------------


class EnrollRequest(Contract):
    node_id: NodeId
    node_address: NodeAddress | None = None
    # An HTTP-only node an HTTP bridge answers for.
    bridged: bool = False


class Enrolled(Contract):
    """A node's new credentials: shown once, never stored (the token only as its hash)."""

    node_id: str
    amqp_url: str
    token: str
    node_address: str | None = None


class RevokeRequest(Contract):
    node_id: NodeId


class EnrolledNode(Contract):
    node_id: str
    node_address: str
    bridged: bool
    enrolled_at: float
    # Epoch seconds the registry last heard the node on the bus (None: not since it started).
    last_heard: float | None = None
    registered: bool = False


class EnrolledList(Contract):
    nodes: list[EnrolledNode]


class BridgeUserRequest(Contract):
    """Create (or rotate) the broker user of an HTTP bridge."""

    user: NodeId


# --- membership events (topic exchange <ns>.events) ----------------------

EventKind = Literal["joined", "left", "offline", "online"]


class MembershipEvent(Contract):
    kind: EventKind
    node_id: str
    node_address: str = ""
    # joined: the node was enrolled as bridged (secure mode).
    bridged: bool = False


class Heartbeat(Contract):
    node_id: str
    # The node's inventory version: it changes whenever any answer of the node may
    # change. None (old nodes, bridged nodes): the node's answers are never cached.
    version: str | None = Field(default=None, max_length=128)
    # Set by a bridge speaking for an HTTP-only node (the bridge's name): the node
    # itself is not on the bus.
    bridge: str | None = Field(default=None, max_length=128)


# --- membership deltas (topic exchange <ns>.events, key membership.delta) -----


class NodeState(Contract):
    """What the gateway knows of one registered node; a delta carries the whole record.

    ``live``: heard at all within the TTL (a join, or a heartbeat): listed and chosen.
    ``heard``: heard on the bus within the TTL (by itself or a bridge): searches wait for it.
    ``own``: heard by itself (a heartbeat without ``bridge``): no bridge speaks for it.
    """

    node_id: str
    node_address: str
    live: bool = True
    heard: bool = False
    own: bool = False
    version: str | None = None
    # Enrolled as bridged (secure mode): an HTTP bridge's replies may count for it.
    bridged: bool = False


class MembershipDelta(Contract):
    """The membership changes of one batch, numbered in one sequence per liveness owner.

    ``epoch`` names the owner's term; ``seq`` follows the previous delta's by one. A
    follower that sees another epoch or a gap reads a snapshot instead.
    """

    epoch: str
    seq: int
    nodes: list[NodeState] = []  # joined, online, offline, new address or version
    left: list[str] = []  # deleted


class MembershipRequest(Contract):
    """Ask for the whole membership (every registered node's state), or, with the asker's
    position, only whether it is current: then no node is sent."""

    # The asker's epoch and delta number ("": none, send everything).
    epoch: str = ""
    seq: int = -1


class MembershipSnapshot(Contract):
    """Every registered node's state as of delta ``seq`` of ``epoch`` ("" : none yet)."""

    epoch: str
    seq: int
    nodes: list[NodeState]
    # The asker is at this epoch and delta already (its request said so): no nodes are sent.
    current: bool = False


# --- search ---------------------------------------------------------------

QueryOp = Literal["list_models", "list_tags", "has_model", "encrypted_model", "search_tags"]


class NodeQuery(Contract):
    """One query to the nodes (what a node receives); the API's search, as ``SearchRequest``."""

    op: QueryOp
    model_id: ModelId | None = None
    tags: list[Tag] | None = None

    @model_validator(mode="after")
    def _fields_of_the_op(self) -> NodeQuery:
        if self.op in ("has_model", "encrypted_model") and self.model_id is None:
            raise ValueError(f"{self.op} needs model_id")
        if self.op == "search_tags" and not self.tags:
            raise ValueError("search_tags needs at least one tag")
        return self

    def key(self) -> tuple:
        """Identity of the query: equal keys give equal answers (used to coalesce)."""
        return (self.op, self.model_id, tuple(sorted(set(self.tags))) if self.tags else None)


class SearchRequest(NodeQuery):
    """What the API asks the search worker: a query, and how much detail to answer with.

    Only the :class:`NodeQuery` part is broadcast to the nodes.
    """

    # Ask only these live nodes (None: every one), and for list_models / list_tags answer
    # each node's own names too (the status page's detail of a node).
    nodes: list[NodeId] | None = Field(default=None, max_length=100)

    def node_query(self) -> dict:
        """The broadcast body: the query without the gateway-side options."""
        return self.model_dump(mode="json", exclude={"nodes"})

    def key(self) -> tuple:
        return (*super().key(), None if self.nodes is None else tuple(sorted(set(self.nodes))))


class EncryptedModelHosts(Contract):
    workers: list[NodePair]
    crypto_provider: NodePair


class EncryptedHost(Contract):
    """A node hosting an encrypted model, and the nodes holding its shares."""

    node_id: str
    node_address: str
    encrypted: EncryptedModelHosts


class NodeReply(Contract):
    """A node's answer to a NodeQuery; which field is set depends on the op."""

    node_id: str
    models: list[str] | None = None
    tags: list[str] | None = None
    # has_model / search_tags
    match: bool | None = None
    # encrypted_model: set when the node hosts it
    encrypted: EncryptedModelHosts | None = None
    # The inventory version this answer was computed from (as in the node's heartbeats).
    version: str | None = Field(default=None, max_length=128)


class SearchResult(Contract):
    """What the search worker answers the API with."""

    asked: int
    answered: int
    # Nodes the query went to: the others' answers followed from what they had said
    # at their current inventory version. None: every node asked was queried.
    queried: int | None = None
    # list_models / list_tags
    names: list[str] = []
    # has_model / search_tags
    nodes: list[NodePair] = []
    # encrypted_model: the first hosting node by id, and its hosts
    host: NodePair | None = None
    encrypted: EncryptedModelHosts | None = None
    # encrypted_model: every hosting node, sorted by id (the first is host / encrypted)
    hosts: list[EncryptedHost] = []
    # list_models / list_tags asked of given nodes: each answering node's own names, sorted
    by_node: dict[str, list[str]] = {}
    # Answered from a cache, without asking the nodes again.
    cached: bool = False
    # Set on an answer that may be cached: the digest of the network it holds for
    # (MembershipView.digest: heard nodes, addresses, versions); None: do not cache it.
    state: str | None = None
