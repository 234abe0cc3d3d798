"""Enroll, rotate and revoke nodes: their broker users and their tokens.

A node's broker user is named like the node and may do exactly what a node
does (docs/security.md, "What a node may do"): declare, bind and read its own
queue, read the broadcast exchange (to bind to it), write replies through the
replies exchange, and heartbeats under its own id on the events exchange.
Its token is kept only as a hash. Revoking deletes the user, closes its
connections, forgets the token and removes the node at once.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import quote, urlsplit, urlunsplit

from shared.auth import new_token, token_hash
from shared.brokeradmin import BrokerAdmin
from shared.contracts import (
    BridgeUserRequest,
    Done,
    Enrolled,
    EnrolledList,
    EnrolledNode,
    EnrollRequest,
    ListRequest,
    RevokeRequest,
)
from shared.errors import (
    BrokerAdminUnavailable,
    Forbidden,
    InvalidRequest,
    NotFound,
    Unauthorized,
)
from shared.rpc import RequestContext
from shared.settings import RegistrySettings, split_amqp_urls

if TYPE_CHECKING:
    from services.registry.worker import RegistryWorker


class Grant(NamedTuple):
    """A broker user's permissions: regular expressions, as RabbitMQ takes them."""

    configure: str
    write: str
    read: str
    topic_write: str  # routing keys on the events exchange
    topic_read: str


def node_grant(namespace: str, node_id: str) -> Grant:
    """What a node may do, and nothing more."""
    ns, me = re.escape(namespace), re.escape(node_id)
    own = rf"{ns}\.node\.{me}"
    return Grant(configure=rf"^{own}$", write=rf"^({own}|{ns}\.replies|{ns}\.events)$",
                 read=rf"^({own}|{ns}\.broadcast)$", topic_write=rf"^heartbeat\.{me}$",
                 topic_read="^$")


def bridge_grant(namespace: str) -> Grant:
    """What an HTTP bridge may do: its queue, its reply queue, the node list, replies and
    heartbeats (the gateway counts them only for nodes enrolled --bridged)."""
    ns = re.escape(namespace)
    # amq.gen-* / amq_*: the private, exclusive queue that follows the events exchange
    # (named by the broker, or by aio-pika); exclusive, so no other connection can use one.
    own = rf"{ns}\.bridge|{ns}\.reply\.bridge\..*|amq\.gen-.*|amq_.*"
    return Grant(configure=rf"^({own})$",
                 write=rf"^({own}|{ns}\.replies|{ns}\.events|amq\.default)$",
                 read=rf"^({own}|{ns}\.broadcast|{ns}\.events)$",
                 topic_write=r"^heartbeat\..+$", topic_read=".*")


def url_for_user(amqp_url: str, user: str, password: str) -> str:
    """``amqp_url`` (one URL or a comma-separated list) with this user and password."""
    def one(url: str) -> str:
        parts = urlsplit(url)
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(
            netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"))

    return ",".join(one(url) for url in split_amqp_urls(amqp_url))


class Enrollment:
    """The registry's enrollment operations (wired into its RPC server)."""

    def __init__(self, worker: RegistryWorker) -> None:
        self.worker = worker
        self.settings: RegistrySettings = worker.settings
        self.store = worker.store

    def _admin(self) -> BrokerAdmin:
        url = self.settings.broker_admin_url
        if url is None:
            raise BrokerAdminUnavailable("enrollment needs GRID_BROKER_ADMIN_URL on the registry")
        return BrokerAdmin(url.get_secret_value(), self.settings.broker_vhost)

    async def _grant(self, user: str, grant: Grant) -> str:
        """Create or rotate ``user`` with ``grant``; close its old connections. The URL."""
        password = secrets.token_urlsafe(24)
        admin = self._admin()
        try:
            await self._may_manage(admin, user)
            await admin.put_user(user, password)
            await admin.set_permissions(user, grant.configure, grant.write, grant.read)
            await admin.set_topic_permissions(user, f"{self.settings.namespace}.events",
                                              grant.topic_write, grant.topic_read)
            await admin.close_connections(user)  # a rotation ends the old sessions
        finally:
            await admin.close()
        base = self.settings.node_amqp_url or self.settings.amqp_url
        return url_for_user(base, user, password)

    async def _may_manage(self, admin: BrokerAdmin, user: str) -> None:
        """Never touch a user that is not a node's or a bridge's: the gateway's own, or any
        user with management tags (the operator's), would be taken over or locked out."""
        if user in self.settings.gateway_user_set:
            raise InvalidRequest(f"{user} is one of the gateway's own broker users")
        tags = await admin.user_tags(user)
        if tags and any(tag.strip() for tag in tags):
            raise InvalidRequest(f"{user} is an existing broker user with management tags")

    async def enroll(self, request: EnrollRequest, context: RequestContext) -> Enrolled:
        node_id = request.node_id
        amqp_url = await self._grant(node_id, node_grant(self.settings.namespace, node_id))
        token = new_token()
        await self.store.enroll(node_id, token_hash(token), request.bridged,
                                request.node_address or "")
        self.worker.enrolled_changed(node_id, request.bridged)
        return Enrolled(node_id=node_id, amqp_url=amqp_url, token=token,
                        node_address=request.node_address)

    async def bridge_user(self, request: BridgeUserRequest,
                          context: RequestContext) -> Enrolled:
        amqp_url = await self._grant(request.user, bridge_grant(self.settings.namespace))
        return Enrolled(node_id=request.user, amqp_url=amqp_url, token="")

    async def revoke(self, request: RevokeRequest, context: RequestContext) -> Done:
        """Broker user first: once it is gone, nothing the node holds works any more.

        Only an enrolled node is revoked: no other broker user is ever deleted.
        """
        if request.node_id not in {row.node_id for row in await self.store.enrolled()}:
            raise NotFound(f"node {request.node_id} is not enrolled")
        admin = self._admin()
        try:
            await admin.delete_user(request.node_id)
            await admin.close_connections(request.node_id)
        finally:
            await admin.close()
        if not await self.store.revoke(request.node_id):
            raise NotFound(f"node {request.node_id} is not enrolled")
        await self.worker.removed(request.node_id)
        return Done()

    async def list_enrolled(self, request: ListRequest, context: RequestContext) -> EnrolledList:
        registered = self.worker.membership.nodes
        return EnrolledList(nodes=[
            EnrolledNode(node_id=row.node_id, node_address=row.node_address,
                         bridged=row.bridged, enrolled_at=row.enrolled_at,
                         last_heard=self.worker.last_heard(row.node_id),
                         registered=row.node_id in registered)
            for row in await self.store.enrolled()])

    async def authorize(self, node_id: str, hashed: str | None) -> None:
        """A node token (hashed by the API) may act only for its own node."""
        if hashed is None:
            return  # the API checked the admin token
        owner = await self.store.token_owner(hashed)
        if owner is None:
            raise Unauthorized()
        if owner != node_id:
            raise Forbidden()
