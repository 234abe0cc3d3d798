"""Child processes the benchmark starts: spawned in their own session, always stopped.

Every child is recorded in ``LIVE`` until it has exited; an ``atexit`` hook
kills whatever is left if the benchmark dies before its orderly shutdown.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIVE: set[int] = set()


@dataclass
class Child:
    name: str
    role: str  # api, registry, search or fleet
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


async def spawn(name: str, role: str, module: str, args: list[str], env: dict[str, str],
                log_dir: Path, stdout_pipe: bool = False) -> Child:
    """``python -m module args`` in the repository, stderr (and stdout) to a log file."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args,
            cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if stdout_pipe else log, stderr=log,
            start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops the rest
        )
    LIVE.add(process.pid)
    return Child(name, role, process, log_path)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # a child leads its own process group


async def stop(children: list[Child], grace_s: float = 10.0) -> None:
    """SIGTERM every child, then SIGKILL those still running after ``grace_s``."""
    running = [child for child in children if child.running]
    for child in running:
        _signal(child.pid, signal.SIGTERM)
    waits = [asyncio.ensure_future(child.process.wait()) for child in running]
    if waits:
        _, pending = await asyncio.wait(waits, timeout=grace_s)
        for child, wait in zip(running, waits, strict=True):
            if wait in pending:
                _signal(child.pid, signal.SIGKILL)
        if pending:
            await asyncio.wait(pending, timeout=5.0)
    for child in children:
        if not child.running:
            LIVE.discard(child.pid)


@atexit.register
def _kill_leftovers() -> None:
    for pid in list(LIVE):
        _signal(pid, signal.SIGKILL)
    LIVE.clear()
