"""The operator's command line for node credentials, over the bus.

::

    python -m services.admin enroll alice [--address URL] [--bridged]
    python -m services.admin revoke alice
    python -m services.admin list
    python -m services.admin bridge-user bridge

It speaks to the registry worker as any gateway process does (``AMQP_URL``
with a gateway user, ``GRID_NAMESPACE``), so it runs from any host that
reaches the broker; the registry makes the broker users through the
management API (``GRID_BROKER_ADMIN_URL``, set on the registry) and keeps
the token hashes. ``enroll`` prints the node's settings as ``KEY=VALUE``
lines, ready for an env file. Exit status: 0 done, 1 refused, 2 unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

from pydantic import BaseModel, ValidationError

from shared.bus import Bus
from shared.contracts import (
    BRIDGE_USER,
    ENROLL,
    LIST_ENROLLED,
    REVOKE,
    BridgeUserRequest,
    Done,
    Enrolled,
    EnrolledList,
    EnrollRequest,
    ListRequest,
    RevokeRequest,
)
from shared.errors import BusUnavailable, DeadlineExceeded, GridError, NoConsumer
from shared.rpc import RpcClient
from shared.settings import BaseGridSettings
from shared.topology import Names


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m services.admin",
                                  description="Enroll, revoke and list grid nodes.")
    commands = top.add_subparsers(dest="command", required=True)
    enroll = commands.add_parser("enroll", help="create a node's credentials, or rotate them")
    enroll.add_argument("node_id")
    enroll.add_argument("--address", help="the node's public URL")
    enroll.add_argument("--bridged", action="store_true",
                        help="an HTTP-only node that an HTTP bridge answers for")
    commands.add_parser("revoke", help="revoke a node and remove it").add_argument("node_id")
    commands.add_parser("list", help="enrolled nodes, when enrolled and last heard")
    bridge = commands.add_parser("bridge-user", help="create or rotate a bridge's broker user")
    bridge.add_argument("user")
    return top


def request_for(args: argparse.Namespace) -> tuple[str, BaseModel, type[BaseModel]]:
    """The registry operation, request and reply contract of a command."""
    if args.command == "enroll":
        return ENROLL, EnrollRequest(node_id=args.node_id, node_address=args.address,
                                     bridged=args.bridged), Enrolled
    if args.command == "revoke":
        return REVOKE, RevokeRequest(node_id=args.node_id), Done
    if args.command == "bridge-user":
        return BRIDGE_USER, BridgeUserRequest(user=args.user), Enrolled
    return LIST_ENROLLED, ListRequest(), EnrolledList


def render(settings: BaseGridSettings, reply: BaseModel) -> str:
    """What to print: KEY=VALUE lines for credentials, one line per enrolled node."""
    if isinstance(reply, Enrolled):
        lines = [f"GRID_NODE_ID={reply.node_id}", f"AMQP_URL={reply.amqp_url}",
                 f"GRID_NAMESPACE={settings.namespace}"]
        lines += [f"GRID_NODE_TOKEN={reply.token}"] if reply.token else []
        lines += [f"GRID_NODE_ADDRESS={reply.node_address}"] if reply.node_address else []
        return "\n".join(lines)
    if isinstance(reply, EnrolledList):
        return "\n".join(_row(node) for node in reply.nodes) or "(no node enrolled)"
    return "done"


def _row(node) -> str:
    heard = "never" if node.last_heard is None else _when(node.last_heard)
    kind = "bridged" if node.bridged else "amqp"
    return (f"{node.node_id}\t{kind}\tenrolled {_when(node.enrolled_at)}\tlast heard {heard}"
            f"\t{'registered' if node.registered else 'not registered'}")


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


async def run(settings: BaseGridSettings, args: argparse.Namespace) -> BaseModel:
    names = Names(settings.namespace)
    bus = Bus(settings, "grid-admin")
    await bus.connect()
    try:
        rpc = RpcClient(bus, names, "admin")
        await rpc.start()
        op, request, reply = request_for(args)
        # Enrollment makes several management API calls: more time than a join.
        return await rpc.call(names.registry_queue, op, request, reply,
                              max(settings.rpc_timeout_s, 30.0))
    finally:
        await bus.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = BaseGridSettings()
    try:
        request_for(args)
    except ValidationError as exc:
        print(f"error: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 1
    try:
        reply = asyncio.run(run(settings, args))
    except (BusUnavailable, NoConsumer, DeadlineExceeded) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except GridError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(render(settings, reply))
    return 0
