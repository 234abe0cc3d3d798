"""What the scale preset measures beyond the routes: memory, joins, liveness, and its checks.

- RSS of each gateway process (and the broker) after the fleet joined, per N;
- the join storm: how long the whole fleet took to join;
- liveness: a node killed (no delete) is offline on ``/connected-nodes`` within its TTL,
  and a node whose inventory changes is found by searches after its announcement (the
  delay until the first search that finds it is reported: the staleness window);
- the targets of the ten-thousand-node issue as PASS/FAIL lines.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Mapping

import httpx

from services.node.inventory import Inventory
from services.node.sdk import GridNode
from shared.settings import NodeSettings

# Idle CPU of the gateway and broker together at N = 10,000, fleet excluded (ms per second).
IDLE_LIMIT_MS = 250.0
IDLE_GROUPS = ("broker", "api", "registry", "search")
JOIN_LIMIT_S = 20.0
BIG = 10000
POLL_S = 0.002
SOAK_TOLERANCE = 0.10


def rss_mb(groups: Mapping[str, Iterable[int]]) -> dict[str, float]:
    """Resident memory of each group of processes, in MB (Linux /proc)."""
    return {name: round(sum(map(_rss_kb, pids)) / 1024, 1) for name, pids in groups.items()
            if name in (*IDLE_GROUPS, "fleet")}


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


async def liveness(amqp_url: str, namespace: str, gateway_url: str,
                   ttl_s: float) -> dict[str, float | None]:
    """Offline after a kill (s, against the TTL) and the staleness after an announcement (ms)."""
    settings = NodeSettings(amqp_url=amqp_url, namespace=namespace, gateway_url=gateway_url,
                            log_level="WARNING")
    node_id = f"probe-{uuid.uuid4().hex[:8]}"
    node = GridNode(settings, node_id, f"http://{node_id}:5000", Inventory(models=["a"]))
    await node.start()
    async with httpx.AsyncClient(base_url=gateway_url, timeout=10) as http:
        try:
            await _until(lambda: _listed(http, node_id), ttl_s * 2)
            stale_ms = await _announcement_seen(http, node)
        finally:
            await node.stop()
        killed = time.perf_counter()
        gone = await _until(lambda: _not_listed(http, node_id), ttl_s * 3)
        offline_s = None if gone is None else gone - killed
        await http.request("DELETE", "/delete-node", json={
            "node-id": node_id, "node-address": node.address})
    return {"offline_s": offline_s, "ttl_s": ttl_s, "stale_ms": stale_ms}


async def _announcement_seen(http: httpx.AsyncClient, node: GridNode) -> float | None:
    model = f"new-{uuid.uuid4().hex[:8]}"
    await node.update_inventory(Inventory(models=["a", model]))
    announced = time.perf_counter()

    async def found() -> bool:
        response = await http.post("/search-model", json={"model_id": model})
        return [node.node_id, node.address] in response.json()

    seen = await _until(found, 5.0)
    return None if seen is None else round((seen - announced) * 1000, 1)


async def _listed(http: httpx.AsyncClient, node_id: str) -> bool:
    return node_id in (await http.get("/connected-nodes")).json()["grid-nodes"]


async def _not_listed(http: httpx.AsyncClient, node_id: str) -> bool:
    return not await _listed(http, node_id)


async def _until(check, within_s: float) -> float | None:
    """Poll ``check`` until true: when (perf_counter) it first was, None if never."""
    deadline = time.perf_counter() + within_s
    while time.perf_counter() < deadline:
        if await check():
            return time.perf_counter()
        await asyncio.sleep(POLL_S)
    return None


def checks(meta: dict) -> list[str]:
    """PASS/FAIL lines for what the scale preset records outside the route runs."""
    lines = []
    label = f"N={BIG}"
    idle = meta.get("idle_cpu_ms_per_s", {}).get(label)
    if idle:
        total = sum(idle.get(group) or 0.0 for group in IDLE_GROUPS)
        lines.append(_line(total <= IDLE_LIMIT_MS, f"idle gateway+broker {label}: "
                           f"{total:.0f} ms/s <= {IDLE_LIMIT_MS:g}"))
    joined = meta.get("join_s", {}).get(label)
    if joined is not None:
        lines.append(_line(joined <= JOIN_LIMIT_S,
                           f"join storm {label}: {joined:.1f} s <= {JOIN_LIMIT_S:g}"))
    lines += soak_check(meta)
    for size, probe in meta.get("liveness", {}).items():
        offline, ttl = probe.get("offline_s"), probe.get("ttl_s")
        lines.append(_line(offline is not None and offline <= ttl,
                           f"killed node offline {size}: {_s(offline)} s <= TTL {ttl:g}"))
        stale = probe.get("stale_ms")
        lines.append(_line(stale is not None, f"inventory change found {size}: "
                           f"{_s(stale)} ms after the announcement"))
    return lines


def soak_check(meta: dict) -> list[str]:
    """RSS after the last minute against after the first, per gateway process, within 10 %."""
    series = meta.get("rss_series") or []
    if len(series) < 2:
        return []
    first, last = series[0], series[-1]
    lines = []
    for group in ("api", "registry", "search"):
        a, b = first.get(group) or 0.0, last.get(group) or 0.0
        ok = a > 0 and abs(b - a) <= SOAK_TOLERANCE * a
        lines.append(_line(ok, f"RSS soak {group}: minute 1 {a:.1f} MB, minute "
                               f"{len(series)} {b:.1f} MB (within {SOAK_TOLERANCE:.0%})"))
    return lines


def growth(meta: dict) -> list[str]:
    """Idle CPU (ms/s), RSS (MB) and join time per fleet size, as the growth table shows them."""
    idle, rss, joins = (meta.get(key, {}) for key in ("idle_cpu_ms_per_s", "rss_mb", "join_s"))
    if not rss:
        return []
    groups = ("api", "registry", "search", "broker")
    lines = ["size     | idle ms/s " + " ".join(f"{g:>8}" for g in groups)
             + " | RSS MB " + " ".join(f"{g:>8}" for g in groups) + " | join s"]
    for label in rss:
        cpu = idle.get(label, {})
        lines.append(f"{label:<8} |           " + " ".join(f"{_s(cpu.get(g)):>8}" for g in groups)
                     + " |        " + " ".join(f"{_s(rss[label].get(g)):>8}" for g in groups)
                     + f" | {_s(joins.get(label))}")
    return lines


def _line(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'}  {text}"


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.3g}"
