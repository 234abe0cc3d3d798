"""The HTTP API fuzzed from its own OpenAPI document, and junk the fuzzer does not send.

The gateway runs here as in production: ``python -m services.registry``,
``services.search`` and ``services.api`` processes on a namespace of their own,
with two demo nodes so that searches answer real data. A second API process on
the same workers has an admin token and closed read routes. schemathesis
generates requests for every documented operation (the documented examples,
the coverage scenarios, then random valid and invalid data), and every response
must be documented: no 5xx, a documented status code and content type, a body
that matches the documented schema, and no 400 for data the document says is
valid. The raw tests send what no client library would: junk paths, malformed
headers and request lines, wrong methods; each gets a JSON error.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import aio_pika
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.api.app import create_app
from shared.settings import ApiSettings
from shared.topology import Names, delete_namespace
from tests.harness import ROOT, spawn, stop_processes

TOKEN = "fuzz-t0ken"
START_S = 30.0
CALL_TIMEOUT_S = 30.0
# Nodes that answer searches; their ids are not the documented examples', which the
# fuzzer sends as they are (DELETE /delete-node with the example deletes "alice").
DEMO_NODES = {"demo-1": "examples/alice.json", "demo-2": "examples/carol.json"}
OPEN_PATHS = {"/healthz", "/readyz", "/metrics"}

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    # Data valid by the document must not get a 400: catches a schema looser than the API.
    positive_data_acceptance,
]
FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass
class LiveGateway:
    url: str  # open, as by default
    closed_url: str  # admin token set and read routes closed

    @property
    def port(self) -> int:
        return httpx.URL(self.url).port


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _delete_namespace(amqp_url: str, namespace: str) -> None:
    async def delete() -> None:
        connection = await aio_pika.connect(amqp_url, timeout=5)
        async with connection:
            await delete_namespace(await connection.channel(), Names(namespace))

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, delete()).result()


def _wait_until_serving(live: LiveGateway, processes: list[subprocess.Popen]) -> None:
    """Both APIs ready and every demo node answering searches, else fail with the reason."""
    deadline = time.monotonic() + START_S
    last = ""
    with httpx.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            dead = [process.args for process in processes if process.poll() is not None]
            if dead:
                pytest.fail(f"a gateway process exited while starting: {dead}")
            try:
                ready = all(http.get(f"{url}/readyz").status_code == 200
                            for url in (live.url, live.closed_url))
                tags = http.get(f"{live.url}/search-available-tags")
                seen = (tags.headers.get("x-grid-nodes-asked"),
                        tags.headers.get("x-grid-nodes-answered"))
                last = f"ready={ready} asked/answered={seen}"
                if ready and seen == (str(len(DEMO_NODES)),) * 2:
                    return
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
    pytest.fail(f"the gateway did not start within {START_S} s ({last})")


def _demo_node(node_id: str, inventory: str, amqp_url: str, namespace: str,
               gateway_url: str) -> subprocess.Popen:
    environment = {**os.environ, "AMQP_URL": amqp_url, "GRID_NAMESPACE": namespace,
                   "GRID_GATEWAY_URL": gateway_url, "GRID_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-m", "services.node", "--id", node_id,
         "--address", f"http://{node_id}:5000", "--inventory", inventory],
        cwd=ROOT, env=environment,
    )


@pytest.fixture(scope="module")
def live(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    database = tmp_path_factory.mktemp("fuzz") / "registry.sqlite3"
    open_port, closed_port = _free_ports(2)
    live = LiveGateway(f"http://127.0.0.1:{open_port}", f"http://127.0.0.1:{closed_port}")
    # A generous RPC deadline: on a loaded machine a slow worker would be a 503, which the
    # fuzz counts as a failure; a worker that is down is still a fast 503.
    api_env = {"GRID_CONSUMER_CHECK_S": "0.2", "GRID_RPC_TIMEOUT_S": str(CALL_TIMEOUT_S / 2)}
    processes: list[subprocess.Popen] = []
    try:
        processes += [
            spawn("services.registry", amqp_url, namespace,
                  GRID_DATABASE_URL=f"sqlite:///{database}"),
            spawn("services.search", amqp_url, namespace, GRID_SEARCH_TIMEOUT_S="1"),
            spawn("services.api", amqp_url, namespace, **api_env,
                  GRID_API_PORT=str(open_port)),
            spawn("services.api", amqp_url, namespace, **api_env,
                  GRID_API_PORT=str(closed_port), GRID_ADMIN_TOKEN=TOKEN,
                  GRID_AUTH_READ_ROUTES="true"),
        ]
        processes += [_demo_node(node_id, inventory, amqp_url, namespace, live.url)
                      for node_id, inventory in DEMO_NODES.items()]
        _wait_until_serving(live, processes)
        yield live
    finally:
        stop_processes(processes)
        _delete_namespace(amqp_url, namespace)


# --- schema-driven fuzzing ------------------------------------------------------


# The document /openapi.json serves, built without starting the app (no broker needed at
# import). schemathesis' lazy loader (``schemathesis.pytest.from_fixture``) breaks under
# pytest 9 (it sets ``request.node._nodeid``), so the schema is loaded here and each call is
# given the running gateway's URL; test_served_document_is_the_fuzzed_one checks that the
# gateways serve this very document.
DOCUMENT = create_app(ApiSettings()).openapi()
api_schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_served_document_is_the_fuzzed_one(live: LiveGateway) -> None:
    for url in (live.url, live.closed_url):
        assert httpx.get(f"{url}/openapi.json").json() == DOCUMENT


@api_schema.parametrize()
@FUZZ
def test_api_answers_as_documented(case: schemathesis.Case, live: LiveGateway) -> None:
    case.call_and_validate(base_url=live.url, checks=CHECKS, timeout=CALL_TIMEOUT_S)


@api_schema.parametrize()
@FUZZ
def test_closed_api_answers_as_documented(case: schemathesis.Case, live: LiveGateway) -> None:
    """Without the token every route but the operations ones is a documented 401."""
    response = case.call_and_validate(base_url=live.closed_url, checks=CHECKS,
                                      timeout=CALL_TIMEOUT_S)
    if case.method.upper() == case.operation.method.upper() and case.path not in OPEN_PATHS:
        assert response.status_code == 401, response.text


# --- junk schemathesis does not send ----------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def raw(port: int, request: bytes) -> Answer:
    """Send bytes as they are (no client normalises or refuses them); read one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without a response: {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed in the middle of the body"
            body += chunk
    return Answer(int(status_line.split()[1]), headers, body)


def message(method: bytes, path: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: gateway", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def get(path: bytes, *headers: bytes) -> bytes:
    return message(b"GET", path, *headers)


def post(path: bytes, body: bytes, *headers: bytes, length: bytes | None = None) -> bytes:
    length = str(len(body)).encode() if length is None else length
    return message(b"POST", path, b"Content-Length: " + length, *headers, body=body)


def assert_json_error(answer: Answer, status: int) -> dict:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json", answer
    assert b"<html" not in answer.body.lower()
    body = json.loads(answer.body)
    assert isinstance(body, dict) and isinstance(body.get("message"), str), body
    return body


@pytest.mark.parametrize(
    "path",
    [
        b"/%00",
        b"/join%00",
        b"/..%2f..",
        b"/..%2f..%2f..%2fetc%2fpasswd",
        b"/../../etc/passwd",
        b"/join/..%2fconnected-nodes",
        b"/%ff%fe",
        b"/%",
        b"/%zz",
        b"/" + b"a" * 10_000,
        b"/search-model/" + b"%41" * 5_000,
    ],
    ids=lambda path: path[:40].decode(),
)
def test_junk_paths_are_json_404(live: LiveGateway, path: bytes) -> None:
    body = assert_json_error(raw(live.port, get(path)), 404)
    assert body == {"message": "Not Found"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "/join"),
        ("PUT", "/join"),
        ("GET", "/join"),
        ("PUT", "/delete-node"),
        ("POST", "/delete-node"),
        ("POST", "/connected-nodes"),
        ("PUT", "/choose-model-host"),
        ("DELETE", "/choose-encrypted-model-host"),
        ("PATCH", "/search"),
        ("PUT", "/search-model"),
        ("DELETE", "/search-encrypted-model"),
        ("POST", "/search-available-models"),
        ("PATCH", "/search-available-tags"),
        ("POST", "/healthz"),
        ("PUT", "/readyz"),
        ("DELETE", "/metrics"),
        ("TRACE", "/join"),
        ("OPTIONS", "/search"),
    ],
)
def test_wrong_methods_are_json_405(live: LiveGateway, method: str, path: str) -> None:
    response = httpx.request(method, live.url + path, content=b'{"model_id": "m"}')
    assert (response.status_code, response.json()) == (405, {"message": "Method Not Allowed"})
    assert response.headers["content-type"] == "application/json"
    assert method not in response.headers["allow"].split(", ")


