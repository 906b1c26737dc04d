"""The counts of one worker, in its own process: the embedded default capacity store (no
network). Only its own selector writes them, under the selector's lock, so its claims never
lose a race."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from workers.capacity.store import Claimant, ClaimRefused, Move, Refreshed, Snapshot, Watch


class MemoryStore:
    """The counts of one worker, in this process: today's selector, no network. Its selector
    calls it under its own lock, which is also what keeps it consistent: a MemoryStore
    belongs to exactly one selector. Nothing expires and no reply is lost in memory, so it
    keeps counts, not lease ids: the selector's Lease makes each release count once."""

    name = "memory"
    shared = False

    def __init__(self) -> None:
        self._rooms: defaultdict[str, int] = defaultdict(int)
        self._cursors: defaultdict[str, int] = defaultdict(int)

    def snapshot(self, persona_ids: Sequence[str], pool_keys: Sequence[str]) -> Snapshot:
        rooms, cursors = self._rooms, self._cursors
        return Snapshot(
            {pid: rooms[pid] for pid in persona_ids}, {key: cursors[key] for key in pool_keys}
        )

    def claim(
        self,
        job_id: str,
        personas: Sequence[Claimant],
        moves: Sequence[Move],
        watch: Watch,
        seen: Sequence[int] | None = None,  # only this selector writes: always current
    ) -> tuple[str, ...]:
        rooms = self._rooms
        for persona in personas:
            pid = persona.id
            n = rooms[pid]
            if n >= persona.cap:
                self._undo(personas, persona)
                raise ClaimRefused(self.snapshot(*watch))
            rooms[pid] = n + 1
        if moves:
            positions = self._cursors
            for pool, _ in moves:
                if positions[pool.key] != pool.cursor:
                    self._undo(personas, None)
                    raise ClaimRefused(self.snapshot(*watch))
            for pool, cursor in moves:
                positions[pool.key] = cursor
        return (job_id,) * len(personas)  # in memory, a lease is known by its job

    def _undo(self, personas: Sequence[Claimant], upto: Claimant | None) -> None:
        """Give back the rooms a refused claim took (before `upto`): all or nothing."""
        for persona in personas:
            if persona is upto:
                return
            self.release(((persona.id, persona.id),))

    def release(self, leases: Sequence[tuple[str, str]]) -> None:
        rooms = self._rooms
        for _, pid in leases:
            n = rooms[pid] - 1
            if n:
                rooms[pid] = n
            else:  # forgotten at zero: a call's key is claimed once, then never again
                del rooms[pid]

    def refresh(self) -> Refreshed:
        return Refreshed(sum(self._rooms.values()))  # nothing expires in memory

    def needs_refresh(self) -> bool:
        return False  # nothing is lost in memory

    def held(self) -> Counter[str]:
        return Counter({pid: n for pid, n in self._rooms.items() if n})

    def describe(self) -> str:
        return "memory"

    def close(self) -> None:
        return None
