"""Secure mode's checks: who may ask the workers, and who may speak for a node.

With ``GRID_NODE_AUTH`` on, the broker validates ``user_id`` on every message
(it closes the channel of a publisher that sets another user's), so the
gateway can trust it as the sender's identity:

- a request to a work queue is acted on only when its sender is one of the
  gateway's own users (``GRID_GATEWAY_USERS``); an HTTP bridge's user may only
  read the node list and the membership;
- a node reply or heartbeat counts only from the node's own user, or from a
  bridge's user for a node enrolled as bridged.

Node tokens (for ``/join`` and ``/delete-node``) are kept only as hashes.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Container

from shared.contracts import LIST_NODES, MEMBERSHIP
from shared.settings import BaseGridSettings

# What a bridge's user may ask of a worker: the node list and the membership snapshot,
# to know whom it speaks for.
BRIDGE_OPERATIONS = frozenset({LIST_NODES, MEMBERSHIP})
# The header of a node query naming the exchange a node replies through (protocol 2).
REPLY_EXCHANGE_HEADER = "x-reply-exchange"


def reply_exchange(headers: dict | None) -> str:
    """The exchange a query's reply goes through: the one it names, else the default one."""
    name = (headers or {}).get(REPLY_EXCHANGE_HEADER, "")
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    return name if isinstance(name, str) else ""


def stamp(settings: BaseGridSettings) -> str | None:
    """The ``user_id`` a gateway process sets on what it publishes: its broker user.

    Set in either mode, so that a worker in secure mode can trust requests from
    every gateway process. None when the user is not in the URL (a client
    certificate login, ``auth=external``): the broker names that user.
    """
    if "auth=external" in settings.amqp_url.lower():
        return None
    return settings.amqp_user


def new_token() -> str:
    """A fresh node token (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the node store keeps of a token: its SHA-256, hex.

    A token is 256 random bits, so a plain hash is enough (no salt, no slow
    hash): nothing can be guessed from it, and a lookup is one indexed read.
    """
    return hashlib.sha256(token.encode()).hexdigest()


class RequestGate:
    """Whether a worker acts on a request, by its broker-validated sender."""

    def __init__(self, settings: BaseGridSettings) -> None:
        self.on = settings.node_auth
        self.gateway = settings.gateway_user_set
        self.bridges = settings.bridge_user_set

    def admits(self, user_id: str | None, op: str) -> bool:
        if not self.on or user_id in self.gateway:
            return True
        return user_id in self.bridges and op in BRIDGE_OPERATIONS

    def from_gateway(self, user_id: str | None) -> bool:
        """A reply to one of the gateway's own requests, a membership event or a delta
        comes from a gateway user (a node may publish on the events exchange, for its
        heartbeats: its own key alone, but a broker before RabbitMQ 4.0.3 routes copies to
        the keys of its CC and BCC headers unchecked)."""
        return not self.on or user_id in self.gateway


class SpeakerCheck:
    """Whether a reply or heartbeat from ``user_id`` may count for ``node_id``.

    ``bridged`` answers which nodes were enrolled as bridged (it changes as
    nodes are enrolled and revoked, so it is read each time).
    """

    def __init__(self, settings: BaseGridSettings,
                 bridged: Callable[[], Container[str]] = frozenset) -> None:
        self.on = settings.node_auth
        self.bridges = settings.bridge_user_set
        self.bridged = bridged

    def may_speak_for(self, user_id: str | None, node_id: str) -> bool:
        if not self.on or user_id == node_id:
            return True
        return user_id in self.bridges and node_id in self.bridged()
