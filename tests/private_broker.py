"""The tests' own RabbitMQ nodes and clusters (see :mod:`localbroker`, shared with bench/).

Tests that start brokers of their own need RabbitMQ's scripts
(``rabbitmq-server``, ``rabbitmqctl``) on the machine that runs the tests.
:func:`require_rabbitmq_scripts` decides what happens where they are missing:

- ``GRID_TEST_CLUSTER=0``: skipped (an explicit opt-out);
- on a machine of the kind the suite is built for (a RabbitMQ answers on
  127.0.0.1:5672, as the shared broker does; or ``CI`` is set; or
  ``GRID_TEST_CLUSTER=1``): the test fails, saying what to install;
- elsewhere (a broker in a container or on another host, nothing local):
  skipped, with the same advice.
"""

from __future__ import annotations

import os
import socket

import pytest

from localbroker import PrivateBroker, PrivateCluster, free_ports, installed

__all__ = ["PrivateBroker", "PrivateCluster", "free_ports", "installed",
           "require_rabbitmq_scripts"]
ADVICE = ("rabbitmq-server is not installed on this machine; this test starts RabbitMQ nodes "
          "of its own (Debian: apt-get install rabbitmq-server)")


def local_broker_answers(port: int = 5672) -> bool:
    """A broker (or anything) listens on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def require_rabbitmq_scripts() -> None:
    """Return if RabbitMQ's scripts are here; else fail or skip, by the rule above."""
    wanted = os.environ.get("GRID_TEST_CLUSTER", "")
    if wanted == "0":
        pytest.skip("GRID_TEST_CLUSTER=0: tests that start their own brokers are off")
    if installed():
        return
    if wanted == "1" or os.environ.get("CI") or local_broker_answers():
        pytest.fail(f"{ADVICE}, or set GRID_TEST_CLUSTER=0 to skip it", pytrace=False)
    pytest.skip(ADVICE)
