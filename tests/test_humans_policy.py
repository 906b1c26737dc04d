"""Who a transfer rings (workers.humans.policy.ringable, a pure function): the contact's
assigned agents that are free, else every free agent of the tenant with the skill. Never a
busy (by state or by a full capacity) or offline one."""

from __future__ import annotations

import pytest

from config.humans import HumanAgent
from tests.humans_catalog import ACME, BRIGHT, human, humans_catalog
from workers.humans.policy import assigned_agents, ringable

CATALOG = humans_catalog(
    [
        human("alice", skills=["support"]),
        human("bob", skills=["support", "sales"], capacity=2),
        human("cleo", skills=["sales"]),
        human("dev", skills=["support"], availability="offline"),
        human("ed", tenant=ACME, skills=["support"]),
    ],
    [{"contact": "c-7", "tenant": BRIGHT, "agents": ["cleo", "alice"]}],
)
HUMANS = CATALOG.human_agents


def ids(found: list[HumanAgent]) -> list[str]:
    return [h.id for h in found]


def ring(
    *,
    assigned: tuple[str, ...] = (),
    skill: str | None = "support",
    states: dict[str, str] | None = None,
    seats: dict[str, int] | None = None,
    tenant: str = BRIGHT,
) -> list[str]:
    return ids(
        ringable(
            HUMANS,
            tenant=tenant,
            assigned=assigned,
            skill=skill,
            states=states or {},
            seats=seats or {},
        )
    )


def test_without_assignments_every_free_agent_of_the_tenant_with_the_skill():
    assert ring() == ["alice", "bob"]  # dev is offline by the catalog, ed is another tenant's
    assert ring(skill="sales") == ["bob", "cleo"]
    assert ring(skill=None) == ["alice", "bob", "cleo"]
    assert ring(tenant=ACME) == ["ed"]
    assert ring(skill="billing") == []


def test_the_assigned_agents_come_first_in_their_order_skill_or_not():
    assert ring(assigned=("cleo", "alice")) == ["cleo", "alice"]  # cleo lacks "support"
    assert ring(assigned=("cleo", "cleo")) == ["cleo"]


def test_only_the_free_assigned_agents_are_rung():
    assert ring(assigned=("cleo", "alice"), states={"cleo": "busy"}) == ["alice"]
    assert ring(assigned=("cleo", "alice"), seats={"alice": 1}) == ["cleo"]


def test_no_free_assigned_agent_falls_back_to_the_skilled_ones():
    busy = {"cleo": "offline", "alice": "busy"}
    assert ring(assigned=("cleo", "alice"), states=busy) == ["bob"]
    # an id of another tenant's (or unknown) is not rung, and does not count as free
    assert ring(assigned=("ed", "nobody")) == ["alice", "bob"]


@pytest.mark.parametrize(
    ("states", "seats", "rung"),
    [
        ({"alice": "busy"}, {}, ["bob"]),  # busy by state
        ({"alice": "offline"}, {}, ["bob"]),
        ({}, {"alice": 1}, ["bob"]),  # busy by capacity: her one seat is taken
        ({}, {"bob": 1}, ["alice", "bob"]),  # bob takes two calls
        ({}, {"bob": 2, "alice": 1}, []),
        ({"dev": "available"}, {}, ["alice", "bob", "dev"]),  # set available at run time
    ],
)
def test_never_a_busy_or_offline_agent(states, seats, rung):
    assert ring(states=states, seats=seats) == rung


def test_the_run_time_state_wins_over_the_catalogs_starting_state():
    assert ring(states={"alice": "available", "dev": "available"}) == ["alice", "bob", "dev"]
    assert ring(states={"bob": "offline"}) == ["alice"]


def test_the_contacts_assigned_agents_from_the_scenario_else_the_catalog():
    assert assigned_agents(CATALOG, BRIGHT, {"contact": "c-7"}) == ("cleo", "alice")
    both = {"contact": "c-7", "assigned_agents": ["bob"]}
    assert assigned_agents(CATALOG, BRIGHT, both) == ("bob",)  # the scenario's win
    assert assigned_agents(CATALOG, BRIGHT, {"contact": "unknown"}) == ()
    assert assigned_agents(CATALOG, ACME, {"contact": "c-7"}) == ()  # another tenant's table
    assert assigned_agents(CATALOG, BRIGHT, {}) == ()
