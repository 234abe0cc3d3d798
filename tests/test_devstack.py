"""The README's run command: every route answers, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_line(process: subprocess.Popen, text: str, within: float) -> None:
    deadline = time.monotonic() + within
    for line in process.stdout:
        if text in line:
            return
        assert time.monotonic() < deadline, f"no {text!r} within {within} s"
    raise AssertionError(f"the run command exited before printing {text!r}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_run_command_serves_every_route_and_stops_cleanly(amqp_url: str, namespace: str,
                                                          tmp_path) -> None:
    port = free_port()
    env = {**os.environ, "AMQP_URL": amqp_url, "GRID_NAMESPACE": namespace,
           "GRID_API_PORT": str(port), "GRID_LOG_LEVEL": "WARNING",
           "GRID_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.sqlite3'}"}
    process = subprocess.Popen([sys.executable, "-m", "services.devstack"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_line(process, "Grid gateway running at", within=60)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/connected-nodes").json() == {
                "grid-nodes": ["alice", "bob", "carol"]}
            assert len(client.get("/choose-model-host").json()) == 1
            assert client.get("/choose-encrypted-model-host").json() == []
            assert "mnist-cnn" in client.get("/search-available-models").json()
            assert "#mnist" in client.get("/search-available-tags").json()
            assert client.post("/search", json={"query": ["#mnist"]}).json()[0][0] == "alice"
            assert client.post("/search-model", json={"model_id": "bert-tiny"}).json() == [
                ["carol", "http://carol:5000"]]
            assert "alice" in client.post("/search-encrypted-model",
                                          json={"model_id": "convnet"}).json()
            body = {"node-id": "dora", "node-address": "http://dora:5000"}
            assert client.post("/join", json=body).status_code == 200
            assert client.request("DELETE", "/delete-node", json=body).status_code == 200
            assert client.get("/readyz").json() == {"status": "ready"}
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert process.wait(30) == 0
        deadline = time.monotonic() + 15
        while group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_alive(process.pid), "a child process outlived the run command"
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def test_run_command_without_a_broker_says_how_to_start_one() -> None:
    env = {**os.environ, "AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}
    result = subprocess.run([sys.executable, "-m", "services.devstack"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "No RabbitMQ answers at amqp://guest:guest@127.0.0.1:1/" in result.stderr
    assert "rabbitmq-server -detached" in result.stderr
    assert "Traceback" not in result.stderr
