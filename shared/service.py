"""Running a worker process: event loop, signals, ordered start and stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

from shared.logs import setup_logging
from shared.settings import BaseGridSettings

log = logging.getLogger(__name__)


class Worker(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def serve_until_signal(worker: Worker, name: str) -> None:
    """Start ``worker``, run until SIGTERM or SIGINT, then stop it in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.start()
    log.info("started", extra={"service": name})
    try:
        await stop.wait()
    finally:
        log.info("stopping", extra={"service": name})
        await worker.stop()
        log.info("stopped", extra={"service": name})


def run(worker: Worker, name: str, settings: BaseGridSettings) -> None:
    """Entry point of a worker's ``__main__``: uvloop when available, JSON logs."""
    setup_logging(settings.log_level, settings.log_format)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(serve_until_signal(worker, name))
    else:
        uvloop.run(serve_until_signal(worker, name))
