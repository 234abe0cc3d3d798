"""docker-compose.yml: the structure operators rely on, checked without a Docker engine.

Compose only checks its own schema, so a misspelt ``GRID_*`` variable or an
inventory path that does not exist would pass ``docker compose config`` and
fail silently at run time; these tests catch that. No broker is needed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from services.node.inventory import Inventory
from shared import settings as settings_module

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
WORKERS = ("registry", "search")
DEMO_NODES = ("alice", "bob", "carol")
HEALTHCHECKED = ("rabbitmq", "postgres", "api")
# Off unless started with --profile bridge: the HTTP bridge and an HTTP-only node.
BRIDGE_PROFILE = ("bridge", "dora")
SERVICES = ("rabbitmq", "postgres", "api", *WORKERS, *DEMO_NODES, *BRIDGE_PROFILE)
# A setting's name in a compose file: AMQP_URL or GRID_ followed by capitals.
SETTING_NAME = re.compile(r"\b(?:AMQP_URL|GRID_[A-Z0-9_]+)\b")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    """The services of docker-compose.yml, YAML anchors and merge keys resolved."""
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def env_names(settings_class: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads (its aliases, else prefix + name)."""
    prefix = settings_class.model_config.get("env_prefix", "")
    names = set()
    for field_name, field in settings_class.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice for choice in alias.choices if isinstance(choice, str)}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def known_settings() -> set[str]:
    """Every environment variable read by any settings class in shared/settings.py."""
    classes = [value for value in vars(settings_module).values()
               if isinstance(value, type) and issubclass(value, BaseSettings)
               and value is not BaseSettings]
    return set().union(*(env_names(cls) for cls in classes))


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment, written as a mapping or as a list of NAME=value."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def option(command: list[str], name: str) -> str:
    """The value following ``name`` in an exec-form command."""
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def test_known_settings_cover_the_documented_names() -> None:
    assert {"AMQP_URL", "GRID_NAMESPACE", "GRID_DATABASE_URL", "GRID_API_HOST",
            "GRID_METRICS_PORT", "GRID_GATEWAY_URL", "GRID_LOG_LEVEL"} <= known_settings()
    assert "GRID_NAMESPCE" not in known_settings()


def test_every_service_exists(services: dict[str, dict[str, Any]]) -> None:
    assert set(SERVICES) <= set(services), f"missing: {set(SERVICES) - set(services)}"


@pytest.mark.parametrize("name", (*WORKERS, "bridge"))
def test_workers_can_scale(services: dict[str, dict[str, Any]], name: str) -> None:
    # A fixed container name or host port would make --scale fail on the second replica.
    assert "container_name" not in services[name]
    assert "ports" not in services[name]


def test_dependencies_wait_until_healthy(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        for dependency in set(HEALTHCHECKED) & set(depends_on):
            assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
            condition = (depends_on[dependency] or {}).get("condition")
            assert condition == "service_healthy", f"{name} -> {dependency}: {condition}"


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    assert {"rabbitmq", "postgres"} <= set(services["registry"]["depends_on"])
    assert "rabbitmq" in services["search"]["depends_on"]
    assert "rabbitmq" in services["api"]["depends_on"]
    for node in DEMO_NODES:
        assert "api" in services[node]["depends_on"]


@pytest.mark.parametrize("name", HEALTHCHECKED)
def test_healthchecks(services: dict[str, dict[str, Any]], name: str) -> None:
    check = services[name].get("healthcheck") or {}
    assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_api_healthcheck_probes_healthz(services: dict[str, dict[str, Any]]) -> None:
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])


def test_setting_names_in_the_file_are_real() -> None:
    # ${GRID_..._PORT:-...} interpolations are host ports (test_compose_portability.py).
    text = re.sub(r"\$\{[^}]*\}", "", COMPOSE_FILE.read_text())
    used = set(SETTING_NAME.findall(text))
    assert used, "no setting found in docker-compose.yml"
    assert used <= known_settings(), f"not settings: {sorted(used - known_settings())}"


