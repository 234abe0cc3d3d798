"""Typed settings, read from the environment (``GRID_*`` and ``AMQP_URL``).

Every service builds its settings object once in ``__main__`` and hands it to
its app or worker, so tests can build the same objects with other values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


def _blank_is_unset(value: Any) -> Any:
    """``GRID_ADMIN_TOKEN=`` (empty or blank) means no token, never an empty one."""
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, SecretStr) and not value.get_secret_value().strip():
        return None
    return value


# A bearer token; unset when the variable is missing, empty or blank.
Token = Annotated[SecretStr | None, BeforeValidator(_blank_is_unset)]
# A file path; unset when the variable is missing, empty or blank.
OptionalFile = Annotated[Path | None, BeforeValidator(_blank_is_unset)]
AMQP_SCHEMES = ("amqp", "amqps")


def split_amqp_urls(value: str) -> list[str]:
    """The broker addresses of an ``AMQP_URL``: one URL, or several separated by commas."""
    return [url.strip() for url in value.split(",") if url.strip()]


def _broker_user(url: str) -> str:
    return unquote(urlsplit(url).username or "guest")


def check_amqp_urls(value: str) -> str:
    """Every address is an amqp(s) URL with a host, and all name the same broker user.

    One user, because a node's replies carry it as ``user_id``, which the broker
    checks against the connection's user: it must not change on failover.
    """
    urls = split_amqp_urls(value)
    if not urls:
        raise ValueError("no broker URL given")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in AMQP_SCHEMES or not parts.hostname:
            raise ValueError(f"not an amqp:// or amqps:// URL with a host: {parts.scheme}://"
                             f"{parts.hostname or ''}")
    if len({_broker_user(url) for url in urls}) > 1:
        raise ValueError("every broker URL of the list must name the same user")
    return value


def default_database_url(namespace: str) -> str:
    """The registry's SQLite file for ``namespace``: ``data/registry-<namespace>.sqlite3``."""
    return "sqlite:///" + str(Path("data") / f"registry-{namespace}.sqlite3")


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


FAST_PATHS = frozenset({"reader"})


def parse_fast_paths(value: str) -> frozenset[str]:
    """``GRID_BUS_FAST_PATH``: true/false, or a comma list of the fast paths to use."""
    word = value.strip().lower()
    if word in ("true", "on", "yes", "1"):
        return FAST_PATHS
    if word in ("false", "off", "no", "0", ""):
        return frozenset()
    chosen = frozenset(part.strip() for part in word.split(",") if part.strip())
    if not chosen <= FAST_PATHS:
        raise ValueError("GRID_BUS_FAST_PATH is true, false, or a comma list of "
                         f"{', '.join(sorted(FAST_PATHS))}")
    return chosen


def check_fast_paths(value: str) -> str:
    parse_fast_paths(value)
    return value


