"""The gateway driven exactly as the original PyGrid Python clients drove theirs.

``PublicGridNetwork`` below makes the same HTTP calls as PySyft 0.2.x's client
and reads each answer the same way; only what it does with the nodes afterwards
(a websocket ``DataCentricFLClient`` to each) is replaced by a ``NodeLink`` that
records the connection and acts on the node's inventory. Every call is a
module-level ``requests`` call, a body is ``data=json.dumps(...)`` with no JSON
content type, an answer is ``json.loads(response.content)``; the one addition is
a timeout, which changes nothing on the wire. ``requests`` is synchronous, so
each client call runs in a thread against the live uvicorn server.

What each part mirrors (repository and path):

- ``OpenMined/PySyft`` ``syft/grid/public_grid.py``, ``PublicGridNetwork``:
  ``_ask_gateway`` (every call), ``search`` (``POST /search``, iterate
  ``[id, address]`` pairs), ``serve_model`` (``_serve_unencrypted_model``:
  ``GET /choose-model-host``, host on every pair; ``_serve_encrypted_model``:
  ``GET /choose-encrypted-model-host`` read in chunks of ``SMPC_HOST_CHUNK``: 2
  SMPC workers, 1 crypto provider, 1 host), ``query_model_hosts``
  (``_query_unencrypted_models``: the first pair of ``POST /search-model``;
  ``_query_encrypted_models``: the first key of ``POST /search-encrypted-model``,
  then ``["address"]``, ``["nodes"]["workers"]`` and ``["nodes"]["crypto_provider"]``).
- ``OpenMined/PySyft`` ``syft/grid/abstract_grid.py``: ``SMPC_HOST_CHUNK = 4``.
- ``OpenMined/PyGrid-deprecated---see-PySyft-`` ``grid/grid_network.py``,
  ``GridNetwork`` (the gateway repository's own client): ``query_model`` reads
  ``match_nodes[0]``; ``_run_encrypted_inference`` reads the encrypted answer as
  PySyft does.
- ``OpenMined/PyGrid-deprecated---see-PySyft-`` ``test/conftest.py``: a node joins
  with ``requests.post(GATEWAY_URL + "/join", data=json.dumps({"node-id": ...,
  "node-address": "http://localhost:<port>/"}))``; ``test/test_api_grid.py``: the
  reads of ``/connected-nodes``, ``/search-available-models`` and ``-tags``.

The encrypted answer is read per node, so this gateway serves
``GRID_ENCRYPTED_SEARCH_FORMAT=by-node``; with the default shape the original
read fails, as the last test shows.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest
import requests

from services.node.inventory import Inventory
from shared.contracts import EncryptedModelHosts, NodeQuery, NodeReply
from tests.harness import Gateway, Harness

TIMEOUT_S = 10
SMPC_HOST_CHUNK = 4
PORTS = {"alice": 3000, "bob": 3001, "bill": 3002, "james": 3003,
         "charlie": 3004, "dan": 3005, "eve": 3006, "frank": 3007}
ADDRESSES = {node_id: f"http://localhost:{port}/" for node_id, port in PORTS.items()}


def shares(workers: list[str], crypto_provider: str) -> dict:
    return {"workers": [[name, ADDRESSES[name]] for name in workers],
            "crypto_provider": [crypto_provider, ADDRESSES[crypto_provider]]}


INVENTORIES = {
    "alice": {"models": ["mnist-cnn"],
              "encrypted_models": {"convnet": shares(["bob", "bill"], "james")},
              "tensors": [{"id": "x1", "tags": ["#mnist", "#train"]},
                          {"id": "y1", "tags": ["#mnist", "#labels"]}]},
    "bob": {"models": ["mnist-cnn", "resnet18"],
            "tensors": [{"id": "x2", "tags": ["#mnist", "#test"]},
                        {"id": "img", "tags": ["#cifar10", "#train"]}]},
    "bill": {"models": ["bert-tiny"], "tensors": [{"id": "notes", "tags": ["#text", "#train"]}]},
    "james": {"tensors": [{"id": "z", "tags": ["#zeros-tensor"]}]},
    "charlie": {"models": ["toy-linear"],
                "tensors": [{"id": "x3", "tags": ["#mnist", "#train", "#labels"]}]},
    "dan": {"tensors": [{"id": "c10", "tags": ["#cifar10", "#test"]}]},
    "eve": {"encrypted_models": {"convnet": shares(["charlie", "dan"], "frank")}},
    "frank": {},
}


@dataclass
class NodeLink:
    """Stands in for the client's connection to a node: acts on the node's inventory."""

    node_id: str
    address: str
    inventory: Inventory

    def search(self, query: tuple[str, ...]) -> list[str]:
        """The node's tensors carrying every tag (what a node answers a client's search)."""
        return [t.id for t in self.inventory.tensors if set(query) <= set(t.tags)]

    def serve_model(self, model_id: str, mpc: bool = False,
                    shared: EncryptedModelHosts | None = None) -> None:
        if mpc:
            self.inventory.encrypted_models[model_id] = shared
        else:
            self.inventory.models.append(model_id)


@dataclass
class PublicGridNetwork:
    """The gateway calls of PySyft's PublicGridNetwork, with the same reads of each answer."""

    gateway_url: str
    inventories: dict[str, Inventory]
    connected: list[tuple[str, str]] = field(default_factory=list)
    responses: list[requests.Response] = field(default_factory=list)

    def _ask_gateway(self, request_method, endpoint: str, body: str | dict | None = None):
        response = request_method(self.gateway_url + endpoint, data=body if body else {},
                                  timeout=TIMEOUT_S)
        self.responses.append(response)
        return json.loads(response.content)

    def _connect_with_node(self, node_id: str, node_url: str) -> NodeLink:
        self.connected.append((node_id, node_url))
        return NodeLink(node_id, node_url, self.inventories[node_id])

    def search(self, *query: str) -> dict[str, list[str]]:
        body = json.dumps({"query": list(query)})
        match_nodes = self._ask_gateway(requests.post, "/search", body)
        return {node_id: self._connect_with_node(node_id, node_url).search(query)
                for node_id, node_url in match_nodes}

    def serve_model(self, model_id: str, mpc: bool = False) -> None:
        if not mpc:
            hosts = self._ask_gateway(requests.get, "/choose-model-host")
            for host_id, host_address in hosts:
                self._connect_with_node(host_id, host_address).serve_model(model_id)
            return
        hosts = self._ask_gateway(requests.get, "/choose-encrypted-model-host")
        if not (len(hosts) and len(hosts) % SMPC_HOST_CHUNK == 0):
            raise RuntimeError("Not enough workers to host an encrypted model!")
        for i in range(0, len(hosts), SMPC_HOST_CHUNK):
            workers = [self._connect_with_node(*worker) for worker in hosts[i:i + 2]]
            crypto_provider = self._connect_with_node(*hosts[i + 2])
            host = self._connect_with_node(*hosts[i + 3])
            shared = EncryptedModelHosts(
                workers=[(w.node_id, w.address) for w in workers],
                crypto_provider=(crypto_provider.node_id, crypto_provider.address))
            host.serve_model(model_id, mpc=True, shared=shared)

    def query_model_hosts(self, model_id: str, mpc: bool = False):
        body = json.dumps({"model_id": model_id})
        if not mpc:
            match_nodes = self._ask_gateway(requests.post, "/search-model", body)
            for node_id, node_url in match_nodes:  # the first node that stores it
                return self._connect_with_node(node_id, node_url)
            return None
        match_nodes = self._ask_gateway(requests.post, "/search-encrypted-model", body)
        if not len(match_nodes):
            raise RuntimeError("Model not found on Grid Network!")
        node_id = list(match_nodes.keys())[0]
        node_address = match_nodes[node_id]["address"]
        worker_infos = match_nodes[node_id]["nodes"]["workers"]
        crypto_provider = match_nodes[node_id]["nodes"]["crypto_provider"]
        host_node = self._connect_with_node(node_id, node_address)
        workers = [self._connect_with_node(worker_id, worker_address)
                   for worker_id, worker_address in worker_infos]
        crypto_node = self._connect_with_node(crypto_provider[0], crypto_provider[1])
        return host_node, workers, crypto_node