def test_our_containers_set_only_real_settings(services: dict[str, dict[str, Any]]) -> None:
    # Our image reads nothing but its settings, so any other variable is a typo.
    ours = {name: service for name, service in services.items() if "build" in service}
    assert set(ours) >= {"api", *WORKERS, *DEMO_NODES}
    for name, service in ours.items():
        unknown = set(environment(service)) - known_settings()
        assert not unknown, f"{name}: not settings: {sorted(unknown)}"


def test_registry_uses_postgres(services: dict[str, dict[str, Any]]) -> None:
    url = environment(services["registry"])["GRID_DATABASE_URL"]
    assert url.startswith("postgresql://") and "@postgres:" in url


def test_api_listens_on_every_interface(services: dict[str, dict[str, Any]]) -> None:
    assert environment(services["api"])["GRID_API_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("name", DEMO_NODES)
def test_demo_nodes(services: dict[str, dict[str, Any]], name: str) -> None:
    node = services[name]
    command = node["command"]
    assert command[:3] == ["python", "-m", "services.node"]
    assert option(command, "--id") == name
    assert option(command, "--address") == f"http://{name}:5000"
    inventory = ROOT / option(command, "--inventory")  # the image's workdir holds examples/
    assert inventory.parent == ROOT / "examples" and inventory.is_file(), inventory
    Inventory.from_file(inventory)  # raises if the file is not a valid inventory
    assert environment(node)["GRID_GATEWAY_URL"] == "http://api:8000"


def test_the_bridge_profile_is_off_by_default(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        profiles = service.get("profiles") or []
        if name in BRIDGE_PROFILE:
            assert profiles == ["bridge"], name
        else:
            assert "bridge" not in profiles, f"{name}: {profiles}"
    default_stack = set(SERVICES) - set(BRIDGE_PROFILE)
    assert not any(services[name].get("profiles") for name in default_stack)


def test_bridge_service(services: dict[str, dict[str, Any]]) -> None:
    bridge = services["bridge"]
    assert bridge["command"] == ["python", "-m", "services.bridge"]
    assert "rabbitmq" in bridge["depends_on"]
    assert environment(bridge)["GRID_METRICS_PORT"] == "9100"


def test_http_only_demo_node(services: dict[str, dict[str, Any]]) -> None:
    command = services["dora"]["command"]
    assert command[:3] == ["python", "-m", "services.node.httpnode"]
    assert "--join" in command and option(command, "--id") == "dora"
    assert option(command, "--host") == "0.0.0.0"
    assert option(command, "--public-url") == f"http://dora:{option(command, '--port')}"
    Inventory.from_file(ROOT / option(command, "--inventory"))
    assert environment(services["dora"])["GRID_GATEWAY_URL"] == "http://api:8000"
    assert "api" in services["dora"]["depends_on"]


def compose_command() -> list[str] | None:
    """``docker compose`` (the v2 plugin) or ``docker-compose``; None when neither exists."""
    docker = shutil.which("docker")
    if docker is not None and subprocess.run([docker, "compose", "version"],
                                             capture_output=True, timeout=30).returncode == 0:
        return [docker, "compose"]
    binary = shutil.which("docker-compose")
    return [binary] if binary is not None else None


def test_docker_compose_validates_the_file() -> None:
    command = compose_command()
    if command is None:
        pytest.fail("neither `docker compose` nor docker-compose is on PATH: install Debian's "
                    "docker-compose package (apt-get install docker-compose) to validate "
                    "docker-compose.yml; it needs no Docker engine", pytrace=False)
    done = subprocess.run([*command, "-f", str(COMPOSE_FILE), "config", "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"compose config failed:\n{done.stdout}{done.stderr}"


# --- profile "cluster": three RabbitMQ nodes, the gateway on them, API replicas behind a proxy

CLUSTER_NODES = ("rabbit-1", "rabbit-2", "rabbit-3")
CLUSTER_GATEWAY = ("cluster-registry", "cluster-search", "cluster-api")
CLUSTER_CONF = ROOT / "compose" / "rabbitmq-cluster.conf"
PROXY_CONF = ROOT / "compose" / "cluster-proxy.conf"


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host file of a service's bind mounts (short syntax)."""
    found = {}
    for volume in service.get("volumes") or []:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def conf_entries(path: Path) -> dict[str, str]:
    """``key = value`` lines of a rabbitmq.conf-style file."""
    lines = [line.split("=", 1) for line in path.read_text().splitlines()
             if "=" in line and not line.lstrip().startswith("#")]
    return {key.strip(): value.strip() for key, value in lines}


def test_cluster_profile_holds_its_services_only(services: dict[str, dict[str, Any]]) -> None:
    for name in (*CLUSTER_NODES, *CLUSTER_GATEWAY, "cluster-proxy"):
        assert services[name].get("profiles") == ["cluster"], name
    for name in SERVICES:  # the default stack is untouched by the profile
        assert "cluster" not in (services[name].get("profiles") or []), name


def test_cluster_nodes_share_a_cookie_and_name_themselves(
        services: dict[str, dict[str, Any]]) -> None:
    cookies = {environment(services[name]).get("RABBITMQ_ERLANG_COOKIE") for name in CLUSTER_NODES}
    assert len(cookies) == 1 and None not in cookies, cookies
    for name in CLUSTER_NODES:
        node = services[name]
        assert node["hostname"] == name
        assert environment(node)["RABBITMQ_NODENAME"] == f"rabbit@{name}"
        assert node["healthcheck"]["test"], name


def test_cluster_peer_discovery_lists_every_node(services: dict[str, dict[str, Any]]) -> None:
    entries = conf_entries(CLUSTER_CONF)
    assert entries["cluster_formation.peer_discovery_backend"] == "classic_config"
    listed = {value for key, value in entries.items()
              if key.startswith("cluster_formation.classic_config.nodes.")}
    assert listed == {f"rabbit@{name}" for name in CLUSTER_NODES}
    for name in CLUSTER_NODES:
        assert CLUSTER_CONF in mounts(services[name]).values(), f"{name} does not mount it"
        target = next(t for t, f in mounts(services[name]).items() if f == CLUSTER_CONF)
        assert target.startswith("/etc/rabbitmq/conf.d/"), target
    # The first node forms the cluster; the others wait for it, then join it.
    for name in CLUSTER_NODES[1:]:
        assert services[name]["depends_on"]["rabbit-1"]["condition"] == "service_healthy"


def test_cluster_gateway_uses_every_node_and_quorum_queues(
        services: dict[str, dict[str, Any]]) -> None:
    firsts = set()
    for name in CLUSTER_GATEWAY:
        env = environment(services[name])
        assert env["GRID_QUEUE_TYPE"] == "quorum", name
        settings = settings_module.BaseGridSettings(amqp_url=env["AMQP_URL"])  # validates it
        hosts = [urlsplit(url).hostname for url in settings.amqp_urls]
        assert sorted(hosts) == sorted(CLUSTER_NODES), (name, hosts)
        firsts.add(hosts[0])
        depends_on = services[name]["depends_on"]
        for node in CLUSTER_NODES:  # quorum queues declared before a node joins miss it
            assert depends_on[node]["condition"] == "service_healthy", (name, node)
    assert len(firsts) == len(CLUSTER_GATEWAY), "each service should start on another node"


def test_cluster_api_scales_behind_the_proxy(services: dict[str, dict[str, Any]]) -> None:
    api = services["cluster-api"]
    # A host port can be published by one container only: replicas publish none.
    assert "container_name" not in api and "ports" not in api
    assert environment(api)["GRID_API_HOST"] == "0.0.0.0"
    proxy = services["cluster-proxy"]
    assert proxy["ports"] == ["${GRID_PROXY_PORT:-8000}:8000"]
    assert PROXY_CONF in mounts(proxy).values()
    text = PROXY_CONF.read_text()
    # The resolver (re-read: follows --scale) is the container's own, written at start.
    assert "http://cluster-api:8000" in text


def test_docker_compose_validates_the_cluster_profile() -> None:
    command = compose_command()
    if command is None:
        pytest.fail("neither `docker compose` nor docker-compose is on PATH (apt-get install "
                    "docker-compose)", pytrace=False)
    done = subprocess.run([*command, "-f", str(COMPOSE_FILE), "--profile", "cluster", "config",
                           "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"compose config failed:\n{done.stdout}{done.stderr}"
