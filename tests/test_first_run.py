"""A newcomer's first minute: ./scripts/run's usage, readable logs on a terminal, own stores."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys

import pytest

from shared.logs import JsonFormatter, TextFormatter, choose_formatter
from shared.settings import RegistrySettings
from tests.harness import ROOT

RUN = os.path.join(ROOT, "scripts", "run")
# One record with an extra field, then an exception, written by a process's own logging set-up.
LOG_TWO_LINES = """
import logging
from shared.logs import setup_logging
from shared.settings import NodeSettings
settings = NodeSettings()
setup_logging(settings.log_level, settings.log_format)
logging.getLogger("services.node").info("node running", extra={"node_id": "alice"})
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("services.node").exception("it failed")
"""


def test_run_help_prints_the_usage_and_starts_nothing() -> None:
    done = subprocess.run([RUN, "--help"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ./scripts/run")
    assert "GRID_NAMESPACE" in done.stdout and "Grid gateway running" not in done.stdout


@pytest.mark.parametrize("args", [["--bogus"], ["api"], ["--port", "9000"]])
def test_run_refuses_unknown_arguments(args: list[str]) -> None:
    done = subprocess.run([RUN, *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "error: unrecognized arguments" in done.stderr, done.stderr
    assert "Grid gateway running" not in done.stdout


def log_on_a_terminal(**env: str) -> str:
    """What a process logs when its stderr is a real terminal (a pseudo-terminal here)."""
    controller, terminal = pty.openpty()
    environment = {key: value for key, value in os.environ.items() if key != "GRID_LOG_FORMAT"}
    environment.update(env)
    try:
        done = subprocess.run([sys.executable, "-c", LOG_TWO_LINES], cwd=ROOT, env=environment,
                              stderr=terminal, timeout=60, check=False)
        assert done.returncode == 0
        os.close(terminal)
        terminal = -1
        return read_all(controller)
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)


def read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the terminal's other side is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_logs_are_plain_text_lines_on_a_terminal() -> None:
    lines = log_on_a_terminal().splitlines()
    assert len(lines) == 2, lines
    assert " INFO  services.node: node running node_id=alice" in lines[0]
    assert lines[1].split(" ", 1)[1].startswith("ERROR services.node: it failed | Traceback")
    assert "ZeroDivisionError" in lines[1]
    assert "\x1b" not in "".join(lines), "no colour codes"


def test_json_can_be_forced_on_a_terminal() -> None:
    lines = log_on_a_terminal(GRID_LOG_FORMAT="json").splitlines()
    record = json.loads(lines[0])
    assert (record["msg"], record["node_id"], record["level"]) == ("node running", "alice", "INFO")


def test_logs_stay_json_off_a_terminal() -> None:
    done = subprocess.run([sys.executable, "-c", LOG_TWO_LINES], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "GRID_LOG_FORMAT": "auto"}, timeout=60,
                          check=False)
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert [r["msg"] for r in records] == ["node running", "it failed"]
    assert "ZeroDivisionError" in records[1]["exc"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_format_setting_overrides_the_terminal() -> None:
    assert isinstance(choose_formatter("auto", Terminal()), TextFormatter)
    assert isinstance(choose_formatter("auto", io.StringIO()), JsonFormatter)
    assert isinstance(choose_formatter("json", Terminal()), JsonFormatter)
    assert isinstance(choose_formatter("text", io.StringIO()), TextFormatter)


def test_the_default_store_is_one_file_per_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRID_DATABASE_URL", raising=False)
    monkeypatch.setenv("GRID_NAMESPACE", "team-a")
    first = RegistrySettings().database_url
    monkeypatch.setenv("GRID_NAMESPACE", "team-b")
    assert (first, RegistrySettings().database_url) == (
        "sqlite:///data/registry-team-a.sqlite3", "sqlite:///data/registry-team-b.sqlite3")
    monkeypatch.setenv("GRID_DATABASE_URL", "sqlite:///elsewhere.sqlite3")
    assert RegistrySettings().database_url == "sqlite:///elsewhere.sqlite3"
