"""docker-compose.yml runs on Docker and on podman alike, beside whatever holds the usual ports.

Regression tests for what running it on podman showed (tests/compose/ runs it for real):
fixed host ports that collide with a local broker, a healthcheck argument podman split at its
spaces, and an nginx resolver that only exists on Docker.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_compose import COMPOSE_FILE, ROOT, compose_command, mounts

PROXY_SCRIPT = ROOT / "compose" / "cluster-proxy.sh"
PORT = re.compile(r"^\$\{(GRID_[A-Z0-9_]+):-(\d+)\}:(\d+)$")
# Service -> (host port variable, today's default, container port), for each published port.
PUBLISHED = {
    "rabbitmq": [("GRID_AMQP_PORT", 5672, 5672), ("GRID_MANAGEMENT_PORT", 15672, 15672)],
    "api": [("GRID_API_PORT", 8000, 8000)],
    "rabbit-1": [("GRID_CLUSTER_AMQP_PORT_1", 5681, 5672),
                 ("GRID_CLUSTER_MANAGEMENT_PORT", 15681, 15672)],
    "rabbit-2": [("GRID_CLUSTER_AMQP_PORT_2", 5682, 5672)],
    "rabbit-3": [("GRID_CLUSTER_AMQP_PORT_3", 5683, 5672)],
    "cluster-proxy": [("GRID_PROXY_PORT", 8000, 8000)],
}


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(variable, default, container port) of each published port; fails on a fixed one."""
    found = []
    for entry in service.get("ports") or []:
        match = PORT.match(str(entry))
        assert match, f"not a ${{VARIABLE:-default}}:port entry: {entry!r}"
        found.append((match[1], int(match[2]), int(match[3])))
    return found


def test_every_published_port_is_a_variable_with_todays_default(
        services: dict[str, dict[str, Any]]) -> None:
    found = {name: published(service) for name, service in services.items()
             if service.get("ports")}
    assert found == PUBLISHED


def test_the_port_variables_move_the_published_ports() -> None:
    command = compose_command()
    assert command is not None, "docker-compose is not installed (apt-get install docker-compose)"
    moved = {variable: str(20000 + n) for n, (variable, _, _) in
             enumerate(port for ports in PUBLISHED.values() for port in ports)}
    done = subprocess.run([*command, "-f", str(COMPOSE_FILE), "--profile", "cluster", "config"],
                          cwd=ROOT, env={**os.environ, **moved}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)["services"]
    for name, ports in PUBLISHED.items():
        got = sorted((int(p["published"]), int(p["target"])) for p in config[name]["ports"])
        assert got == sorted((int(moved[v]), target) for v, _, target in ports), name


def test_healthcheck_arguments_hold_no_spaces(services: dict[str, dict[str, Any]]) -> None:
    # podman's Docker API splits a CMD check's arguments at spaces (containers/podman#26519).
    checked = {name: service["healthcheck"]["test"] for name, service in services.items()
               if service.get("healthcheck")}
    assert {"rabbitmq", "postgres", "api", "cluster-api", "cluster-proxy"} <= set(checked)
    for name, test in checked.items():
        assert test[0] == "CMD", (name, test)
        spaced = [argument for argument in test if re.search(r"\s", argument)]
        assert not spaced, f"{name}: {spaced}"


def test_the_api_healthcheck_is_python_that_probes_healthz(
        services: dict[str, dict[str, Any]]) -> None:
    for name in ("api", "cluster-api"):
        test = services[name]["healthcheck"]["test"]
        assert test[1:3] == ["python", "-c"] and "/healthz" in test[3], test
        compile(test[3], f"{name} healthcheck", "exec")  # valid Python as one argument


def test_the_proxy_takes_its_resolver_from_the_container(
        services: dict[str, dict[str, Any]]) -> None:
    proxy = services["cluster-proxy"]
    script = next(target for target, source in mounts(proxy).items() if source == PROXY_SCRIPT)
    assert proxy["entrypoint"] == ["/bin/sh", script]
    conf = (ROOT / "compose" / "cluster-proxy.conf").read_text()
    assert not re.search(r"^\s*resolver\b", conf, re.MULTILINE), "a fixed resolver is back"


def run_proxy_script(tmp_path: Path, resolv_conf: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "resolv.conf").write_text(resolv_conf)
    env = {**os.environ, "RESOLV_CONF": str(tmp_path / "resolv.conf"),
           "RESOLVER_CONF": str(tmp_path / "resolver.conf")}
    return subprocess.run(["sh", str(PROXY_SCRIPT), "true"], env=env, capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize(("resolv_conf", "resolver"), [
    ("nameserver 127.0.0.11\noptions ndots:0\n", "resolver 127.0.0.11 valid=5s ipv6=off;"),
    # Only the network's own server: nginx would ask the host's in turn, which knows no service.
    ("search dns.podman\nnameserver 10.89.0.1\nnameserver 192.0.2.53\n",
     "resolver 10.89.0.1 valid=5s ipv6=off;"),
    ("nameserver fd00::1\nnameserver 10.89.0.1\n", "resolver [fd00::1] valid=5s ipv6=off;"),
])
def test_the_proxy_script_writes_the_resolv_conf_nameservers(
        tmp_path: Path, resolv_conf: str, resolver: str) -> None:
    done = run_proxy_script(tmp_path, resolv_conf)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "resolver.conf").read_text().strip() == resolver


def test_the_proxy_script_refuses_a_resolv_conf_without_nameserver(tmp_path: Path) -> None:
    done = run_proxy_script(tmp_path, "search example\n")
    assert done.returncode == 1 and "no nameserver" in done.stderr
    assert not (tmp_path / "resolver.conf").exists()
