"""A call taken by a human agent: one claim in the capacity store, of two claimants at once.

- the call, `call:<key>` with room for one: the first person to answer wins it, every other
  claim of that call is refused (exactly one winner, across workers on one Redis);
- the human, `human:<id>` with room for their `capacity`: their seats are counted like a
  persona's rooms, so a human on as many calls as they take is not claimed again.

Both or neither (the store's claim-with-check primitive, workers/capacity/store.py). The keys
never name a persona (persona ids have no ':'), so these leases are never in the selector's
counts. A `HumanSeat` is the winner's lease: `release()` gives both back, once.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from config.humans import HumanAgent
from config.logging import get_logger
from workers.capacity.store import CapacityStore, CapacityStoreUnavailable, ClaimRefused

log = get_logger("workers.humans.claims")

CALL_PREFIX = "call:"
HUMAN_PREFIX = "human:"
# A call's key: a room name or a SIP call id (printable, no spaces), bounded.
CALL_KEY = re.compile(r"[!-~]{1,256}")


def check_call_key(call: str) -> str:
    if not isinstance(call, str) or not CALL_KEY.fullmatch(call):
        raise ValueError(
            "a call's key is 1-256 printable characters without spaces (the room name or the "
            "SIP call id)"
        )
    return call


def human_key(human_id: str) -> str:
    return f"{HUMAN_PREFIX}{human_id}"


@dataclass(frozen=True, slots=True)
class _Claimant:
    """What the store reads of each thing it counts (workers.capacity.store.Claimant)."""

    id: str
    cap: int


@dataclass(frozen=True, slots=True)
class SeatLabel:
    """The lease book's view of a seat: its `id` is what /stats lists under the job."""

    id: str


@dataclass(eq=False)
class HumanSeat:
    """The winner's lease of a call: the call's and one of the human's seats. Idempotent
    `release()`; a store that cannot answer then lets a shared lease expire by itself (it is
    no longer refreshed)."""

    call: str
    human: HumanAgent
    lease_ids: tuple[str, ...]
    _claims: HumanClaims = field(repr=False)
    _released: bool = field(default=False, repr=False)

    @property
    def persona(self) -> SeatLabel:
        """For the LeaseBook, which names what a job holds by `lease.persona.id`."""
        return SeatLabel(human_key(self.human.id))

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._claims._give_back(self)


class HumanClaims:
    """Claims of calls by human agents in one capacity store. `lock`: held around every store
    call (the selector's `store_lock` when the store is the worker's: a MemoryStore is not
    thread-safe); none is needed for a store nobody else uses from another thread."""

    def __init__(self, store: CapacityStore, *, lock: threading.Lock | None = None) -> None:
        self.store = store
        self._lock: AbstractContextManager[object] = lock if lock is not None else nullcontext()

    def claim(self, job_id: str, call: str, human: HumanAgent) -> HumanSeat | None:
        """The call for `human`, atomically: None when someone else has the call or the
        human's seats are all taken. Raises CapacityStoreUnavailable (Redis down or settling):
        the caller treats that as nobody free."""
        check_call_key(call)
        claimants = (
            _Claimant(f"{CALL_PREFIX}{call}", 1),
            _Claimant(human_key(human.id), human.capacity),
        )
        try:
            with self._lock:
                ids = self.store.claim(job_id, claimants, (), ((), ()))
        except ClaimRefused:
            return None
        return HumanSeat(call, human, tuple(ids), self)

    def busy_seats(self, human_ids: Sequence[str]) -> dict[str, int]:
        """Seats taken per human, every worker's with a shared store (raises
        CapacityStoreUnavailable)."""
        if not human_ids:
            return {}
        keys = [human_key(h) for h in human_ids]
        with self._lock:
            counts = self.store.snapshot(keys, ()).counts
        return {h: max(0, counts.get(k, 0)) for h, k in zip(human_ids, keys, strict=True)}

    def _give_back(self, seat: HumanSeat) -> None:
        keys = (f"{CALL_PREFIX}{seat.call}", human_key(seat.human.id))
        try:
            with self._lock:
                self.store.release(list(zip(seat.lease_ids, keys, strict=True)))
        except CapacityStoreUnavailable as e:
            log.warning(
                "human_seat_release_failed",
                human=seat.human.id,
                error=str(e),
                hint="the seat is no longer refreshed and frees itself when its lease expires",
            )
