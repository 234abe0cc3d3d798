"""RabbitMQ nodes and clusters of one's own on this machine, for the tests and the benchmark.

They run from the installed ``rabbitmq-server`` (Debian: ``apt-get install
rabbitmq-server``) as the current user, on free ports and in directories of
their own, so they never touch the machine's shared broker.
"""

from localbroker.cluster import PrivateCluster
from localbroker.node import PrivateBroker, free_ports, installed

__all__ = ["PrivateBroker", "PrivateCluster", "free_ports", "installed"]
