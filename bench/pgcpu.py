"""CPU spent by one PostgreSQL server, split by what its processes do.

The server is found from a connection (its backend's parent is the postmaster), so a
second cluster on the machine (the system one beside a benchmark's own, an embedded one)
is not counted. Processes come and go: autovacuum workers exit when their table is done,
and their CPU would be lost to a sum over the living processes. The postmaster reaps its
children, so the kernel adds their CPU to its ``children_*`` times: what exited during the
measurement is that sum's growth, less what was already counted of each process seen
alive before it exited.

Kinds, from each process's title: ``backends`` (client connections: the engine's
statements), ``autovacuum`` (its workers, while alive), ``background`` (checkpointer,
background and WAL writers, launchers, the postmaster itself), and ``exited``: processes
that ended during the measurement, not seen alive by any sample (in a benchmark, almost
all short autovacuum workers and connections opened for a moment). A server on another
machine (its backend is no local ``postgres`` process) reads as 0 CPU, as it did before
the split: this machine cannot see it.
"""

from __future__ import annotations

from typing import Any

import psutil

KINDS = ("backends", "autovacuum", "background", "exited")


def _kind(title: str) -> str:
    if "autovacuum worker" in title:
        return "autovacuum"
    for word in ("checkpointer", "writer", "launcher", "collector", "archiver", "logger"):
        if word in title:
            return "background"
    return "backends"


def _cpu(times: Any) -> float:
    return float(times.user + times.system)


def _local_postmaster(backend_pid: int) -> psutil.Process | None:
    """The postmaster of this backend, if the backend runs on this machine."""
    try:
        backend = psutil.Process(backend_pid)
        parent = backend.parent()
        if backend.name() == "postgres" and parent is not None and parent.name() == "postgres":
            return parent
    except psutil.Error:
        pass
    return None


class ServerCpu:
    """Samples the CPU of one server's processes since it was created."""

    def __init__(self, backend_pid: int) -> None:
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.kind: dict[int, str] = {}
        self.reaped = self.own = self.reaped_at_start = self.own_at_start = 0.0
        self.alive: set[int] = set()
        self.postmaster = _local_postmaster(backend_pid)
        if self.postmaster is None:
            return  # a server on another machine: its CPU reads as 0
        times = self.postmaster.cpu_times()
        self.reaped_at_start = float(times.children_user + times.children_system)
        self.own_at_start = _cpu(times)
        for pid, title, cpu in self._children():
            self.start[pid] = self.last[pid] = cpu
            self.kind[pid] = _kind(title)
            self.alive.add(pid)

    def _children(self) -> list[tuple[int, str, float]]:
        found: list[tuple[int, str, float]] = []
        if self.postmaster is None:
            return found
        for child in self.postmaster.children():
            try:
                found.append((child.pid, " ".join(child.cmdline()), _cpu(child.cpu_times())))
            except psutil.Error:
                continue
        return found

    def sample(self) -> None:
        """Read every process of the server now (call it often enough to see the long-lived
        ones: what it never saw alive counts as ``exited``)."""
        if self.postmaster is None:
            return
        try:
            times = self.postmaster.cpu_times()
        except psutil.Error:
            return
        self.reaped = float(times.children_user + times.children_system) - self.reaped_at_start
        self.own = _cpu(times) - self.own_at_start
        children = self._children()
        for pid, title, cpu in children:
            self.last[pid] = cpu
            self.kind.setdefault(pid, _kind(title))
        self.alive = {pid for pid, _, _ in children}

    def by_kind(self) -> dict[str, float]:
        """CPU seconds per kind since creation, as of the last sample."""
        split = dict.fromkeys(KINDS, 0.0)
        seen_exited = 0.0
        for pid, cpu in self.last.items():
            split[self.kind[pid]] += cpu - self.start.get(pid, 0.0)
            if pid not in self.alive:
                seen_exited += cpu  # its whole life is in the postmaster's children times
        split["background"] += self.own
        split["exited"] += max(self.reaped - seen_exited, 0.0)
        return split

    def total(self) -> float:
        return sum(self.by_kind().values())
