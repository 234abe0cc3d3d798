"""Running a worker process: event loop, signals, ordered start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Protocol

from shared.errors import GridError
from shared.logs import setup_logging
from shared.settings import BaseGridSettings

log = logging.getLogger(__name__)
STOP_AFTER_FAILED_START_S = 5.0


class Worker(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def serve_until_signal(worker: Worker, name: str) -> int:
    """Start ``worker``, run until SIGTERM or SIGINT, then stop it in order.

    Returns the process's exit status: 1 when it could not start (say, the
    broker is unreachable or its TLS certificate is not trusted), after one
    log line saying why.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker.start()
    except GridError as exc:
        log.error("cannot start", extra={"service": name, "error": exc.message})
        with contextlib.suppress(Exception):  # release what did start, best-effort
            await asyncio.wait_for(worker.stop(), STOP_AFTER_FAILED_START_S)
        return 1
    log.info("started", extra={"service": name})
    try:
        await stop.wait()
    finally:
        log.info("stopping", extra={"service": name})
        await worker.stop()
        log.info("stopped", extra={"service": name})
    return 0


def run(worker: Worker, name: str, settings: BaseGridSettings) -> None:
    """Entry point of a worker's ``__main__``: uvloop when available, JSON logs."""
    setup_logging(settings.log_level, settings.log_format)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        sys.exit(asyncio.run(serve_until_signal(worker, name)))
    else:
        sys.exit(uvloop.run(serve_until_signal(worker, name)))