@pytest.mark.parametrize(
    "length",
    [b"abc", b"-1", b"1.5", b"0x10", b"9" * 30, b"2, 3", b"2\r\nContent-Length: 3"],
    ids=["letters", "negative", "decimal", "hex", "overflow", "list", "twice"],
)
def test_invalid_content_length_is_json_400(live: LiveGateway, length: bytes) -> None:
    """The HTTP parser refuses these before the app sees them; the answer is still JSON."""
    request = post(b"/join", b'{"node-id": "x", "node-address": "http://x:1"}', length=length)
    assert_json_error(raw(live.port, request), 400)


def test_declared_length_over_the_cap_is_413_before_the_body(live: LiveGateway) -> None:
    request = post(b"/search", b"", length=str(64 << 20).encode())  # the body never comes
    body = assert_json_error(raw(live.port, request), 413)
    assert body == {"message": "Request body too large."}


@pytest.mark.parametrize(
    "junk",
    [
        b"X-Junk: \x00\x01",
        b"Bad Header Name: 1",
        b"no colon at all",
        b"Transfer-Encoding: chunked\r\nContent-Length: 3",
    ],
    ids=["control-bytes", "space-in-name", "no-colon", "length-and-chunked"],
)
def test_malformed_headers_are_json_400(live: LiveGateway, junk: bytes) -> None:
    assert_json_error(raw(live.port, post(b"/search", b"{}", junk)), 400)


