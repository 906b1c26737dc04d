"""The desk's core: the catalog's humans, their run-time states and their seats in the capacity
store, answering the three questions a transfer asks (who to ring, who won, the seat back) and
the operators' one (who is where). Synchronous and thread-safe: the worker's main process runs
it for its jobs (workers.humans.service), a room without a worker main process runs it
in-process (workers.humans.local.LocalDesk).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from config.catalog import Catalog
from config.humans import AVAILABILITY, HumanAgent
from workers.humans.availability import AvailabilityBook
from workers.humans.claims import HumanClaims, HumanSeat
from workers.humans.policy import is_free, ringable


class UnknownHuman(KeyError):
    """A human id the catalog does not have."""


@dataclass(frozen=True, slots=True)
class HumanStatus:
    """One human now: their state, their seats taken, and what that makes them: `available`
    (could be rung), `busy` (by state, or every seat taken) or `offline`."""

    human: HumanAgent
    state: str
    busy_seats: int

    @property
    def status(self) -> str:
        if self.state == "offline":
            return "offline"
        return "available" if is_free(self.human, self.state, self.busy_seats) else "busy"

    def to_dict(self) -> dict[str, Any]:
        h = self.human
        return {
            "id": h.id,
            "tenant": h.tenant,
            "name": h.name,
            "skills": list(h.skills),
            "capacity": h.capacity,
            "state": self.state,
            "busy_seats": self.busy_seats,
            "status": self.status,
        }


def per_tenant(rows: Sequence[HumanStatus]) -> dict[str, dict[str, int]]:
    """Per tenant: humans available / busy / offline (by status), seats taken and seats."""
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        totals = out.setdefault(
            row.human.tenant, {**dict.fromkeys(AVAILABILITY, 0), "busy_seats": 0, "seats": 0}
        )
        totals[row.status] += 1
        totals["busy_seats"] += row.busy_seats
        totals["seats"] += row.human.capacity
    return out


class DeskCore:
    def __init__(self, catalog: Catalog, claims: HumanClaims, states: AvailabilityBook) -> None:
        self.catalog = catalog
        self.claims = claims
        self.states = states

    def human(self, human_id: str) -> HumanAgent:
        try:
            return self.catalog.human_by_id[human_id]
        except KeyError:
            raise UnknownHuman(human_id) from None

    def ringable(
        self, tenant: str, *, assigned: Sequence[str], skill: str | None
    ) -> list[HumanAgent]:
        """Who to ring now (workers.humans.policy). Raises CapacityStoreUnavailable."""
        ours = [h for h in self.catalog.human_agents if h.tenant == tenant]
        states = self.states.states(ours)
        # seats are read only for those whose state lets them be rung
        candidates = [h.id for h in ours if states[h.id] == "available"]
        seats = self.claims.busy_seats(candidates)
        return ringable(
            ours, tenant=tenant, assigned=assigned, skill=skill, states=states, seats=seats
        )

    def claim(self, job_id: str, call: str, human_id: str) -> HumanSeat | None:
        """The call for the human, atomically (workers.humans.claims). UnknownHuman,
        ValueError for a bad call key, CapacityStoreUnavailable."""
        return self.claims.claim(job_id, call, self.human(human_id))

    def overview(self) -> list[HumanStatus]:
        """Every human's state and seats now (raises CapacityStoreUnavailable)."""
        humans = self.catalog.human_agents
        states = self.states.states(humans)
        seats = self.claims.busy_seats([h.id for h in humans])
        return [HumanStatus(h, states[h.id], seats[h.id]) for h in humans]
