"""CPU time of processes, from /proc/<pid>/stat (user + system, in seconds)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid``, or None when it is gone or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing paren.
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def find_pids(command_name: str) -> list[int]:
    """Pids whose /proc/<pid>/comm is ``command_name`` (e.g. ``beam.smp``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == command_name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return sorted(found)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle or waiting on I/O) since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS


def broker_pids() -> list[int]:
    return find_pids("beam.smp")


def snapshot(groups: Mapping[str, Iterable[int]]) -> dict[str, float | None]:
    """Total CPU seconds of each group of pids (None if no pid of the group is readable)."""
    totals: dict[str, float | None] = {}
    for name, pids in groups.items():
        values = [v for v in map(cpu_seconds, pids) if v is not None]
        totals[name] = sum(values) if values else None
    return totals


def snapshot_all(groups: Mapping[str, Iterable[int]]) -> dict[str, float | None]:
    """``snapshot`` plus ``machine``: the busy time of every core."""
    return {**snapshot(groups), "machine": machine_busy_seconds()}


def per_request(before: Mapping[str, float | None], after: Mapping[str, float | None],
                requests: int) -> dict[str, float | None]:
    """CPU seconds per request of each group between two snapshots.

    ``other`` is the machine's busy time that none of the groups accounts for
    (anything else running on the machine while the run was measured).
    """
    result: dict[str, float | None] = {}
    for name, start in before.items():
        end = after.get(name)
        ok = start is not None and end is not None and requests > 0
        result[name] = (end - start) / requests if ok else None
    machine = result.get("machine")
    if machine is not None:
        known = sum(v for k, v in result.items() if k != "machine" and v is not None)
        result["other"] = max(0.0, machine - known)
    return result
