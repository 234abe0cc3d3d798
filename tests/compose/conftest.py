"""The compose suite's engine, the project's image, and the rule for running or skipping.

``GRID_TEST_COMPOSE=0`` skips the suite and ``=1`` requires it; under CI (``CI=true``) it is
required too. Otherwise it runs wherever it can (root with apt-get, as on this kind of
machine) and is skipped, saying why, elsewhere. Required and impossible fails loudly.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator

import pytest

from tests.compose.engine import Engine, EngineError, podman
from tests.compose.stack import Launcher, Stack, StackError

# Test module -> the project it runs: (profile, `up -d` arguments, seconds to become ready).
PLANS: dict[str, tuple[str | None, tuple[str, ...], float]] = {
    "test_default_stack": (None, (), 180.0),
    "test_cluster_stack": ("cluster", ("--scale", "cluster-api=2", "cluster-proxy",
                                       "cluster-registry", "cluster-search"), 240.0),
}
IMAGE = "grid-gateway:latest"  # the compose file's image: name


def _required() -> bool:
    return (os.environ.get("GRID_TEST_COMPOSE") == "1"
            or os.environ.get("CI", "").lower() == "true")


def _cannot_run() -> str | None:
    """Why this machine cannot run the suite, or None."""
    if not sys.platform.startswith("linux"):
        return "compose suite needs Linux (rootful podman)"
    if os.geteuid() != 0:
        return "compose suite needs root (rootful podman, apt-get)"
    if shutil.which("podman") is None and shutil.which("apt-get") is None:
        return "compose suite needs podman, or apt-get to install it"
    return None


@pytest.fixture(scope="package")
def engine() -> Iterator[Engine]:
    """podman serving Docker's API on a socket of its own, healthchecks run; stopped after."""
    if os.environ.get("GRID_TEST_COMPOSE") == "0":
        pytest.skip("GRID_TEST_COMPOSE=0")
    reason = _cannot_run()
    if reason is not None:
        if _required():
            pytest.fail(f"{reason} (required: GRID_TEST_COMPOSE=1 or CI=true)", pytrace=False)
        pytest.skip(f"{reason}; GRID_TEST_COMPOSE=1 requires it")
    running = Engine()
    try:
        running.start()
    except EngineError as exc:
        running.stop()
        pytest.fail(f"the compose suite's engine: {exc}", pytrace=False)
    try:
        yield running
    finally:
        running.stop()


def _image_id() -> str | None:
    found = podman("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).strip()
    return found or None


@pytest.fixture(scope="package")
def gateway_image(engine: Engine) -> str:
    """The project's Dockerfile built for real (grid-gateway:latest); the image it replaces
    is removed when nothing uses it."""
    before = _image_id()
    try:
        Stack(engine.service.docker_host).compose("build", "api")
    except StackError as exc:
        pytest.fail(f"building the Dockerfile: {exc}", pytrace=False)
    after = _image_id()
    if before and before != after:
        podman("rmi", before, check=False)
    return after or IMAGE


@pytest.fixture(scope="package")
def launcher(request: pytest.FixtureRequest, engine: Engine,
             gateway_image: str) -> Iterator[Launcher]:
    """The projects of every selected test module, started side by side at once."""
    selected = {item.module.__name__.rpartition(".")[2] for item in request.session.items}
    running = Launcher(engine.service.docker_host,
                       {name: plan for name, plan in PLANS.items() if name in selected})
    try:
        yield running
    finally:
        running.down_all()



@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, launcher: Launcher) -> Iterator[Stack]:
    """The project of the requesting test module (PLANS), taken down after its tests."""
    yield from launcher.lease(request.module.__name__.rpartition(".")[2])
