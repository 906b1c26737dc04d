"""The worker's leases, keyed by job id, in the main process.

A room's leases are taken in `on_request` (main process) but the room runs in a job process.
They are given back when the job ends, whatever ends it: the pool's `process_closed` event
(normal end or crash), and `reconcile` against the server's active jobs as a safety net. Every
method is thread-safe: `load_fnc` runs in an executor thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from config.logging import get_logger

log = get_logger("workers.capacity.leases")

# A job accepted this recently may not be an active job yet: accept waits for the server's
# assignment (up to 7.5 s) and for a job process to start (up to 10 s per attempt).
DEFAULT_GRACE_S = 60.0


class Releasable(Protocol):
    """A selector Lease: the persona it reserves and an idempotent release()."""

    @property
    def persona(self) -> Any: ...

    def release(self) -> None: ...


@dataclass
class _Held:
    leases: list[Releasable]
    since: float
    seen_active: bool = False
    labels: list[str] = field(default_factory=list)


def _leases_of(cast_or_leases: Any) -> list[Releasable]:
    """A selector Cast (its members' leases), one Lease, or an iterable of Leases."""
    members = getattr(cast_or_leases, "members", None)
    if members is not None:
        return [m.lease for m in members]
    if hasattr(cast_or_leases, "release"):
        return [cast_or_leases]
    return list(cast_or_leases)


def _persona_id(lease: Releasable) -> str:
    return str(getattr(lease.persona, "id", "?"))


def _without_first(labels: list[str], persona_id: str) -> list[str]:
    for i, label in enumerate(labels):
        if label == persona_id or label.endswith(f":{persona_id}"):
            return labels[:i] + labels[i + 1 :]
    return labels


class LeaseBook:
    def __init__(
        self, *, grace_s: float = DEFAULT_GRACE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._grace_s = grace_s
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[str, _Held] = {}

    def hold(self, job_id: str, cast_or_leases: Any, *, labels: Iterable[str] = ()) -> None:
        """Keep these leases until `job_id` ends. Holding twice for one job adds to it.
        `labels` (e.g. "dispatcher:tim") are what `held()` shows; the persona ids by default."""
        leases = _leases_of(cast_or_leases)
        names = list(labels) or [_persona_id(lease) for lease in leases]
        with self._lock:
            entry = self._jobs.get(job_id)
            if entry is None:
                self._jobs[job_id] = _Held(leases, self._clock(), labels=names)
            else:
                entry.leases.extend(leases)
                entry.labels.extend(names)

    def release(self, job_id: str) -> bool:
        """Give back the job's leases. False when nothing was held (already released)."""
        with self._lock:
            entry = self._jobs.pop(job_id, None)
        if entry is None:
            return False
        for lease in entry.leases:
            lease.release()
        return True

    def release_persona(self, job_id: str, persona_id: str) -> bool:
        """Give back the one lease `job_id` holds for `persona_id` (an optional persona that
        failed to start); the job keeps the rest. False when the job holds no such lease."""
        return self.release_one(job_id, lambda lease: _persona_id(lease) == persona_id)

    def release_one(self, job_id: str, match: Callable[[Releasable], bool]) -> bool:
        """Give back the first lease of `job_id` that `match`es (a persona's, a human agent's
        seat in one call); the job keeps the rest. False when the job holds no such lease."""
        with self._lock:
            entry = self._jobs.get(job_id)
            if entry is None:
                return False
            found = next((i for i, lease in enumerate(entry.leases) if match(lease)), None)
            if found is None:
                return False
            lease = entry.leases.pop(found)
            # labels are "role:persona" or the persona id, not in the leases' order
            entry.labels[:] = _without_first(entry.labels, _persona_id(lease))
        lease.release()
        return True

    def reconcile(self, active_job_ids: Collection[str]) -> list[str]:
        """Release every job that is not active any more; returns their ids.

        A job seen active once is released as soon as it is gone. A job never seen active
        yet (accept still waiting for the assignment and a process) is kept for the grace
        period, then released: it never started."""
        now = self._clock()
        gone: list[str] = []
        with self._lock:
            for job_id, entry in self._jobs.items():
                if job_id in active_job_ids:
                    entry.seen_active = True
                elif entry.seen_active or now - entry.since >= self._grace_s:
                    gone.append(job_id)
        released = [job_id for job_id in gone if self.release(job_id)]
        if released:
            log.info("leases_reconciled", released=released)
        return released

    def release_all(self) -> list[str]:
        """Worker shutdown: nothing may stay reserved."""
        with self._lock:
            ids = list(self._jobs)
        return [job_id for job_id in ids if self.release(job_id)]

    def held(self) -> dict[str, dict[str, Any]]:
        """Job id -> the personas it holds, for how long, and whether it was seen active."""
        now = self._clock()
        with self._lock:
            return {
                job_id: {
                    "personas": list(entry.labels),
                    "held_s": round(now - entry.since, 1),
                    "active": entry.seen_active,
                }
                for job_id, entry in self._jobs.items()
            }

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)
