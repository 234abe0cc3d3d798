"""Property: the answer cache never answers differently from a fresh broadcast.

Hypothesis draws a network (two or three versioned nodes) and a sequence of
steps: inventory changes, joins, deaths (a node falls silent), returns,
deletes, lost membership deltas (the liveness owner skips a number, as a lost
message would: every follower must notice the gap and read a snapshot) and
searches. The owner batches changes (``membership_batch_s``), so that a
step's changes may travel in one delta. Each example runs against a gateway of its own on the
real broker. After every membership step the test awaits (bounded) both
caching views of the network seeing it (the search worker's and the API's);
every search is then answered through the worker's cache (twice: the second
time must be a hit when the first was complete), by a fresh broadcast that
bypasses the cache and the index, through the HTTP API (twice: the second time the API's own
cache must answer) and from the model of the network. All must agree. A fixed
battery of searches runs after every step, so that every change meets answers
cached before it.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import aio_pika
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.node.inventory import Inventory
from services.node.sdk import GridNode
from services.search.gather import Gather, aggregate
from shared.contracts import SearchRequest, SearchResult
from shared.membership import Membership
from shared.rpc import RequestContext
from shared.settings import NodeSettings, RegistrySettings, SearchSettings
from shared.topology import Names, delete_namespace
from tests.harness import Gateway, Harness, eventually

TTL_S = 0.8
SLOTS = 4
MODELS = ["m1", "m2", "m3"]
TAGS = ["#a", "#b", "#c"]
ENCRYPTED = ["e1", "e2"]
HOSTS = {"workers": [["w1", "http://w1:5000"], ["w2", "http://w2:5000"]],
         "crypto_provider": ["cp", "http://cp:5000"]}

inventories = st.builds(
    lambda models, tensors, encrypted: Inventory.model_validate({
        "models": sorted(models),
        "tensors": [{"id": f"t{i}", "tags": sorted(tags)} for i, tags in enumerate(tensors)],
        "encrypted_models": {name: HOSTS for name in sorted(encrypted)}}),
    st.sets(st.sampled_from(MODELS)),
    st.lists(st.sets(st.sampled_from(TAGS), min_size=1), max_size=3),
    st.sets(st.sampled_from(ENCRYPTED)),
)
queries = st.one_of(
    st.sampled_from([SearchRequest(op="list_models"), SearchRequest(op="list_tags")]),
    st.builds(lambda m: SearchRequest(op="has_model", model_id=m), st.sampled_from(MODELS)),
    st.builds(lambda m: SearchRequest(op="encrypted_model", model_id=m),
              st.sampled_from(ENCRYPTED)),
    st.builds(lambda tags: SearchRequest(op="search_tags", tags=sorted(tags)),
              st.sets(st.sampled_from(TAGS), min_size=1)),
)
# Asked after every step, so that each change meets answers cached before it.
BATTERY = [SearchRequest(op="list_models"), SearchRequest(op="list_tags"),
           SearchRequest(op="has_model", model_id="m1"),
           SearchRequest(op="encrypted_model", model_id="e1"),
           SearchRequest(op="search_tags", tags=["#a"]),
           SearchRequest(op="search_tags", tags=["#a", "#b"])]
slots = st.integers(0, SLOTS - 1)
steps = st.lists(st.one_of(
    st.tuples(st.just("search"), queries),
    st.tuples(st.just("search"), queries),
    st.tuples(st.just("change"), slots, inventories),
    st.tuples(st.just("start"), slots, inventories),
    st.tuples(st.just("kill"), slots),
    st.tuples(st.just("delete"), slots),
    st.tuples(st.just("lose"), slots),
), min_size=1, max_size=10)


def address(node_id: str) -> str:
    return f"http://{node_id}:5000"


class Network:
    """The gateway under test, its nodes, and the model of which nodes are live with what.

    Both caching views of the network (the search worker's, and the API's in front
    of it) are awaited after each step, so that both have seen it.
    """

    def __init__(self, harness: Harness, gateway: Gateway) -> None:
        self.harness = harness
        self.gateway = gateway
        self.worker = gateway.searches[0]
        self.views = [self.worker.membership,
                      gateway.api.app.state.gateway.near.membership]
        self.nodes: dict[str, GridNode] = {}  # running nodes
        self.registered: set[str] = set()
        self.live: dict[str, Inventory] = {}

    async def start(self, node_id: str, inventory: Inventory) -> None:
        if node_id in self.nodes:
            return
        node = GridNode(self._node_settings(heartbeat_s=0.15), node_id, address(node_id),
                        inventory)
        self.nodes[node_id] = node
        await node.start()
        self.registered.add(node_id)
        self.live[node_id] = inventory
        await self._all_see(lambda view: view.expected().get(node_id)
                            and view.versions.get(node_id) == node.version)

    async def change(self, node_id: str, inventory: Inventory) -> None:
        node = self.nodes.get(node_id)
        if node is None:
            return
        await node.update_inventory(inventory)
        self.live[node_id] = inventory
        await self._all_see(lambda view: view.versions.get(node_id) == node.version)

    async def kill(self, node_id: str) -> None:
        node = self.nodes.pop(node_id, None)
        if node is None:
            return
        await node.stop()
        del self.live[node_id]
        await self._all_see(lambda view: node_id not in view.expected(), within=TTL_S * 10)

    async def delete(self, node_id: str) -> None:
        if node_id not in self.registered:
            return
        node = self.nodes.pop(node_id, None) or GridNode(
            self._node_settings(), node_id, address(node_id), Inventory())
        await node.stop(leave=True)
        self.registered.discard(node_id)
        self.live.pop(node_id, None)
        await self._all_see(lambda view: node_id not in view.addresses)

    async def lose(self, _node_id: str) -> None:
        """The next membership delta goes missing: followers resync at the next change."""
        self.gateway.registries[0].owner.skip()

    async def search(self, query: SearchRequest) -> None:
        expected = self.model_answer(query)
        for _attempt in range(3):  # again if a live node's heartbeat came late (a flicker)
            generations = [view.generation for view in self.views]
            first = await self.worker.search(query, RequestContext())
            second = await self.worker.search(query, RequestContext())
            fresh = await self.worker._scatter_gather(
                query, self.worker.membership.view(), RequestContext(), use_index=False)
            through_api = [await self.http(query) for _ in range(2)]
            if (generations == [view.generation for view in self.views]
                    and all(set(view.expected()) == set(self.live) and view.synced
                            for view in self.views)):
                break
        else:
            raise AssertionError("the live set kept changing under the searches")
        assert plain(first) == plain(fresh) == expected, (query, first, fresh, expected)
        assert plain(second) == expected, (query, second, expected)
        body = http_body(query, expected)
        assert [answer for answer, _ in through_api] == [body, body], (query, through_api)
        if expected.asked:
            assert second.cached, (query, first, second)
            assert through_api[1][1] == "hit", (query, through_api)

    async def http(self, query: SearchRequest) -> tuple[object, str]:
        """The query through the HTTP API: the answer's JSON and its X-Grid-Cache header."""
        method, path, body = ROUTES[query.op](query)
        response = await self.gateway.client.request(method, path, json=body)
        assert response.status_code == 200, response.text
        return response.json(), response.headers["x-grid-cache"]

    def model_answer(self, query: SearchRequest) -> SearchResult:
        nodes = {node_id: address(node_id) for node_id in self.live}
        gather = Gather(nodes, nodes)
        for node_id, inventory in self.live.items():
            gather.add(inventory.answer(node_id, query))
        return plain(aggregate(query, gather))

    def _node_settings(self, **overrides: object) -> NodeSettings:
        return self.harness.make(NodeSettings, gateway_url=self.gateway.api.url, **overrides)

    async def _all_see(self, check: Callable[[Membership], object],
                       within: float = 10.0) -> None:
        async def seen() -> bool:
            return all(check(view) and view.synced for view in self.views)

        await eventually(seen, within=within)


