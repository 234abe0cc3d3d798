"""``/search-encrypted-model`` in both answer shapes, with several hosting nodes on the real broker.

``api-text`` (the default) answers the first hosting node by id; ``by-node``
(``GRID_ENCRYPTED_SEARCH_FORMAT=by-node``) answers every hosting node, as the
original gateway did. Both shapes are checked against the OpenAPI document.
"""

from __future__ import annotations

import jsonschema_rs
import pytest
from pydantic import ValidationError

from services.api import encrypted
from services.api.app import create_app
from services.search.gather import Gather, aggregate
from shared.contracts import EncryptedModelHosts, NodeQuery, NodeReply, SearchResult
from shared.settings import ApiSettings
from tests.harness import Gateway, Harness

ENDPOINT = "/search-encrypted-model"


def address(node_id: str) -> str:
    return f"https://{node_id}.grid.example:5000"


def hosts(workers: list[str], crypto_provider: str) -> dict:
    """An encrypted model's shares: its SMPC workers and crypto provider."""
    return {"workers": [[name, address(name)] for name in workers],
            "crypto_provider": [crypto_provider, address(crypto_provider)]}


# Joined out of id order, so that sorting is what puts "clinic-a" first.
NODES = {
    "hospital-b": {"encrypted_models": {"convnet": hosts(["lab-c", "archive"], "clinic-a")}},
    "lab-c": {"models": ["convnet"]},  # hosts convnet in the clear only
    "clinic-a": {"encrypted_models": {"convnet": hosts(["hospital-b", "lab-c"], "archive"),
                                      "lstm": hosts(["lab-c", "hospital-b"], "archive")}},
    "archive": {},
    "hospital-d": {"encrypted_models": {"convnet": hosts(["clinic-a", "archive"], "lab-c")}},
}
CONVNET_HOSTS = ["clinic-a", "hospital-b", "hospital-d"]


async def network(harness: Harness, **api: object) -> Gateway:
    gateway = await harness.gateway(search={"search_timeout_s": 2.0}, **api)
    for node_id, inventory in NODES.items():
        await harness.node(gateway, node_id, inventory, address=address(node_id))
    await gateway.wait_search_sees(len(NODES))
    return gateway


def documented_schema() -> dict:
    document = create_app(ApiSettings()).openapi()
    answer = document["paths"][ENDPOINT]["post"]["responses"]["200"]["content"]
    return answer["application/json"]


def assert_documented(body: dict) -> None:
    jsonschema_rs.validate(documented_schema()["schema"], body)


async def post(gateway: Gateway, model_id: str):
    response = await gateway.client.post(ENDPOINT, json={"model_id": model_id})
    assert response.status_code == 200
    assert (response.headers["x-grid-nodes-asked"],
            response.headers["x-grid-nodes-answered"]) == ("5", "5")
    return response.json()


async def test_api_text_is_the_default_and_names_the_first_host(harness: Harness) -> None:
    gateway = await network(harness)
    body = await post(gateway, "convnet")
    assert body == {"clinic-a": address("clinic-a"),
                    "nodes": NODES["clinic-a"]["encrypted_models"]["convnet"]}
    assert_documented(body)
    assert await post(gateway, "lstm") == {
        "clinic-a": address("clinic-a"), "nodes": NODES["clinic-a"]["encrypted_models"]["lstm"]}
    assert await post(gateway, "resnet") == {}


async def test_by_node_answers_every_host(harness: Harness) -> None:
    gateway = await network(harness, encrypted_search_format="by-node")
    body = await post(gateway, "convnet")
    assert list(body) == CONVNET_HOSTS  # in id order; lab-c hosts it in the clear only
    for node_id in CONVNET_HOSTS:  # the registered address, each node's own shares
        assert body[node_id] == {"address": address(node_id),
                                 "nodes": NODES[node_id]["encrypted_models"]["convnet"]}
    assert_documented(body)
    assert await post(gateway, "lstm") == {
        "clinic-a": {"address": address("clinic-a"),
                     "nodes": NODES["clinic-a"]["encrypted_models"]["lstm"]}}
    assert await post(gateway, "resnet") == {}


async def test_by_node_as_the_original_clients_read_it(harness: Harness) -> None:
    """The reads of PySyft's PublicGridNetwork._query_encrypted_models (see test_pygrid_client)."""
    gateway = await network(harness, encrypted_search_format="by-node")
    match_nodes = await post(gateway, "convnet")
    node_id = list(match_nodes.keys())[0]
    assert match_nodes[node_id]["address"] == address("clinic-a")
    workers = [worker_id for worker_id, _ in match_nodes[node_id]["nodes"]["workers"]]
    assert workers == ["hospital-b", "lab-c"]
    assert match_nodes[node_id]["nodes"]["crypto_provider"][0] == "archive"


def test_documented_examples_match_the_schema() -> None:
    content = documented_schema()
    assert set(content["examples"]) == {"api-text", "by-node", "none"}
    for example in content["examples"].values():
        jsonschema_rs.validate(content["schema"], example["value"])
    validator = jsonschema_rs.validator_for(content["schema"])
    assert not validator.is_valid({"alice": 3})
    assert not validator.is_valid({"alice": {"address": "http://alice:5000"}})


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ApiSettings().encrypted_search_format == "api-text"
    monkeypatch.setenv("GRID_ENCRYPTED_SEARCH_FORMAT", "by-node")
    assert ApiSettings().encrypted_search_format == "by-node"
    monkeypatch.setenv("GRID_ENCRYPTED_SEARCH_FORMAT", "by-host")
    with pytest.raises(ValidationError):
        ApiSettings()


async def test_aggregate_lists_every_host_with_its_registered_address() -> None:
    nodes = {"b": "http://b:1", "a": "http://a:1", "c": "http://c:1", "late": "http://l"}
    gather = Gather(nodes, nodes)
    shares = EncryptedModelHosts(workers=[("x", "http://x"), ("y", "http://y")],
                                 crypto_provider=("z", "http://z"))
    gather.add(NodeReply(node_id="b", encrypted=shares))
    gather.add(NodeReply(node_id="c"))
    gather.add(NodeReply(node_id="a", encrypted=shares))
    result = aggregate(NodeQuery(op="encrypted_model", model_id="m"), gather)
    assert [(host.node_id, host.node_address) for host in result.hosts] == [
        ("a", "http://a:1"), ("b", "http://b:1")]
    assert result.host == ("a", "http://a:1") and result.encrypted == shares
    assert (result.asked, result.answered) == (4, 3)


def test_by_node_from_a_search_worker_without_hosts() -> None:
    """During a rolling upgrade an older search worker answers host / encrypted only."""
    shares = EncryptedModelHosts(workers=[("x", "http://x")], crypto_provider=("z", "http://z"))
    old = SearchResult(asked=1, answered=1, host=("a", "http://a"), encrypted=shares)
    assert encrypted.by_node(old) == {"a": {"address": "http://a", "nodes": {
        "workers": [["x", "http://x"]], "crypto_provider": ["z", "http://z"]}}}
    assert encrypted.by_node(SearchResult(asked=1, answered=1)) == {}
