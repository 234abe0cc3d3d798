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
    connect_timeout_s: float = Field(default=3.0, gt=0)
    heartbeat_s: float = Field(default=5.0, gt=0)
    node_ttl_s: float = Field(default=15.0, gt=0)
    rpc_timeout_s: float = Field(default=5.0, gt=0)
    # 0 turns a worker's own /metrics endpoint off.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # Count a node's replies and heartbeats only when their broker-validated
    # user_id is the node's id (run each node with its own broker user).
    verify_node_user: bool = False
    # The durable work queues and the dead-letter queue: classic (one broker
    # node) or quorum (replicated across a cluster). Every process of a
    # gateway must agree, since each declares the queues it uses.
    queue_type: Literal["classic", "quorum"] = "classic"

    _check_amqp_url = field_validator("amqp_url")(check_amqp_urls)

    @property
    def amqp_urls(self) -> list[str]:
        """The broker addresses of ``amqp_url``, in the order they are tried."""
        return split_amqp_urls(self.amqp_url)

    @property
    def amqp_user(self) -> str:
        """The broker user of ``amqp_url``; the broker checks it against ``user_id``."""
        return _broker_user(self.amqp_urls[0])


class MembershipSettings(BaseGridSettings):
    """What the processes that follow the membership share (API, search worker, bridge)."""

    # How often the node list is re-read from the registry, to heal any
    # membership event missed.
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
    # address (default: as the viewer's request reached the API), how long one
    # look at the network (node list and their inventories) serves every viewer,
    # and how many of the API's recent searches it lists.
    gateway_name: str | None = Field(default=None, max_length=128)
    gateway_address: str | None = Field(default=None, max_length=2048)
    status_cache_s: float = Field(default=2.0, gt=0)
    status_recent_searches: int = Field(default=40, ge=1, le=1000)
    # API processes serving one port (uvicorn workers), each with its own
    # broker connection and reply queue.
    api_workers: int = Field(default=1, ge=1)


class RegistrySettings(MembershipSettings):
    """The worker that owns the node store."""

    database_url: str = "sqlite:///" + str(Path("data") / "registry.sqlite3")
    # PostgreSQL schema holding the tables (lets test runs share one database).
    database_schema: str = Field(default="public", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    n_replica: int = Field(default=1, ge=1)
    prefetch: int = Field(default=32, ge=1)
    shutdown_grace_s: float = Field(default=10.0, gt=0)
    # The liveness owner gathers membership changes this long into one delta.
    membership_batch_s: float = Field(default=0.01, ge=0)


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

    @model_validator(mode="after")
    def _bridged_replies_can_count(self) -> BridgeSettings:
        # With it, the search worker and registry count a reply or heartbeat only from
        # the node's own broker user: every bridged answer would be dropped.
        if self.verify_node_user:
            raise ValueError("GRID_VERIFY_NODE_USER is set: bridged replies and heartbeats "
                             "come from the bridge's broker user, never the node's, so the "
                             "gateway would drop them all; the bridge cannot run with it")
        return self

    @property
    def probe_s(self) -> float:
        return self.bridge_probe_s or self.heartbeat_s


class NodeSettings(BaseGridSettings):
    """A grid node (the demo node and the SDK)."""

    gateway_url: str = "http://127.0.0.1:8000"
    # The gateway's admin token, when it is closed (sent on /join and /delete-node).
    admin_token: Token = None
    # Broadcasts older than this are dropped from a node's queue unread.
    node_queue_ttl_s: float = Field(default=10.0, gt=0)


class ClientSettings(BaseSettings):
    """The Python client of the HTTP API (``services.client``): no broker involved."""

    model_config = SettingsConfigDict(env_prefix="GRID_", extra="ignore")

    gateway_url: str = "http://127.0.0.1:8000"
    # Sent as "Authorization: Bearer <token>" on every request when set.
    admin_token: Token = None
    client_timeout_s: float = Field(default=10.0, gt=0)