def test_bad_chunked_body_is_json_400(live: LiveGateway) -> None:
    request = message(b"POST", b"/search", b"Transfer-Encoding: chunked",
                      body=b"zz\r\n{}\r\n0\r\n\r\n")
    assert_json_error(raw(live.port, request), 400)


@pytest.mark.parametrize(
    "request_line",
    [b"FROBNICATE /search HTTP/1.1", b"GET /healthz HTTP/9.9", b"GET /\xc3\xa9 HTTP/1.1",
     b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"],
    ids=["unknown-method", "http-9.9", "raw-utf8-path", "tls-hello"],
)
def test_junk_request_lines_are_json_400(live: LiveGateway, request_line: bytes) -> None:
    assert_json_error(raw(live.port, request_line + b"\r\nHost: gateway\r\n\r\n"), 400)


def test_huge_header_value_does_not_change_the_answer(live: LiveGateway) -> None:
    huge = b"X-Padding: " + b"p" * (1 << 20)
    body = assert_json_error(raw(live.port, post(b"/join", b"not json", huge)), 400)
    assert body == {"message": "Invalid json."}
    answer = raw(live.port, get(b"/connected-nodes", huge))
    assert answer.status == 200 and "grid-nodes" in json.loads(answer.body)


def test_huge_request_id_is_replaced(live: LiveGateway) -> None:
    answer = raw(live.port, get(b"/healthz", b"X-Request-Id: " + b"r" * 100_000))
    assert answer.status == 200
    assert len(answer.headers["x-request-id"]) == 32


def test_huge_authorization_header_is_json_401(live: LiveGateway) -> None:
    port = httpx.URL(live.closed_url).port
    huge = b"Authorization: Bearer " + b"t" * (1 << 20)
    body = assert_json_error(raw(port, post(b"/join", b"{}", huge)), 401)
    assert body == {"message": "Missing or invalid bearer token."}