ROUTES = {
    "list_models": lambda q: ("GET", "/search-available-models", None),
    "list_tags": lambda q: ("GET", "/search-available-tags", None),
    "has_model": lambda q: ("POST", "/search-model", {"model_id": q.model_id}),
    "encrypted_model": lambda q: ("POST", "/search-encrypted-model", {"model_id": q.model_id}),
    "search_tags": lambda q: ("POST", "/search", {"query": q.tags}),
}


def http_body(query: SearchRequest, result: SearchResult) -> object:
    """What the HTTP route answers for ``result`` (the API text's shapes)."""
    if query.op in ("list_models", "list_tags"):
        return result.names
    if query.op in ("has_model", "search_tags"):
        return [list(pair) for pair in result.nodes]
    if result.host is None or result.encrypted is None:
        return {}
    return {result.host[0]: result.host[1],
            "nodes": {"workers": [list(pair) for pair in result.encrypted.workers],
                      "crypto_provider": list(result.encrypted.crypto_provider)}}


def plain(result: SearchResult) -> SearchResult:
    """The answer without what says where it came from."""
    return result.model_copy(update={"cached": False, "state": None, "queried": None})


async def run_example(amqp_url: str, initial: list[Inventory], script: list[tuple]) -> None:
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory() as tmp:
        def make(cls: type, **overrides: object) -> object:
            base = {"amqp_url": amqp_url, "namespace": namespace, "log_level": "WARNING",
                    "node_ttl_s": TTL_S}
            if cls is RegistrySettings:
                base["database_url"] = f"sqlite:///{Path(tmp) / 'registry.sqlite3'}"
                base["membership_batch_s"] = 0.05
            if cls is SearchSettings:
                base["search_timeout_s"] = 2.0
            return cls(**{**base, **overrides})

        harness = Harness(make)
        try:
            gateway = await harness.gateway()
            network = Network(harness, gateway)
            for slot, inventory in enumerate(initial):
                await network.start(f"n{slot}", inventory)
            for step in script:
                action, *arguments = step
                if action != "search":
                    arguments[0] = f"n{arguments[0]}"
                await getattr(network, action)(*arguments)
                for query in BATTERY:
                    await network.search(query)
        finally:
            for node in list(network.nodes.values()) if "network" in locals() else []:
                await node.stop()
            await harness.close()
            connection = await aio_pika.connect(amqp_url, timeout=5)
            async with connection:
                await delete_namespace(await connection.channel(), Names(namespace))


@settings(max_examples=15, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(initial=st.lists(inventories, min_size=2, max_size=3), script=steps)
def test_cache_agrees_with_fresh_broadcasts(amqp_url: str, initial: list[Inventory],
                                             script: list[tuple]) -> None:
    asyncio.run(asyncio.wait_for(run_example(amqp_url, initial, script), 120))

