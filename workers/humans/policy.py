"""Who a transfer may ring: pure functions of the catalog, the humans' states and their seats.

A contact's assigned agents come first (the scenario's `context.assigned_agents`, else the
catalog's `contact_assignments` for `context.contact`): those of them available with a free
seat. If none is, every available agent of the tenant with the skill and a free seat. Never a
busy one (by state, or with every seat taken) nor an offline one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from config.catalog import Catalog
from config.humans import HumanAgent


def assigned_agents(catalog: Catalog, tenant: str, context: Mapping[str, Any]) -> tuple[str, ...]:
    """The contact's assigned agents, in order: the scenario context's `assigned_agents`,
    else the catalog's table for `context.contact`, else none."""
    named = context.get("assigned_agents")
    if named:
        return tuple(named)
    contact = context.get("contact")
    return catalog.assigned_humans(tenant, contact) if contact else ()


def is_free(human: HumanAgent, state: str, busy_seats: int) -> bool:
    """Available by state, with a seat left."""
    return state == "available" and busy_seats < human.capacity


def ringable(
    humans: Sequence[HumanAgent],
    *,
    tenant: str,
    assigned: Sequence[str],
    skill: str | None,
    states: Mapping[str, str],
    seats: Mapping[str, int],
) -> list[HumanAgent]:
    """The humans to ring now, in catalog order (assigned ones in their assigned order).
    `states` and `seats` are by human id; a human missing from `states` is in their catalog
    availability, from `seats` has none taken. `skill` None: any skill."""
    ours = {h.id: h for h in humans if h.tenant == tenant}

    def free(h: HumanAgent) -> bool:
        return is_free(h, states.get(h.id, h.availability), seats.get(h.id, 0))

    first = [ours[a] for a in dict.fromkeys(assigned) if a in ours and free(ours[a])]
    if first:
        return first
    return [h for h in ours.values() if free(h) and (skill is None or skill in h.skills)]
