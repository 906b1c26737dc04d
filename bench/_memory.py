"""What processes cost in memory, read from /proc (a private module: `make bench` does not run it).

Every memory figure in bench/ comes from here: PSS and USS from `/proc/<pid>/smaps_rollup`.

- **PSS** (proportional set size): each page a process maps, divided by the number of processes
  that map it. Summed over a set of processes it is what those processes cost the machine,
  shared pages counted once; it is the figure to add up.
- **USS** (unique set size: Private_Clean + Private_Dirty): pages only that process maps, what
  its exit would free.

RSS counts every shared page again in every process that maps it, so a sum of RSS over
processes forked from one preloaded parent is meaningless; nothing here reports one.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

KIB_PER_MB = 1024
FORKSERVER = "multiprocessing.forkserver"


@dataclass(frozen=True)
class Memory:
    """One process's (or a sum of processes') PSS and USS, in MB."""

    pss_mb: float
    uss_mb: float

    def __add__(self, other: Memory) -> Memory:
        return Memory(self.pss_mb + other.pss_mb, self.uss_mb + other.uss_mb)

    def __sub__(self, other: Memory) -> Memory:
        return Memory(self.pss_mb - other.pss_mb, self.uss_mb - other.uss_mb)

    def as_dict(self, digits: int = 1) -> dict[str, float]:
        return {"pss_mb": round(self.pss_mb, digits), "uss_mb": round(self.uss_mb, digits)}


ZERO = Memory(0.0, 0.0)


def memory_of(pid: int) -> Memory:
    """PSS and USS of one live process. Raises OSError if it is gone (or not ours to read)."""
    kib: dict[str, int] = {}
    # the first line names the address range; then "Name:   <n> kB" lines
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields:
            kib[name.strip()] = int(fields[0])
    uss = kib.get("Private_Clean", 0) + kib.get("Private_Dirty", 0)
    return Memory(kib.get("Pss", 0) / KIB_PER_MB, uss / KIB_PER_MB)


def total(pids: Iterable[int]) -> Memory:
    """The sum over the processes still alive (a process that exited costs nothing now)."""
    out = ZERO
    for pid in pids:
        with contextlib.suppress(OSError):
            out = out + memory_of(pid)
    return out


def tree(root: int) -> list[int]:
    """`root` and every live descendant, parents before children."""
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(root)
        return [root, *(c.pid for c in proc.children(recursive=True))]
    return []


def role_of(pid: int, root: int) -> str:
    """What a process of a livekit worker's tree is, from its command line and parent:
    `main`, `forkserver`, `resource_tracker`, `job` (a child of the forkserver), `other`."""
    try:
        proc = psutil.Process(pid)
        cmdline = " ".join(proc.cmdline())
        parent = proc.ppid()
    except psutil.Error:
        return "gone"
    if pid == root:
        return "main"
    with contextlib.suppress(psutil.Error):
        # forked, not exec'd: a job process keeps its forkserver's command line
        if parent != root and FORKSERVER in " ".join(psutil.Process(parent).cmdline()):
            return "job"
    if FORKSERVER in cmdline:
        return "forkserver"
    if "multiprocessing.resource_tracker" in cmdline:
        return "resource_tracker"
    return "other"


def tree_report(root: int) -> dict[str, Any]:
    """Every process of `root`'s tree: role, PSS and USS; the totals, and the totals by role."""
    processes: list[dict[str, Any]] = []
    by_role: dict[str, Memory] = {}
    counts: dict[str, int] = {}
    whole = ZERO
    for pid in tree(root):
        try:
            mem = memory_of(pid)
        except OSError:
            continue
        role = role_of(pid, root)
        processes.append({"pid": pid, "role": role, **mem.as_dict()})
        by_role[role] = by_role.get(role, ZERO) + mem
        counts[role] = counts.get(role, 0) + 1
        whole = whole + mem
    return {
        "processes": processes,
        "by_role": {
            role: {"count": counts[role], **mem.as_dict()} for role, mem in by_role.items()
        },
        "total": {"count": len(processes), **whole.as_dict()},
    }


class PeakSampler:
    """Samples the summed PSS/USS of some processes from a thread; keeps the peak of each sum
    (the peak PSS of the set, not a sum of per-process peaks taken at different moments)."""

    def __init__(self, pids: Sequence[int] = (), interval_s: float = 0.05) -> None:
        self._pids = list(pids)
        self._interval = interval_s
        self._lock = threading.Lock()
        self.peak = ZERO
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, pids: Iterable[int]) -> None:
        with self._lock:
            self._pids = list(dict.fromkeys([*self._pids, *pids]))

    def sample(self) -> Memory:
        with self._lock:
            pids = list(self._pids)
        now = total(pids)
        self.peak = Memory(max(self.peak.pss_mb, now.pss_mb), max(self.peak.uss_mb, now.uss_mb))
        return now

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def __enter__(self) -> PeakSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
