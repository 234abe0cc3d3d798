"""``python -m services.client COMMAND``: the gateway's API from a shell, on :class:`GridClient`.

A table by default, ``--json`` for scripts. A refusal or a failure prints the
gateway's message on stderr and exits with status 1 (2 for a usage error).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import ValidationError

from services.client.client import GridClient
from services.client.errors import GatewayError
from services.client.models import EncryptedModel, Names, NodeAddress, NodeMatches, Searched


@dataclass
class Shown:
    """A command's result: ``data`` for --json, a table and a note for people."""

    data: Any
    header: tuple[str, ...] = ()
    rows: list[tuple[str, ...]] = field(default_factory=list)
    note: str | None = None


def _counted(result: Searched) -> str | None:
    if result.asked is None:
        return None
    return f"{result.asked} nodes asked, {result.answered} answered"


def _matches(result: NodeMatches) -> Shown:
    return Shown(dataclasses.asdict(result), ("node", "address"),
                 [(node.id, node.address) for node in result], _counted(result))


def _names(result: Names, column: str) -> Shown:
    return Shown(dataclasses.asdict(result), (column,), [(name,) for name in result],
                 _counted(result))


def _roles(rows: list[tuple[str, ...]], prefix: tuple[str, ...], role: str,
           nodes: Sequence[NodeAddress]) -> None:
    rows.extend((*prefix, role, node.id, node.address) for node in nodes)


def _encrypted(result: EncryptedModel) -> Shown:
    rows: list[tuple[str, ...]] = []
    for found in result.hosts:
        prefix = (found.host.id,)
        _roles(rows, prefix, "host", [found.host])
        _roles(rows, prefix, "worker", found.workers)
        _roles(rows, prefix, "crypto provider", [found.crypto_provider])
    return Shown(dataclasses.asdict(result), ("host", "role", "node", "address"), rows,
                 _counted(result))


def _choose(grid: GridClient, args: argparse.Namespace) -> Shown:
    if not args.encrypted:
        hosts = grid.choose_model_host()
        return Shown([dataclasses.asdict(node) for node in hosts], ("node", "address"),
                     [(node.id, node.address) for node in hosts])
    placements = grid.choose_encrypted_model_host()
    rows: list[tuple[str, ...]] = []
    for replica, placement in enumerate(placements, 1):
        prefix = (str(replica),)
        _roles(rows, prefix, "worker", placement.workers)
        _roles(rows, prefix, "crypto provider", [placement.crypto_provider])
        _roles(rows, prefix, "host", [placement.host])
    note = None if placements else "too few live nodes for an encrypted placement"
    return Shown([dataclasses.asdict(p) for p in placements],
                 ("replica", "role", "node", "address"), rows, note)


def _said(message: str) -> Shown:
    return Shown({"message": message}, note=message)


def _nodes(grid: GridClient, _: argparse.Namespace) -> Shown:
    nodes = grid.connected_nodes()
    return Shown(list(nodes), ("node",), [(node_id,) for node_id in nodes])


COMMANDS: dict[str, Callable[[GridClient, argparse.Namespace], Shown]] = {
    "nodes": _nodes,
    "search": lambda grid, args: _matches(grid.search(*args.tags)),
    "model": lambda grid, args: _matches(grid.search_model(args.model_id)),
    "encrypted": lambda grid, args: _encrypted(grid.search_encrypted_model(args.model_id)),
    "models": lambda grid, _: _names(grid.available_models(), "model"),
    "tags": lambda grid, _: _names(grid.available_tags(), "tag"),
    "choose": _choose,
    "join": lambda grid, args: _said(grid.join(args.node_id, args.address)),
    "delete": lambda grid, args: _said(grid.delete(args.node_id, args.address)),
}


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        cells = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        return "  ".join(cells).rstrip()

    return "\n".join([line(tuple(h.upper() for h in header)), *map(line, rows)])


def render(shown: Shown, as_json: bool) -> str:
    if as_json:
        return json.dumps(shown.data)
    parts = []
    if shown.header:
        parts.append(table(shown.header, shown.rows) if shown.rows else "(none)")
    if shown.note:
        parts.append(shown.note)
    return "\n".join(parts)


def parser() -> argparse.ArgumentParser:
    # The options may come before or after the command: both parsers know them.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help="the gateway (default: GRID_GATEWAY_URL, else http://127.0.0.1:8000)")
    common.add_argument("--token", default=argparse.SUPPRESS,
                        help="admin token sent as a bearer token (default: GRID_ADMIN_TOKEN)")
    common.add_argument("--timeout", type=_positive, default=argparse.SUPPRESS,
                        help="seconds per call (default: GRID_CLIENT_TIMEOUT_S, else 10)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON instead of a table")
    top = argparse.ArgumentParser(prog="grid", parents=[common],
                                  description="Ask the grid gateway.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, description=text, parents=[common])

    command("nodes", "ids of the live nodes")
    command("search", "nodes holding a tensor with every tag").add_argument(
        "tags", nargs="+", metavar="TAG")
    command("model", "nodes hosting a model").add_argument("model_id", metavar="ID")
    command("encrypted", "nodes hosting an encrypted model, with their shares").add_argument(
        "model_id", metavar="ID")
    command("models", "every model id of the live nodes")
    command("tags", "every tag of the live nodes")
    command("choose", "nodes to host a model").add_argument(
        "--encrypted", action="store_true", help="SMPC workers, crypto provider and host")
    for name, text in (("join", "register a node"), ("delete", "remove a node")):
        sub = command(name, text)
        sub.add_argument("node_id", metavar="ID")
        sub.add_argument("address", metavar="ADDRESS")
    return top


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def failure(exc: Exception) -> str:
    """One line for stderr: the gateway's message, or which setting is wrong."""
    if isinstance(exc, ValidationError):  # a GRID_* variable that does not parse
        error = exc.errors()[0]
        return "GRID_" + "_".join(map(str, error["loc"])).upper() + f": {error['msg']}"
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with GridClient(getattr(args, "url", None), token=getattr(args, "token", None),
                        timeout=getattr(args, "timeout", None)) as grid:
            shown = COMMANDS[args.command](grid, args)
    except (GatewayError, ValidationError, httpx.InvalidURL) as exc:
        print(f"error: {failure(exc)}", file=sys.stderr)
        return 1
    print(render(shown, getattr(args, "json", False)))
    return 0
