"""The gateway and a node over ``amqps://``, with the broker's certificate verified.

A private RabbitMQ node (tests/private_broker.py, never the shared broker)
gets a TLS listener with a CA and a server certificate the test makes
(tests/certs.py). API, registry, search worker and a node connect over TLS
only, and a node joins and is found. With a CA that did not sign the
broker's certificate, every process fails fast and says why, and clients
get a clear 503, never a hang or a traceback.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from yarl import URL

from localbroker.node import free_ports
from shared.bus import Bus
from shared.errors import BusUnavailable
from shared.settings import BaseGridSettings
from shared.tls import with_tls_files
from tests.certs import make_ca, make_server
from tests.harness import ROOT, Harness, eventually
from tests.private_broker import PrivateBroker, require_rabbitmq_scripts

pytestmark = [pytest.mark.slow]
# A process that cannot start must say so within this (it is not a timing assertion:
# a wrong CA fails at the handshake, in milliseconds; this only bounds a hang).
FAIL_WITHIN_S = 60.0
TLS_CONFIG = """\
listeners.ssl.default = 127.0.0.1:{port}
ssl_options.cacertfile = {ca}
ssl_options.certfile = {cert}
ssl_options.keyfile = {key}
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
"""


@dataclass
class TlsBroker:
    broker: PrivateBroker
    url: str  # amqps://, to the TLS listener only
    ca: Path  # the CA that signed the broker's certificate
    wrong_ca: Path  # a CA that did not


@pytest.fixture
async def tls_broker(tmp_path: Path) -> AsyncIterator[TlsBroker]:
    require_rabbitmq_scripts()
    certs = tmp_path / "certs"
    ca, other = make_ca(certs, "grid-test-ca"), make_ca(certs, "some-other-ca")
    server = make_server(certs, ca)
    broker = PrivateBroker(tmp_path / "broker")
    (port,) = free_ports(1)
    (broker.base / "rabbitmq.conf").write_text(TLS_CONFIG.format(
        port=port, ca=ca.cert, cert=server.cert, key=server.key))
    try:
        await broker.start()
        yield TlsBroker(broker, f"amqps://guest:guest@127.0.0.1:{port}/", ca.cert, other.cert)
    finally:
        await broker.close()


async def tls_connections(broker: PrivateBroker) -> list[str]:
    """Whether each client connection of the broker uses TLS ("true"/"false")."""
    output = await broker.ctl_ok("-q", "list_connections", "ssl")
    return [line.strip() for line in output.splitlines() if line.strip() in ("true", "false")]


async def test_the_gateway_and_a_node_work_over_tls(harness: Harness, tls_broker: TlsBroker
                                                    ) -> None:
    tls = {"amqp_url": tls_broker.url, "amqp_cafile": tls_broker.ca}
    gateway = await harness.gateway(registry=tls, search=tls, **tls)
    # The node names its CA in the URL, as aio-pika's own URLs do.
    await harness.node(gateway, "alice", {"models": ["m1"]},
                       amqp_url=f"{tls_broker.url}?cafile={tls_broker.ca}")
    await gateway.wait_search_sees(1)
    assert (await gateway.client.get("/search-available-models")).json() == ["m1"]
    listed = (await gateway.client.get("/connected-nodes")).json()
    assert listed == {"grid-nodes": ["alice"]}
    connections = await tls_connections(tls_broker.broker)
    assert len(connections) >= 4 and set(connections) == {"true"}  # api, workers, node


async def test_a_wrong_ca_fails_fast_and_says_why(harness: Harness, tls_broker: TlsBroker,
                                                   namespace: str, tmp_path: Path) -> None:
    wrong = {"amqp_url": tls_broker.url, "amqp_cafile": tls_broker.wrong_ca}
    bus = Bus(BaseGridSettings(namespace=namespace, **wrong), "grid-test")
    with pytest.raises(BusUnavailable) as refused:
        await bus.connect()
    assert "certificate was not accepted" in refused.value.message
    assert "GRID_AMQP_CAFILE" in refused.value.message

    api = await harness.api(**wrong)
    client = await harness.client(api)

    async def not_ready_for_tls() -> str | None:
        reason = (await client.get("/readyz")).json().get("reason") or ""
        return reason if "certificate" in reason else None

    assert "certificate verify failed" in await eventually(not_ready_for_tls)
    answer = await client.get("/search-available-models")
    assert answer.status_code == 503 and "Traceback" not in answer.text
    assert "broker" in answer.json()["message"]

    exited = await worker_without_the_right_ca(tls_broker, namespace, tmp_path)
    assert exited.returncode == 1
    log = exited.stderr.decode()
    assert "certificate verify failed" in log and "Traceback" not in log


async def worker_without_the_right_ca(tls_broker: TlsBroker, namespace: str, tmp_path: Path
                                      ) -> subprocess.CompletedProcess:
    """Run the registry worker as its own process with the wrong CA; it must exit."""
    env = {**os.environ, "AMQP_URL": tls_broker.url, "GRID_AMQP_CAFILE": str(tls_broker.wrong_ca),
           "GRID_NAMESPACE": namespace, "GRID_LOG_LEVEL": "WARNING",
           "GRID_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.sqlite3'}"}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.registry"], cwd=ROOT, env=env,
        capture_output=True, timeout=FAIL_WITHIN_S)


def test_the_tls_settings_fill_every_amqps_address_that_names_no_file_itself() -> None:
    ca, own = Path("/etc/grid/ca.pem"), "/etc/node/ca.pem"
    urls = ["amqps://u:p@a:5671/", f"amqps://u:p@b:5671/?cafile={own}", "amqp://u:p@c:5672/"]
    filled = with_tls_files(urls, {"amqp_cafile": ca, "amqp_certfile": None,
                                   "amqp_keyfile": None})
    assert [URL(url).query.get("cafile") for url in filled] == [str(ca), own, None]
    assert URL(filled[0]).password == "p" and filled[2] == urls[2]
    assert with_tls_files(urls, {"amqp_cafile": None}) == urls


def test_a_tls_file_that_does_not_exist_is_refused_when_the_settings_are_read() -> None:
    with pytest.raises(ValueError, match="amqp_cafile"):
        BaseGridSettings(amqp_cafile="/no/such/ca.pem")
    assert BaseGridSettings(amqp_cafile=" ").amqp_cafile is None  # blank: unset