def join_as_original_node(gateway_url: str, node_id: str) -> requests.Response:
    body = json.dumps({"node-id": node_id, "node-address": ADDRESSES[node_id]})
    return requests.post(gateway_url + "/join", data=body, timeout=TIMEOUT_S)


async def start_network(harness: Harness, **api: object) -> tuple[Gateway, PublicGridNetwork]:
    """A gateway (2 replicas per host choice) with the 8 nodes, joined the original way."""
    gateway = await harness.gateway(registry={"n_replica": 2}, **api)
    inventories = {node_id: Inventory.model_validate(inventory)
                   for node_id, inventory in INVENTORIES.items()}
    for node_id, inventory in inventories.items():
        # A function handler, so that the node's answers follow its inventory as it changes.
        def answer(node: str, query: NodeQuery, inventory=inventory) -> NodeReply:
            return inventory.answer(node, query)

        await harness.node(gateway, node_id, answer, address=ADDRESSES[node_id], join=False,
                           heartbeat_s=0.2)
        joined = await asyncio.to_thread(join_as_original_node, gateway.api.url, node_id)
        assert (joined.status_code, joined.json()) == (200, {"message": "Successfully Connected!"})
    await gateway.wait_search_sees(len(INVENTORIES))
    return gateway, PublicGridNetwork(gateway.api.url, inventories)


@pytest.fixture
async def grid(harness: Harness) -> PublicGridNetwork:
    _, client = await start_network(harness, encrypted_search_format="by-node")
    return client


def get(url: str):
    return json.loads(requests.get(url, timeout=TIMEOUT_S).content)


