"""When the tests that start their own brokers run, fail or skip (tests/private_broker.py)."""

from __future__ import annotations

import pytest

from tests import private_broker

Failed, Skipped = pytest.fail.Exception, pytest.skip.Exception


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """Set what the rule looks at: scripts installed, a local broker, CI, GRID_TEST_CLUSTER."""

    def make(installed: bool, local_broker: bool, ci: bool = False, wanted: str = "") -> None:
        monkeypatch.setattr(private_broker, "installed", lambda: installed)
        monkeypatch.setattr(private_broker, "local_broker_answers", lambda: local_broker)
        monkeypatch.delenv("CI", raising=False)
        monkeypatch.delenv("GRID_TEST_CLUSTER", raising=False)
        if ci:
            monkeypatch.setenv("CI", "true")
        if wanted:
            monkeypatch.setenv("GRID_TEST_CLUSTER", wanted)

    return make


@pytest.mark.parametrize("local_broker", [True, False])
def test_runs_where_the_scripts_are(machine, local_broker: bool) -> None:
    machine(installed=True, local_broker=local_broker)
    private_broker.require_rabbitmq_scripts()  # neither fails nor skips


@pytest.mark.parametrize(("local_broker", "ci", "wanted"),
                         [(True, False, ""), (False, True, ""), (False, False, "1")])
def test_fails_loudly_on_a_machine_meant_to_run_them(machine, local_broker, ci, wanted) -> None:
    machine(installed=False, local_broker=local_broker, ci=ci, wanted=wanted)
    with pytest.raises(Failed, match="apt-get install rabbitmq-server"):
        private_broker.require_rabbitmq_scripts()


def test_skips_elsewhere_or_when_told(machine) -> None:
    machine(installed=False, local_broker=False)
    with pytest.raises(Skipped, match="not installed"):
        private_broker.require_rabbitmq_scripts()
    machine(installed=True, local_broker=True, wanted="0")
    with pytest.raises(Skipped, match="GRID_TEST_CLUSTER=0"):
        private_broker.require_rabbitmq_scripts()
