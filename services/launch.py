"""``grid-gateway SERVICE``: run one of the gateway's processes (api, registry, search, bridge).

The same as ``python -m services.SERVICE``; the settings come from the environment
(``AMQP_URL``, ``GRID_*``; see the README). Each process needs the ``server`` extra:
``pip install 'grid-gateway[server]'``.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from collections.abc import Sequence

SERVICES = {
    "api": "the HTTP API (uvicorn, GRID_API_HOST:GRID_API_PORT)",
    "registry": "the registry worker (the node store: SQLite or PostgreSQL)",
    "search": "the scatter-gather search worker",
    "bridge": "the HTTP bridge for nodes that speak only HTTP (optional)",
}
SERVER_PACKAGES = {"fastapi", "uvicorn", "asyncpg", "prometheus_client", "aiohttp"}


def parser() -> argparse.ArgumentParser:
    services = "\n".join(f"  {name:<9} {text}" for name, text in SERVICES.items())
    return argparse.ArgumentParser(
        prog="grid-gateway", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run one process of the grid gateway, configured by AMQP_URL and GRID_*.",
        epilog=f"services:\n{services}")


def main(argv: Sequence[str] | None = None) -> int:
    cli = parser()
    cli.add_argument("service", choices=SERVICES, metavar="SERVICE",
                     help="one of: " + ", ".join(SERVICES))
    service = cli.parse_args(argv).service
    try:
        runpy.run_module(f"services.{service}", run_name="__main__", alter_sys=True)
    except ModuleNotFoundError as exc:
        if exc.name not in SERVER_PACKAGES:
            raise
        print(f"grid-gateway {service} needs the server's packages ({exc.name} is missing):\n"
              "  pip install 'grid-gateway[server]'", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
