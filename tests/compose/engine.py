"""The container engine the compose suite drives: rootful podman serving Docker's API.

``engine.sh prepare`` installs what is missing and builds the stand-in base images (kept
between runs). This module then starts ``podman system service`` on a socket of its own and,
since podman runs healthchecks from systemd timers and there is no systemd here, a runner
that calls ``podman healthcheck run`` for every container with a check. Both stop at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ENGINE_SH = HERE / "engine.sh"
SOCKET_DIR = Path("/run/grid-compose")
PREPARE_TIMEOUT_S = 540.0
START_TIMEOUT_S = 20.0
STARTING_EVERY_S = 2.0  # how often a container still starting is checked
CHECK_TIMEOUT_S = 30.0


class EngineError(RuntimeError):
    """The engine could not be set up or started: the suite fails with this message."""


def podman(*args: str, timeout: float = 60.0, check: bool = True) -> str:
    """Run the podman CLI; its output, or EngineError with its stderr."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise EngineError(f"podman {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def prepare() -> None:
    """Packages, the engine's configuration and the stand-in images (engine.sh prepare)."""
    try:
        done = subprocess.run([str(ENGINE_SH), "prepare"], capture_output=True, text=True,
                              timeout=PREPARE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"engine.sh prepare took over {PREPARE_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        raise EngineError(f"engine.sh prepare failed ({done.returncode}):\n{done.stderr}")


class EngineService:
    """``podman system service`` on its own socket, for the compose tool's DOCKER_HOST."""

    def __init__(self) -> None:
        self.socket = SOCKET_DIR / f"podman-{os.getpid()}.sock"
        self.docker_host = f"unix://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the service and wait (bounded) until it answers /_ping."""
        SOCKET_DIR.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            ["podman", "system", "service", "--time=0", self.docker_host],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EngineError(f"podman system service did not answer on {self.socket}")
            time.sleep(0.2)

    def _answers(self) -> bool:
        transport = httpx.HTTPTransport(uds=str(self.socket))
        try:
            with httpx.Client(transport=transport, timeout=2) as client:
                return client.get("http://engine/_ping").text == "OK"
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """Stop the service this object started, and remove its socket."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.socket.unlink(missing_ok=True)


class HealthcheckRunner:
    """Runs each running container's healthcheck: every 2 s while it starts, then at its
    own interval (what podman's systemd timers would do)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="healthcheck")
        self._running: dict[str, Future[None]] = {}
        self._last: dict[str, float] = {}
        self._intervals: dict[str, float] = {}
        self._thread = threading.Thread(target=self._loop, name="healthchecks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and wait for the checks in flight (each bounded)."""
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=CHECK_TIMEOUT_S + 5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                for container, status in self._checked_containers():
                    if self._due(container, status):
                        self._launch(container)
            except (EngineError, subprocess.TimeoutExpired, ValueError):
                continue  # the engine is busy or a container went away: try again

    def _checked_containers(self) -> list[tuple[str, str]]:
        """(id, health) of every running container that has a healthcheck."""
        listed = json.loads(podman("ps", "--format", "json", timeout=20) or "[]")
        found = []
        for container in listed:
            status = container.get("Status", "")
            for health in ("starting", "unhealthy", "healthy"):
                if f"({health})" in status:
                    found.append((container["Id"], health))
                    break
        return found

    def _due(self, container: str, health: str) -> bool:
        if container in self._running and not self._running[container].done():
            return False
        every = STARTING_EVERY_S if health == "starting" else self._interval(container)
        return time.monotonic() - self._last.get(container, 0.0) >= every

    def _interval(self, container: str) -> float:
        if container not in self._intervals:
            found = podman("inspect", "--format", "{{json .Config.Healthcheck.Interval}}",
                           container, timeout=20).strip()
            self._intervals[container] = max(int(found or 0) / 1e9, STARTING_EVERY_S)
        return self._intervals[container]

    def _launch(self, container: str) -> None:
        self._last[container] = time.monotonic()
        self._running[container] = self._pool.submit(
            podman, "healthcheck", "run", container, timeout=CHECK_TIMEOUT_S, check=False)


class Engine:
    """The prepared machine, the service and the healthcheck runner, started and stopped."""

    def __init__(self) -> None:
        self.service = EngineService()
        self.healthchecks = HealthcheckRunner()

    def start(self) -> None:
        prepare()
        self.service.start()
        self.healthchecks.start()

    def stop(self) -> None:
        self.healthchecks.stop()
        self.service.stop()
