"""CPU time of processes, from /proc (user + system, in seconds).

Snapshots are per pid, and a group's usage is summed over the pids present
in both snapshots, so a process that appears or vanishes in between (a
short-lived ``rabbitmqctl`` is also a ``beam.smp``) cannot skew it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from shared.settings import split_amqp_urls

TICKS = os.sysconf("SC_CLK_TCK")
Snapshot = dict[str, dict[int, float]]
MACHINE = "machine"


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid``, or None when it is gone or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing paren.
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle or waiting on I/O) since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on ``port`` (IPv4 and IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(fields[9])
    return inodes


def _owns_socket(pid: int, inodes: set[str]) -> bool:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def _beam_pids() -> list[int]:
    return sorted(int(e.name) for e in Path("/proc").iterdir()
                  if e.name.isdigit() and _comm(int(e.name)) == "beam.smp")


def brokers_of(amqp_url: str) -> list[int]:
    """The broker processes of every node an ``AMQP_URL`` names (a cluster: all of them)."""
    return [pid for url in split_amqp_urls(amqp_url)
            for pid in broker_pids(urlsplit(url).port or 5672)]


def broker_pids(port: int = 5672) -> list[int]:
    """The Erlang VM of the RabbitMQ server listening on ``port``.

    Other ``beam.smp`` processes (``rabbitmqctl``, another broker) are left out.
    Without the rights to see sockets, falls back to ``beam.smp ... -s rabbit boot``.
    """
    beams = _beam_pids()
    inodes = _listening_inodes(port)
    owners = [pid for pid in beams if inodes and _owns_socket(pid, inodes)]
    if owners:
        return owners
    return [pid for pid in beams
            if any(args == ["-s", "rabbit", "boot"]
                   for args in _windows(_cmdline(pid), 3))]


def _windows(items: list[str], size: int) -> list[list[str]]:
    return [items[i:i + size] for i in range(len(items) - size + 1)]


def snapshot(groups: Mapping[str, Iterable[int]]) -> Snapshot:
    """CPU seconds of every pid of every group, plus the machine's busy time (as pid 0)."""
    taken: Snapshot = {}
    for name, pids in groups.items():
        values = {pid: cpu_seconds(pid) for pid in pids}
        taken[name] = {pid: v for pid, v in values.items() if v is not None}
    taken[MACHINE] = {0: machine_busy_seconds()}
    return taken


def per_request(before: Snapshot, after: Snapshot, requests: int) -> dict[str, float | None]:
    """CPU seconds per request of each group between two snapshots.

    ``other`` is the machine's busy time that no group accounts for: anything
    else that ran on the machine while the run was measured.
    """
    result: dict[str, float | None] = {}
    for name, start in before.items():
        end = after.get(name, {})
        common = start.keys() & end.keys()
        ok = bool(common) and requests > 0
        result[name] = sum(end[p] - start[p] for p in common) / requests if ok else None
    machine = result.get(MACHINE)
    if machine is not None:
        known = sum(v for k, v in result.items() if k != MACHINE and v is not None)
        result["other"] = max(0.0, machine - known)
    return result