async def test_overviews_as_the_original_tests_read_them(grid: PublicGridNetwork) -> None:
    url = grid.gateway_url
    nodes = (await asyncio.to_thread(get, url + "/connected-nodes"))["grid-nodes"]
    assert sorted(nodes) == sorted(PORTS)
    models = await asyncio.to_thread(get, url + "/search-available-models")
    assert set(models) == {"mnist-cnn", "resnet18", "bert-tiny", "toy-linear"}
    tags = await asyncio.to_thread(get, url + "/search-available-tags")
    assert "#zeros-tensor" in tags and "#cifar10" in tags


async def test_search_connects_to_every_matching_node(grid: PublicGridNetwork) -> None:
    found = await asyncio.to_thread(grid.search, "#mnist", "#train")
    assert found == {"alice": ["x1"], "charlie": ["x3"]}
    assert await asyncio.to_thread(grid.search, "#zeros-tensor") == {"james": ["z"]}
    assert await asyncio.to_thread(grid.search, "#nothing") == {}
    assert grid.connected == [("alice", ADDRESSES["alice"]), ("charlie", ADDRESSES["charlie"]),
                              ("james", ADDRESSES["james"])]


async def test_query_model_hosts(grid: PublicGridNetwork) -> None:
    node = await asyncio.to_thread(grid.query_model_hosts, "mnist-cnn")
    assert (node.node_id, node.address) == ("alice", ADDRESSES["alice"])
    assert await asyncio.to_thread(grid.query_model_hosts, "unregistered-model") is None
    # GridNetwork.query_model (the gateway repository's client) reads the first pair.
    body = json.dumps({"model_id": "resnet18"})
    match_nodes = await asyncio.to_thread(grid._ask_gateway, requests.post, "/search-model", body)
    assert len(match_nodes) and match_nodes[0] == ["bob", ADDRESSES["bob"]]


async def test_query_encrypted_model_hosts(grid: PublicGridNetwork) -> None:
    host, workers, crypto = await asyncio.to_thread(grid.query_model_hosts, "convnet", True)
    assert (host.node_id, host.address) == ("alice", ADDRESSES["alice"])  # the first of alice, eve
    assert [(w.node_id, w.address) for w in workers] == [("bob", ADDRESSES["bob"]),
                                                          ("bill", ADDRESSES["bill"])]
    assert (crypto.node_id, crypto.address) == ("james", ADDRESSES["james"])
    with pytest.raises(RuntimeError, match="Model not found on Grid Network!"):
        await asyncio.to_thread(grid.query_model_hosts, "unregistered-model", True)


async def test_serve_model_then_find_it(grid: PublicGridNetwork) -> None:
    await asyncio.to_thread(grid.serve_model, "plan-model")
    hosts = grid.connected.copy()
    assert len(hosts) == 2 and len(set(hosts)) == 2  # N_REPLICA = 2 distinct live nodes
    assert set(hosts) <= set(ADDRESSES.items())
    node = await asyncio.to_thread(grid.query_model_hosts, "plan-model")
    assert (node.node_id, node.address) == min(hosts)
    body = json.dumps({"model_id": "plan-model"})
    listed = await asyncio.to_thread(grid._ask_gateway, requests.post, "/search-model", body)
    assert [tuple(pair) for pair in listed] == sorted(hosts)


async def test_serve_encrypted_model_in_chunks_of_four(grid: PublicGridNetwork) -> None:
    await asyncio.to_thread(grid.serve_model, "secure-plan", True)
    chosen = grid.connected.copy()
    assert len(chosen) == 2 * SMPC_HOST_CHUNK and len(set(chosen)) == len(chosen)
    assert set(chosen) == set(ADDRESSES.items())  # 8 live nodes, 8 chosen: every one
    chunks = {chunk[3]: chunk for chunk in (chosen[i:i + 4] for i in range(0, 8, 4))}
    first_host = min(chunks)
    grid.connected.clear()
    host, workers, crypto = await asyncio.to_thread(grid.query_model_hosts, "secure-plan", True)
    chunk = chunks[first_host]
    assert (host.node_id, host.address) == first_host
    assert [(w.node_id, w.address) for w in workers] == chunk[:2]
    assert (crypto.node_id, crypto.address) == chunk[2]


async def test_bodies_are_sent_without_a_json_content_type(grid: PublicGridNetwork) -> None:
    await asyncio.to_thread(grid.search, "#mnist")
    await asyncio.to_thread(grid.query_model_hosts, "convnet", True)
    await asyncio.to_thread(grid.serve_model, "m")
    sent = [response.request for response in grid.responses]
    assert [request.method for request in sent] == ["POST", "POST", "GET"]
    assert all("json" not in request.headers.get("Content-Type", "") for request in sent)
    assert [json.loads(request.body) for request in sent[:2]] == [
        {"query": ["#mnist"]}, {"model_id": "convnet"}]
    assert all(response.status_code == 200 for response in grid.responses)


async def test_the_default_shape_is_not_what_the_original_client_reads(harness: Harness) -> None:
    """Why by-node exists: on the API text's shape the original read fails."""
    _, client = await start_network(harness)
    with pytest.raises(TypeError, match="string indices must be integers"):
        await asyncio.to_thread(client.query_model_hosts, "convnet", True)
