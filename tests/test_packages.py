"""The packages a user installs alone, built as wheels and installed into fresh environments.

A node owner installs ``grid-gateway[node]`` and a researcher ``grid-gateway``
(the client and its CLI): neither environment holds the server's packages, and
both work against a running gateway. The wheels of their dependencies are the
versions this suite runs with (``pip freeze``), fetched once into a wheelhouse;
the environments then install from it alone (``--no-index``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib.metadata import version
from itertools import chain
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.harness import ROOT, Gateway, Harness, eventually

SERVER_PACKAGES = ("fastapi", "uvicorn", "asyncpg", "aiohttp", "prometheus_client")
NODE_PACKAGES = ("aio_pika", "aiormq", "pamqp", "orjson", "pydantic_settings")
INSTALL_S = 240.0
# The shell a test runs in may point at the project's own venv or source: not here.
CLEAN_ENV = {key: value for key, value in os.environ.items()
             if key not in ("PYTHONPATH", "VIRTUAL_ENV")}

pytestmark = pytest.mark.timeout(600)


@dataclass(frozen=True)
class Installed:
    """A fresh virtual environment holding one of the project's installs."""

    path: Path

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)

    def importable(self, *modules: str) -> set[str]:
        """Which of ``modules`` this environment's Python can import."""
        code = ("import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] "
                "if importlib.util.find_spec(m)))")
        out = run([self.bin("python"), "-c", code, *modules], cwd=self.path)
        return set(out.split())


def run(command: list[str], cwd: Path | str, timeout: float = INSTALL_S) -> str:
    """Run ``command`` to completion; fail the test with its output if it fails."""
    done = subprocess.run(command, cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_wheelhouse(house: Path) -> Path:
    """The project's wheel, and the wheels of the node's and client's dependencies."""
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(house), ROOT], ROOT)
    (wheel,) = house.glob("grid_gateway-*.whl")
    constraints = house / "constraints.txt"
    constraints.write_text(run([*pip, "freeze", "--exclude-editable"], ROOT))
    run([*pip, "download", "-q", "--only-binary=:all:", "-d", str(house),
         "-c", str(constraints), f"{wheel}[node]"], house)
    return house


def install(house: Path, where: Path, requirement: str) -> Installed:
    """A new virtual environment with ``requirement`` from the wheelhouse alone."""
    run([sys.executable, "-m", "venv", str(where)], where.parent)
    env = Installed(where)
    run([env.bin("python"), "-m", "pip", "install", "-q", "--no-index", "--find-links",
         str(house), requirement], where)
    return env


@pytest.fixture(scope="module")
def installs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Installed]:
    root = tmp_path_factory.mktemp("packages")
    house = build_wheelhouse(root / "wheelhouse")
    return {"node": install(house, root / "node-env", "grid-gateway[node]"),
            "client": install(house, root / "client-env", "grid-gateway")}


def test_the_node_install_has_no_server_package(installs: dict[str, Installed]) -> None:
    node = installs["node"]
    assert node.importable(*SERVER_PACKAGES) == set()
    assert node.importable(*NODE_PACKAGES, "httpx") == {*NODE_PACKAGES, "httpx"}
    done = subprocess.run([node.bin("python"), "-c", "import fastapi"], env=CLEAN_ENV,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "No module named 'fastapi'" in done.stderr


def test_the_client_install_is_http_only(installs: dict[str, Installed]) -> None:
    client = installs["client"]
    assert client.importable(*SERVER_PACKAGES, *NODE_PACKAGES) == set()
    assert client.importable("httpx", "pydantic") == {"httpx", "pydantic"}


def test_the_gateway_command_names_the_missing_extra(installs: dict[str, Installed]) -> None:
    node = installs["node"]
    done = subprocess.run([node.bin("grid-gateway"), "api"], cwd=node.path, env=CLEAN_ENV,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert "pip install 'grid-gateway[server]'" in done.stderr and "Traceback" not in done.stderr
    assert "usage: grid-gateway" in run([node.bin("grid-gateway"), "--help"], node.path)


async def grid(client: Installed, *args: str) -> tuple[int, str]:
    """The installed ``grid`` command's exit code and output (the gateway runs in this loop)."""
    process = await asyncio.create_subprocess_exec(
        client.bin("grid"), *args, cwd=client.path, env=CLEAN_ENV,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode()


async def nodes(client: Installed, url: str) -> list[str]:
    code, out = await grid(client, "nodes", "--json", "--url", url)
    assert code == 0, out
    return json.loads(out)


async def test_an_installed_node_and_client_work_against_the_gateway(
        installs: dict[str, Installed], harness: Harness, amqp_url: str,
        namespace: str) -> None:
    gateway: Gateway = await harness.gateway()
    url = gateway.api.url
    node = await asyncio.create_subprocess_exec(
        installs["node"].bin("grid-node"), "--id", "owned", "--address", "http://owned:5000",
        "--inventory", str(Path(ROOT) / "examples" / "alice.json"), "--leave",
        cwd=installs["node"].path, env={**CLEAN_ENV, "AMQP_URL": amqp_url,
                                        "GRID_NAMESPACE": namespace, "GRID_GATEWAY_URL": url,
                                        "GRID_LOG_LEVEL": "WARNING"})
    try:
        async def joined() -> bool:
            return await nodes(installs["client"], url) == ["owned"]

        await eventually(joined, within=30, interval=0.2)
        await gateway.wait_search_sees(1)
        code, out = await grid(installs["client"], "search", "#mnist", "#train", "--url", url)
        assert code == 0 and "owned" in out and "http://owned:5000" in out, out
    finally:
        if node.returncode is None:
            node.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(node.wait(), 30) == 0
    # --leave: the node deleted itself from the gateway on the way out.
    assert await nodes(installs["client"], url) == []


def locked(lock: str = "requirements.lock") -> dict[str, str]:
    """Each package of a lock file and its pinned version."""
    pins = {}
    for line in (Path(ROOT) / lock).read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            requirement = Requirement(line.split(" \\")[0].split(" ;")[0])
            pins[canonicalize_name(requirement.name)] = str(requirement.specifier).lstrip("=")
    return pins


def test_the_lock_pins_every_requirement_as_installed() -> None:
    project = tomllib.loads((Path(ROOT) / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *chain(*project["optional-dependencies"].values())]
    pins = locked()
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name == "grid-gateway":
            continue
        assert name in pins, f"{name} is in pyproject.toml but not in requirements.lock"
        assert requirement.specifier.contains(pins[name]), f"the lock's {name} {pins[name]} " \
            f"is outside pyproject.toml's {requirement.specifier}: run ./scripts/lock"
    # The bus reaches into these two: exactly the versions it was written against, installed.
    for name in ("aiormq", "pamqp"):
        assert version(name) == pins[name]


def test_the_image_lock_is_the_server_part_of_the_full_lock() -> None:
    full, server = locked(), locked("requirements-server.lock")
    assert {"fastapi", "asyncpg", "aiormq"} <= set(server) and "pytest" not in server
    assert {name: full.get(name) for name in server} == server, "run ./scripts/lock"
