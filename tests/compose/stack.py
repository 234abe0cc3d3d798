"""One compose project: docker-compose.yml run by the compose tool on the suite's engine.

Each project has a unique name and publishes every port on a free host port (through the
compose file's port variables), so it collides neither with the machine's own broker and
API nor with another run. ``down`` removes its containers, networks and volumes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import httpx

from tests.compose.engine import podman

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
# The compose file's host port variables (docs/operations.md, "Host ports").
PORT_VARIABLES = ("GRID_API_PORT", "GRID_AMQP_PORT", "GRID_MANAGEMENT_PORT", "GRID_PROXY_PORT",
                  "GRID_CLUSTER_AMQP_PORT_1", "GRID_CLUSTER_AMQP_PORT_2",
                  "GRID_CLUSTER_AMQP_PORT_3", "GRID_CLUSTER_MANAGEMENT_PORT")
COMPOSE_TIMEOUT_S = 300.0
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


class StackError(RuntimeError):
    """A compose command failed; the message holds its output."""


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(check: Callable[[], Any], within: float, what: str, every: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            last = check()
        except (httpx.HTTPError, StackError, ValueError, KeyError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s (last: {last!r})")
        time.sleep(every)


class Stack:
    """A compose project of docker-compose.yml on the engine at ``docker_host``."""

    def __init__(self, docker_host: str, profile: str | None = None) -> None:
        self.project = f"gridtest{uuid.uuid4().hex[:10]}"
        self.profile = profile
        self.ports = {name: free_port() for name in PORT_VARIABLES}
        self.env = {**os.environ, **{name: str(port) for name, port in self.ports.items()},
                    "DOCKER_HOST": docker_host, "COMPOSE_PROJECT_NAME": self.project,
                    "COMPOSE_HTTP_TIMEOUT": "300"}

    def compose(self, *args: str, timeout: float = COMPOSE_TIMEOUT_S) -> str:
        """Run the compose tool on this project; its output, or StackError."""
        profile = ["--profile", self.profile] if self.profile else []
        command = ["docker-compose", "-f", str(COMPOSE_FILE), *profile, *args]
        done = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise StackError(f"{' '.join(args)} failed ({done.returncode}):\n"
                             f"{done.stdout}{done.stderr}\n{self.logs_tail()}")
        return done.stdout + done.stderr

    def up(self, *args: str) -> None:
        self.compose("up", "-d", *args)

    def start(self, *args: str, within: float) -> None:
        """``up -d`` and wait (bounded) until every container runs and is healthy."""
        self.up(*args)
        wait_for(self.require_ready, within, "every container running and healthy")

    def down(self) -> None:
        """Remove everything of the project, even what the compose tool missed. The
        containers are killed first: a graceful stop of each would only cost time here."""
        label = f"label={PROJECT_LABEL}={self.project}"
        try:
            running = podman("ps", "-aq", "--filter", label, check=False).split()
            if running:
                podman("rm", "-f", "-t", "0", *running, check=False, timeout=120)
            self.compose("down", "-v", "--remove-orphans", "-t", "5", timeout=180)
        finally:
            listings = {"container": ("ps", "-aq"), "volume": ("volume", "ls", "-q"),
                        "network": ("network", "ls", "-q")}
            for kind, listing in listings.items():
                names = podman(*listing, "--filter", label, check=False).split()
                if names:
                    podman(kind, "rm", "-f", *names, check=False)

    def containers(self, service: str | None = None) -> list[dict[str, Any]]:
        """The project's containers (podman ps JSON), of one service if given."""
        found = json.loads(podman("ps", "-a", "--format", "json", "--filter",
                                  f"label={PROJECT_LABEL}={self.project}") or "[]")
        if service is not None:
            found = [c for c in found if (c.get("Labels") or {}).get(SERVICE_LABEL) == service]
        return found

    def ids(self, service: str) -> list[str]:
        return [c["Id"] for c in self.containers(service)]

    def unready(self) -> list[str]:
        """Containers not running, or with a healthcheck not (yet) healthy."""
        return [f"{c['Names'][0]}: {c['Status']}" for c in self.containers()
                if c["State"] != "running" or "(starting)" in c["Status"]
                or "(unhealthy)" in c["Status"]]

    def require_ready(self) -> bool:
        """True when every container is ready, else StackError naming those that are not."""
        pending = self.unready()
        if pending or not self.containers():
            raise StackError(f"not ready: {pending}")
        return True

    def exec(self, container: str, *command: str) -> str:
        return podman("exec", container, *command, timeout=60)

    def url(self, variable: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[variable]}{path}"

    def client(self, variable: str) -> httpx.Client:
        """An HTTP client of what the project publishes on the port ``variable`` names."""
        return httpx.Client(base_url=self.url(variable), timeout=30)

    def logs_tail(self) -> str:
        """The last lines of every container's log, for a failure's message."""
        lines = []
        for container in self.containers():
            log = subprocess.run(["podman", "logs", "--tail", "15", container["Id"]],
                                 capture_output=True, text=True, timeout=20)
            log = log.stdout + log.stderr
            lines.append(f"--- {container['Names'][0]} ({container['Status']})\n{log}")
        return "\n".join(lines)


class Launcher:
    """Starts several projects side by side (their start-up is mostly waiting on each other's
    healthchecks), hands each to its tests, and takes down whatever is left at the end."""

    def __init__(self, docker_host: str,
                 plans: dict[str, tuple[str | None, tuple[str, ...], float]]) -> None:
        self.stacks = {name: Stack(docker_host, profile) for name, (profile, _, _)
                       in plans.items()}
        self._pool = ThreadPoolExecutor(max_workers=max(len(plans), 1))
        self._started = {name: self._pool.submit(self.stacks[name].start, *args, within=within)
                         for name, (_, args, within) in plans.items()}

    def get(self, name: str) -> Stack:
        """The started project ``name``, once every start-up has ended: containers starting
        in one project make podman's DNS reload for all (a 502 through the cluster proxy was
        seen once while the other project was still starting). Its start-up's error if any."""
        wait(self._started.values(), timeout=COMPOSE_TIMEOUT_S * 2)
        self._started[name].result(timeout=0)
        return self.stacks[name]

    def lease(self, name: str) -> Iterator[Stack]:
        """For a module's fixture: project ``name``, taken down after, also on failure."""
        try:
            yield self.get(name)
        finally:
            self.down(name)

    def down(self, name: str) -> None:
        """Take one project down (once), after its start-up has ended either way."""
        stack = self.stacks.pop(name, None)
        if stack is not None:
            wait([self._started[name]], timeout=COMPOSE_TIMEOUT_S * 2)
            stack.down()

    def down_all(self) -> None:
        try:
            for name in list(self.stacks):
                self.down(name)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