class BaseGridSettings(BaseSettings):
    """What every process on the bus needs: where the broker is and the namespace."""

    # hide_input_in_errors: a rejected AMQP_URL must not print its password.
    model_config = SettingsConfigDict(env_prefix="GRID_", extra="ignore", populate_by_name=True,
                                      hide_input_in_errors=True)

    # One broker URL, or the nodes of a cluster separated by commas: a process
    # connects to the first that answers and fails over to the next.
    amqp_url: str = Field(
        default="amqp://guest:guest@localhost:5672/",
        validation_alias=AliasChoices("AMQP_URL", "GRID_AMQP_URL"),
    )
    namespace: str = Field(default="grid", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    log_level: str = "INFO"
    # One line per record: "auto" is text on a terminal and JSON otherwise.
    log_format: Literal["auto", "json", "text"] = "auto"
    connect_timeout_s: float = Field(default=3.0, gt=0)
    heartbeat_s: float = Field(default=5.0, gt=0)
    node_ttl_s: float = Field(default=15.0, gt=0)
    rpc_timeout_s: float = Field(default=5.0, gt=0)
    # 0 turns a worker's own /metrics endpoint off.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # Secure mode (docs/security.md): workers act only on requests from the
    # gateway's own broker users, and count a node's replies and heartbeats only
    # when their broker-validated user_id is the node's id (each node has its own
    # broker user, made by ``python -m services.admin enroll``).
    # GRID_VERIFY_NODE_USER is the setting's older name.
    node_auth: bool = Field(default=False, validation_alias=AliasChoices(
        "GRID_NODE_AUTH", "GRID_VERIFY_NODE_USER", "node_auth", "verify_node_user"))
    # Secure mode: the broker users of the gateway's own processes (comma-separated);
    # unset: the user of this process's AMQP_URL.
    gateway_users: str | None = None
    # Secure mode: the broker users of HTTP bridges (comma-separated). They may
    # read the node list, and answer and heartbeat for nodes enrolled --bridged.
    bridge_users: str = ""
    # The durable work queues and the dead-letter queue: classic (one broker
    # node) or quorum (replicated across a cluster). Every process of a
    # gateway must agree, since each declares the queues it uses.
    queue_type: Literal["classic", "quorum"] = "classic"
    # TLS to the broker (amqps:// addresses; see docs/tls.md): the CA that signed the
    # broker's certificate (unset: the system's CAs), and a client certificate and key
    # for a broker that asks for one. The same as cafile=, certfile=, keyfile= in the URL.
    amqp_cafile: OptionalFile = None
    amqp_certfile: OptionalFile = None
    amqp_keyfile: OptionalFile = None
    # The bus's fast I/O paths (docs/fast-paths.md): "true" (all), "false" (stock
    # aio-pika/aiormq, nothing replaced), or a comma list of them ("reader").
    bus_fast_path: str = "true"

    _check_amqp_url = field_validator("amqp_url")(check_amqp_urls)
    _check_bus_fast_path = field_validator("bus_fast_path")(check_fast_paths)

    @field_validator("amqp_cafile", "amqp_certfile", "amqp_keyfile")
    @classmethod
    def _tls_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @property
    def amqp_urls(self) -> list[str]:
        """The broker addresses of ``amqp_url``, in the order they are tried."""
        return split_amqp_urls(self.amqp_url)

    @property
    def amqp_user(self) -> str:
        """The broker user of ``amqp_url``; the broker checks it against ``user_id``."""
        return _broker_user(self.amqp_urls[0])

    @property
    def verify_node_user(self) -> bool:
        """The older name of ``node_auth``."""
        return self.node_auth

    @property
    def gateway_user_set(self) -> frozenset[str]:
        """Who may ask the workers anything in secure mode."""
        if self.gateway_users is None or not self.gateway_users.strip():
            return frozenset({self.amqp_user})
        return frozenset(_names(self.gateway_users))

    @property
    def bridge_user_set(self) -> frozenset[str]:
        """The broker users of HTTP bridges (secure mode)."""
        return frozenset(_names(self.bridge_users))

    @property
    def fast_paths(self) -> frozenset[str]:
        """The fast I/O paths this process uses (empty: stock aio-pika and aiormq)."""
        return parse_fast_paths(self.bus_fast_path)


class MembershipSettings(BaseGridSettings):
    """What the processes that follow the membership share (API, search and registry
    workers, bridge)."""

    # How often a membership snapshot is read from the registry, to heal a delta missed
    # without a gap seen (a gap is healed at once).
    membership_refresh_s: float = Field(default=30.0, gt=0)


class CachingSettings(MembershipSettings):
    """What the processes that cache search answers share (the API and the search worker)."""

    # Answer a repeated search from memory while every live node announces the same
    # inventory version and the live set is unchanged.
    search_cache: bool = True
    search_cache_entries: int = Field(default=4096, ge=1)


class ApiSettings(CachingSettings):
    """The HTTP front door."""

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    # Host choices are made here, from the API's membership view (as GRID_N_REPLICA says).
    n_replica: int = Field(default=1, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # Unset: the API is open, as in the original gateway. Set: /join and
    # /delete-node need "Authorization: Bearer <token>".
    admin_token: Token = None
    # With a token set, also close the read and search routes.
    auth_read_routes: bool = False
    # How often the API checks that the worker queues have consumers.
    consumer_check_s: float = Field(default=1.0, gt=0)
    # /search-encrypted-model's answer: the API text's shape (the first hosting node),
    # or "by-node" (every hosting node, the shape the original Python clients read).
    encrypted_search_format: Literal["api-text", "by-node"] = "api-text"
    # The status page at GET /: the name it shows (default: the namespace), the
    # address (default: as the viewer's request reached the API), how often the
    # page refreshes (and, while the API's membership view is not in sync, how long
    # one read of the registry's node list serves every viewer), and how many of
    # the API's recent searches it lists.
    gateway_name: str | None = Field(default=None, max_length=128)
    gateway_address: str | None = Field(default=None, max_length=2048)
    status_cache_s: float = Field(default=2.0, gt=0)
    status_recent_searches: int = Field(default=40, ge=1, le=1000)
    # The most models (and tags) of one node that its detail on the page lists; the
    # rest are counted.
    status_max_names: int = Field(default=100, ge=1)
    # API processes serving one port (uvicorn workers), each with its own
    # broker connection and reply queue.
    api_workers: int = Field(default=1, ge=1)


class RegistrySettings(MembershipSettings):
    """The worker that owns the node store."""

    # Default: one SQLite file per namespace under ./data, so that gateways of
    # different namespaces in one checkout keep separate stores.
    database_url: str = ""
    # PostgreSQL schema holding the tables (lets test runs share one database).
    database_schema: str = Field(default="public", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    n_replica: int = Field(default=1, ge=1)
    prefetch: int = Field(default=32, ge=1)
    # The RabbitMQ management API (http://user:password@host:15672) through which
    # enroll and revoke create and delete nodes' broker users.
    broker_admin_url: SecretStr | None = None
    # The vhost nodes' users get permissions on.
    broker_vhost: str = "/"
    # The broker address(es) an enrolled node is told to use (its own user and
    # password go in); unset: this worker's own AMQP_URL.
    node_amqp_url: str | None = None
    shutdown_grace_s: float = Field(default=10.0, gt=0)
    # The liveness owner gathers membership changes this long into one delta.
    membership_batch_s: float = Field(default=0.01, ge=0)

    @model_validator(mode="after")
    def _store_per_namespace(self) -> RegistrySettings:
        if not self.database_url:
            self.database_url = default_database_url(self.namespace)
        return self


class SearchSettings(CachingSettings):
    """The scatter-gather worker."""

    search_timeout_s: float = Field(default=2.0, gt=0)
    prefetch: int = Field(default=64, ge=1)
    # Node queries (searches x live nodes) one worker keeps in flight. Beyond it a
    # search waits for room, and is refused (503) if it could not finish before
    # its caller's deadline: an overloaded fleet then answers some searches fully
    # instead of every search with nobody. A search larger than this runs alone.
    search_max_node_queries: int = Field(default=2000, ge=1)
    shutdown_grace_s: float = Field(default=10.0, gt=0)
    # Keep what versioned nodes said they hold (models, tags), and ask a search only
    # of the nodes whose answer does not follow from it.
    search_index: bool = True
    # What one node may send (services/search/screen.py): a larger reply is dropped
    # (the node counts as not answering); a longer list is cut to the cap.
    max_reply_bytes: int = Field(default=1024 * 1024, gt=0)
    max_node_models: int = Field(default=10_000, gt=0)
    max_node_tags: int = Field(default=10_000, gt=0)


class BridgeSettings(MembershipSettings):
    """The HTTP bridge: answers broadcasts for registered nodes that speak only HTTP."""

    # The name bridged heartbeats carry (Heartbeat.bridge); unset: "bridge-<host>-<pid>".
    bridge_name: str | None = Field(default=None, min_length=1, max_length=128)
    # Connections the one HTTP client keeps open at most, to all nodes together.
    bridge_http_pool: int = Field(default=100, ge=1)
    # A cap on each HTTP call to a node; a broadcast's own deadline bounds it first.
    bridge_call_timeout_s: float = Field(default=5.0, gt=0)
    # How often a bridged node that served no call lately is probed; unset: GRID_HEARTBEAT_S.
    bridge_probe_s: float | None = Field(default=None, gt=0)
    # A node's answer larger than this is malformed (a node cannot flood the bridge).
    bridge_max_answer_bytes: int = Field(default=1024 * 1024, gt=0)
    # Broadcasts one bridge holds at once; the rest wait for it or go to another bridge.
    prefetch: int = Field(default=32, ge=1)
    shutdown_grace_s: float = Field(default=5.0, gt=0)

    @property
    def bridge_user_set(self) -> frozenset[str]:
        """A bridge counts its own user (and its peers') as a bridge's."""
        return super().bridge_user_set | {self.amqp_user}

    @property
    def probe_s(self) -> float:
        return self.bridge_probe_s or self.heartbeat_s


class NodeSettings(BaseGridSettings):
    """A grid node (the demo node and the SDK)."""

    gateway_url: str = "http://127.0.0.1:8000"
    # The gateway's admin token, when it is closed (sent on /join and /delete-node).
    admin_token: Token = None
    # The node's own token (``services.admin enroll``): sent on /join and
    # /delete-node instead of the admin token.
    node_token: Token = None
    # Broadcasts older than this are dropped from a node's queue unread.
    node_queue_ttl_s: float = Field(default=10.0, gt=0)

