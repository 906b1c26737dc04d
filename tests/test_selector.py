"""The selector: each strategy, the fallback chain, capacity, casting a scenario, load stats,
on each capacity store (in memory, and on a real Redis: `make_selector`)."""

from __future__ import annotations

import json
import pickle
import random
from collections.abc import Sequence
from typing import Any

import pytest

from config.catalog import Catalog, parse_catalog
from config.scenario import Scenario, load_scenario
from workers.capacity.selector import (
    INBOUND_STRATEGY,
    Cast,
    Lease,
    NoCapacity,
    Selector,
    Strategy,
)

VOICES = {"dispatcher": "alloy", "driver": "echo", "sales": "ash", "support": "sage"}


# -- small catalogs, built the way a user writes them ----------------------------------------


def persona(pid: str, role: str = "driver", cap: int = 3, active: bool = True) -> dict:
    return {
        "id": pid,
        "name": pid.title(),
        "role": role,
        "voice": VOICES[role],
        "instructions": f"You are {pid}.",
        "max_concurrent": cap,
        "active": active,
    }


def campaign(
    cid: str,
    assignments: Sequence[tuple[str, str]] = (),
    strategy: str = "primary_first",
    legacy: str | None = None,
) -> dict:
    return {
        "id": cid,
        "name": cid,
        "tenant": "acme",
        "strategy": strategy,
        "assignments": [{"persona": p, "priority": prio} for p, prio in assignments],
        "legacy_persona": legacy,
    }


def make_catalog(
    personas: list[dict],
    campaigns: list[dict],
    *,
    tenant_default: str | None = None,
    system_default: str | None = None,
    any_role: bool = False,
) -> Catalog:
    data: dict[str, Any] = {
        "tenants": [
            {
                "id": "acme",
                "name": "Acme",
                "tier": "starter",
                "allowed_tools": [],
                "default_persona": tenant_default,
            }
        ],
        "personas": personas,
        "campaigns": campaigns,
        "system_default_persona": system_default,
        "system_default_serves_any_role": any_role,
    }
    return parse_catalog(json.dumps(data), "test-catalog")


def trio(strategy: str, caps: tuple[int, int, int] = (3, 3, 3)) -> Catalog:
    """Drivers a (primary), b, c (backups) in campaign c1."""
    return make_catalog(
        [persona(p, cap=cap) for p, cap in zip("abc", caps, strict=True)],
        [campaign("c1", [("a", "primary"), ("b", "backup"), ("c", "backup")], strategy)],
    )


def scenario(campaign_id: str, *slots: dict[str, Any]) -> Scenario:
    cast = [{"required": True, **s} for s in slots]
    return Scenario.model_validate(
        {"name": "t", "campaign": campaign_id, "cast": cast, "rules": {"turn_policy": "addressed"}}
    )


def preload(sel: Selector, **rooms: int) -> list[Lease]:
    return [sel.acquire_persona(pid) for pid, n in rooms.items() for _ in range(n)]


def picks(sel: Selector, n: int, campaign_id: str = "c1", role: str = "driver") -> list[str]:
    return [sel.acquire(campaign_id, role).persona.id for _ in range(n)]


class FirstChoice(random.Random):
    def choice(self, seq):  # untyped: mypy leaves random.Random's signature alone
        return seq[0]


class LastChoice(random.Random):
    def choice(self, seq):  # untyped: mypy leaves random.Random's signature alone
        return seq[-1]


# -- strategies ------------------------------------------------------------------------------


def test_strategy_is_the_catalogs_enum_and_inbound_uses_least_loaded():
    from config import catalog

    assert Strategy is catalog.Strategy
    assert INBOUND_STRATEGY is Strategy.LEAST_LOADED


def test_least_loaded_picks_the_persona_with_fewest_rooms(make_selector):
    sel = make_selector(trio("least_loaded"), rng=random.Random(1))
    preload(sel, a=2, c=1)
    lease = sel.acquire("c1", "driver")
    assert lease.persona.id == "b"
    assert lease.reason == "least loaded (0 of 3)"


def test_least_loaded_breaks_ties_at_random_and_never_picks_a_busier_persona(make_selector):
    sel = make_selector(trio("least_loaded"), rng=random.Random(1))
    preload(sel, a=2, b=1, c=1)
    seen = set()
    for _ in range(60):
        lease = sel.acquire("c1", "driver")
        seen.add(lease.persona.id)
        assert lease.reason == "least loaded (1 of 3)"
        lease.release()
    assert seen == {"b", "c"}


def test_least_loaded_ties_are_broken_through_the_given_rng(make_selector):
    first = make_selector(trio("least_loaded"), FirstChoice())
    last = make_selector(trio("least_loaded"), LastChoice())
    assert first.acquire("c1", "driver").persona.id == "a"
    assert last.acquire("c1", "driver").persona.id == "c"
    seeded = [make_selector(trio("least_loaded"), random.Random(42)) for _ in range(2)]
    assert picks(seeded[0], 9) == picks(seeded[1], 9)


def test_round_robin_rotates_whatever_the_load(make_selector):
    sel = make_selector(trio("round_robin"))
    assert picks(sel, 4) == ["a", "b", "c", "a"]
    lease = sel.acquire("c1", "driver")
    assert (lease.persona.id, lease.reason) == ("b", "round robin")
    lease.release()  # freeing b does not send the rotation back to it
    assert picks(sel, 1) == ["c"]


def test_round_robin_skips_only_unavailable_personas(make_selector):
    cat = make_catalog(
        [persona("a"), persona("b", cap=1), persona("c", active=False), persona("d")],
        [campaign("c1", [(p, "backup") for p in "abcd"], "round_robin")],
    )
    sel = make_selector(cat)
    preload(sel, b=1)
    assert picks(sel, 4) == ["a", "d", "a", "d"]


def test_round_robin_rotation_is_per_campaign_and_role(make_selector):
    cat = make_catalog(
        [persona("a", cap=9), persona("b", cap=9), persona("x", "sales"), persona("y", "sales")],
        [
            campaign("c1", [("a", "primary"), ("b", "backup"), ("x", "primary"), ("y", "backup")]),
            campaign("c2", [("a", "primary"), ("b", "backup")]),
        ],
    )
    sel = make_selector(cat)
    rr = Strategy.ROUND_ROBIN
    assert [sel.acquire("c1", "driver", rr).persona.id for _ in range(3)] == ["a", "b", "a"]
    assert sel.acquire("c2", "driver", rr).persona.id == "a"
    assert sel.acquire("c1", "sales", rr).persona.id == "x"
    assert sel.acquire("c1", "driver", rr).persona.id == "b"


def test_primary_first_moves_to_backup_only_at_capacity_and_back_when_it_frees(make_selector):
    sel = make_selector(trio("primary_first", caps=(2, 1, 3)))
    first = [sel.acquire("c1", "driver") for _ in range(2)]
    assert [(lease.persona.id, lease.reason) for lease in first] == [("a", "primary")] * 2
    backup = sel.acquire("c1", "driver")
    assert (backup.persona.id, backup.reason) == ("b", "backup: primary at capacity")
    assert picks(sel, 1) == ["c"]  # backups in assignment order
    first[0].release()
    again = sel.acquire("c1", "driver")
    assert (again.persona.id, again.reason) == ("a", "primary")


def test_primary_first_tries_primaries_before_backups_listed_earlier(make_selector):
    cat = make_catalog(
        [persona("a"), persona("b")], [campaign("c1", [("b", "backup"), ("a", "primary")])]
    )
    assert picks(make_selector(cat), 1) == ["a"]


def test_primary_first_says_when_the_primary_is_inactive(make_selector):
    cat = make_catalog(
        [persona("a", active=False), persona("b")],
        [campaign("c1", [("a", "primary"), ("b", "backup")])],
    )
    lease = make_selector(cat).acquire("c1", "driver")
    assert (lease.persona.id, lease.reason) == ("b", "backup: primary inactive")


def test_random_picks_uniformly_among_available_only(make_selector):
    sel = make_selector(trio("random", caps=(3, 1, 3)), rng=random.Random(3))
    preload(sel, b=1)
    seen = []
    for _ in range(80):
        lease = sel.acquire("c1", "driver")
        assert lease.reason == "random"
        seen.append(lease.persona.id)
        lease.release()
    assert set(seen) == {"a", "c"}
    assert 20 <= seen.count("a") <= 60


def test_the_call_strategy_overrides_the_campaigns(make_selector):
    sel = make_selector(trio("primary_first"))
    assert [sel.acquire("c1", "driver", "round_robin").persona.id for _ in range(2)] == ["a", "b"]
    assert picks(sel, 1) == ["a"]  # the campaign's own strategy: primary_first
    with pytest.raises(ValueError, match="unknown strategy 'fastest'"):
        sel.acquire("c1", "driver", "fastest")
    assert sel.stats()["summary"]["total_active_rooms"] == 3


# -- fallback chain --------------------------------------------------------------------------


def chain_catalog(strategy: str = "primary_first", *, any_role: bool = True) -> Catalog:
    return make_catalog(
        [
            persona("a", cap=1),
            persona("leg", cap=1),
            persona("ten", cap=1),
            persona("sys", "support", cap=1),
        ],
        [campaign("c1", [("a", "primary")], strategy, legacy="leg")],
        tenant_default="ten",
        system_default="sys",
        any_role=any_role,
    )


FIRST_REASON = {
    Strategy.PRIMARY_FIRST: "primary",
    Strategy.ROUND_ROBIN: "round robin",
    Strategy.LEAST_LOADED: "least loaded (0 of 1)",
    Strategy.RANDOM: "random",
}


@pytest.mark.parametrize("strategy", list(Strategy))
def test_the_whole_priority_chain_in_order(strategy, make_selector):
    sel = make_selector(chain_catalog(strategy))
    got = [sel.acquire("c1", "driver") for _ in range(4)]
    assert [(lease.persona.id, lease.reason) for lease in got] == [
        ("a", FIRST_REASON[strategy]),
        ("leg", "legacy persona"),
        ("ten", "tenant default persona"),
        ("sys", "system default persona"),
    ]
    with pytest.raises(NoCapacity) as info:
        sel.acquire("c1", "driver")
    for name in ("a at capacity", "legacy persona leg", "tenant default persona ten", "sys"):
        assert name in info.value.reason
    got[2].release()
    assert sel.acquire("c1", "driver").persona.id == "ten"  # the chain restarts from the top


def test_fallbacks_count_only_with_the_needed_role(make_selector):
    cat = make_catalog(
        [persona("a", cap=1), persona("leg", "sales"), persona("ten", "sales")],
        [campaign("c1", [("a", "primary")], legacy="leg")],
        tenant_default="ten",
    )
    sel = make_selector(cat)
    sel.acquire("c1", "driver")
    with pytest.raises(NoCapacity) as info:
        sel.acquire("c1", "driver")
    assert "legacy persona leg is a sales persona" in info.value.reason
    assert "tenant default persona ten is a sales persona" in info.value.reason
    assert sel.acquire("c1", "sales").reason == "legacy persona"


def test_system_default_serves_another_role_only_if_the_catalog_says_so(make_selector):
    strict = make_selector(chain_catalog(any_role=False))
    preload(strict, a=1, leg=1, ten=1)
    with pytest.raises(NoCapacity, match="system default persona sys is a support persona"):
        strict.acquire("c1", "driver")
    assert strict.acquire("c1", "support").reason == "system default persona"
    lenient = make_selector(chain_catalog(any_role=True))
    preload(lenient, a=1, leg=1, ten=1)
    assert lenient.acquire("c1", "driver").persona.id == "sys"


def test_a_legacy_only_campaign_uses_its_legacy_persona(make_selector):
    cat = make_catalog([persona("old")], [campaign("hotline", legacy="old")])
    lease = make_selector(cat).acquire("hotline", "driver")
    assert (lease.persona.id, lease.reason) == ("old", "legacy persona")


def test_inactive_and_excluded_fallbacks_are_skipped(make_selector):
    cat = make_catalog(
        [persona("a", cap=1), persona("leg", active=False), persona("ten"), persona("sys")],
        [campaign("c1", [("a", "primary")], legacy="leg")],
        tenant_default="ten",
        system_default="sys",
    )
    sel = make_selector(cat)
    preload(sel, a=1)
    assert sel.acquire("c1", "driver").reason == "tenant default persona"
    lease = sel.acquire("c1", "driver", exclude=frozenset({"ten"}))
    assert (lease.persona.id, lease.reason) == ("sys", "system default persona")


def test_unknown_campaign_is_no_capacity_naming_it(make_selector):
    with pytest.raises(NoCapacity, match="unknown campaign 'nope'"):
        make_selector(trio("primary_first")).acquire("nope", "driver")


# -- availability and capacity ---------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(Strategy))
def test_inactive_personas_are_never_chosen(strategy, make_selector):
    cat = make_catalog(
        [persona("a", active=False), persona("b", cap=2)],
        [campaign("c1", [("a", "primary"), ("b", "backup")], strategy)],
    )
    sel = make_selector(cat, random.Random(0))
    assert picks(sel, 2) == ["b", "b"]
    with pytest.raises(NoCapacity) as info:
        sel.acquire("c1", "driver")
    assert "a inactive" in info.value.reason and "b at capacity (2/2)" in info.value.reason
    with pytest.raises(NoCapacity, match="persona 'a' is inactive"):
        sel.acquire_persona("a")


def test_capacity_is_shared_across_campaigns(make_selector):
    cat = make_catalog(
        [persona("s", cap=2)],
        [campaign("c1", [("s", "primary")]), campaign("c2", [("s", "backup")])],
    )
    sel = make_selector(cat)
    sel.acquire("c1", "driver")
    sel.acquire("c2", "driver")
    assert sel.active_rooms("s") == 2
    for cid in ("c1", "c2"):
        with pytest.raises(NoCapacity):
            sel.acquire(cid, "driver")


def test_exclude_keeps_a_persona_out_of_the_same_room(make_selector):
    sel = make_selector(trio("primary_first"))
    lease = sel.acquire("c1", "driver", exclude=frozenset({"a"}))
    assert (lease.persona.id, lease.reason) == ("b", "backup: primary already in the room")


def test_lease_release_is_idempotent(make_selector):
    sel = make_selector(trio("primary_first", caps=(1, 1, 1)))
    lease = sel.acquire("c1", "driver")
    assert (lease.campaign_id, lease.role, lease.released) == ("c1", "driver", False)
    assert lease.release() is None
    lease.release()
    assert lease.released and sel.active_rooms("a") == 0
    other = sel.acquire("c1", "driver")
    lease.release()  # a stale lease must not free the room someone else now holds
    assert sel.active_rooms("a") == 1 and not other.released
    with other:
        pass
    assert other.released and sel.active_rooms("a") == 0


def test_acquire_persona_reserves_that_persona(make_selector):
    sel = make_selector(trio("primary_first", caps=(1, 3, 3)))
    lease = sel.acquire_persona("a", campaign_id="c1")
    assert (lease.persona.id, lease.role, lease.reason) == ("a", "driver", "pinned by scenario")
    assert sel.acquire_persona("b", reason="voicemail").reason == "voicemail"
    with pytest.raises(NoCapacity) as info:
        sel.acquire_persona("a", campaign_id="c1")
    assert info.value.role == "driver" and "at capacity (1/1)" in str(info.value)
    with pytest.raises(NoCapacity, match="unknown persona 'zed'"):
        sel.acquire_persona("zed")


def test_no_capacity_names_the_role_and_why(make_selector):
    sel = make_selector(trio("primary_first", caps=(1, 1, 1)))
    preload(sel, a=1, b=1, c=1)
    with pytest.raises(NoCapacity) as info:
        sel.acquire("c1", "driver")
    exc = info.value
    assert (exc.campaign_id, exc.role) == ("c1", "driver")
    assert str(exc).startswith("role 'driver': no free driver persona in campaign 'c1'")
    assert "a at capacity (1/1), b at capacity (1/1), c at capacity (1/1)" in exc.reason
    again = pickle.loads(pickle.dumps(exc))
    assert (again.campaign_id, again.role, again.reason) == ("c1", "driver", exc.reason)


# -- casting a scenario ----------------------------------------------------------------------


def test_cast_of_a_shipped_scenario(catalog, scenarios_dir, make_selector):
    sel = make_selector(catalog)
    s = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    cast = sel.cast(s)
    assert isinstance(cast, Cast)
    assert [(m.slot.role, m.persona.id, m.reason) for m in cast.members] == [
        ("dispatcher", "tim", "primary"),
        ("driver", "chris", "primary"),
    ]
    assert cast.opener.persona.id == "tim" and cast.lead.persona.id == "tim"
    driver = cast.member_for("driver")
    assert driver is not None and driver.lease.persona.id == "chris"
    assert cast.member_for("sales") is None and cast.missing == []
    assert json.loads(json.dumps(cast.to_dict())) == {
        "scenario": "dispatch_checkin",
        "campaign": "freight-dispatch",
        "members": [
            {
                "role": role,
                "persona": name.lower(),
                "name": name,
                "reason": "primary",
                "required": True,
            }
            for role, name in (("dispatcher", "Tim"), ("driver", "Chris"))
        ],
        "missing": [],
    }
    cast.release()
    cast.release()
    assert all(m.lease.released for m in cast.members)
    assert sel.stats()["summary"]["total_active_rooms"] == 0


def test_cast_is_all_or_nothing_on_required_slots(catalog, scenarios_dir, make_selector):
    sel = make_selector(catalog)
    held = preload(sel, chris=3, maria=3)
    s = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    with pytest.raises(NoCapacity) as info:
        sel.cast(s)
    assert info.value.role == "driver" and "role 'driver'" in str(info.value)
    assert sel.active_rooms("tim") == 0  # the dispatcher lease taken first was given back
    assert sel.stats()["summary"]["total_active_rooms"] == 6
    for lease in held:
        lease.release()
    assert sel.stats()["summary"]["total_active_rooms"] == 0
    assert sel.worker_load() == 0.0


def test_optional_slots_left_empty_are_reported(catalog, scenarios_dir, make_selector):
    sel = make_selector(catalog)
    preload(sel, sam=3, priya=2)
    s = load_scenario("inbound_support", scenarios_dir=scenarios_dir)
    cast = sel.cast(s)
    assert [m.slot.role for m in cast.members] == ["support"]
    assert [role for role, _ in cast.missing] == ["sales"]
    assert "sam at capacity (3/3)" in cast.missing[0][1]
    assert cast.to_dict()["missing"] == [{"role": "sales", "reason": cast.missing[0][1]}]


def any_role_catalog() -> Catalog:
    """Only a dispatcher is assigned; the system default `x` may serve any role."""
    return make_catalog(
        [persona("d", "dispatcher"), persona("x", "support")],
        [campaign("c1", [("d", "primary")])],
        system_default="x",
        any_role=True,
    )


def test_the_same_persona_never_fills_two_slots(make_selector):
    sel = make_selector(any_role_catalog())
    s = scenario(
        "c1", {"role": "dispatcher"}, {"role": "driver"}, {"role": "sales", "required": False}
    )
    cast = sel.cast(s)
    assert [(m.slot.role, m.persona.id) for m in cast.members] == [
        ("dispatcher", "d"),
        ("driver", "x"),
    ]
    assert cast.missing[0][0] == "sales" and "x already in the room" in cast.missing[0][1]
    with pytest.raises(NoCapacity) as info:
        sel.cast(scenario("c1", {"role": "dispatcher"}, {"role": "driver"}, {"role": "sales"}))
    assert info.value.role == "sales"
    assert sel.active_rooms("d") == 1 and sel.active_rooms("x") == 1  # only the first cast


def test_required_slots_are_filled_before_optional_ones(make_selector):
    sel = make_selector(any_role_catalog())
    s = scenario(
        "c1", {"role": "dispatcher"}, {"role": "sales", "required": False}, {"role": "driver"}
    )
    cast = sel.cast(s)
    assert [(m.slot.role, m.persona.id) for m in cast.members] == [
        ("dispatcher", "d"),
        ("driver", "x"),
    ]
    assert [role for role, _ in cast.missing] == ["sales"]


def test_pinned_slots_take_their_persona_first(make_selector):
    sel = make_selector(any_role_catalog())
    s = scenario(
        "c1",
        {"role": "dispatcher"},
        {"role": "driver", "required": False},
        {"role": "support", "persona": "x"},
    )
    cast = sel.cast(s)
    assert [(m.slot.role, m.persona.id, m.reason) for m in cast.members] == [
        ("dispatcher", "d", "primary"),
        ("support", "x", "pinned by scenario"),
    ]
    assert [role for role, _ in cast.missing] == ["driver"]
    cast.release()
    # Both required: the pin holds x, so the error names the slot that really has nobody.
    s = scenario(
        "c1", {"role": "dispatcher"}, {"role": "driver"}, {"role": "support", "persona": "x"}
    )
    with pytest.raises(NoCapacity) as info:
        sel.cast(s)
    assert info.value.role == "driver" and "x already in the room" in info.value.reason


def test_an_optional_pin_never_takes_the_persona_a_required_slot_needs(make_selector):
    sel = make_selector(any_role_catalog())
    s = scenario(
        "c1",
        {"role": "dispatcher"},
        {"role": "support", "persona": "x", "required": False},
        {"role": "driver"},
    )
    cast = sel.cast(s)
    assert [(m.slot.role, m.persona.id) for m in cast.members] == [
        ("dispatcher", "d"),
        ("driver", "x"),
    ]
    assert cast.missing == [("support", "persona 'x' already fills another slot")]


def test_a_pinned_persona_at_capacity_fails_the_cast(make_selector):
    sel = make_selector(any_role_catalog())
    preload(sel, x=3)
    with pytest.raises(NoCapacity, match="persona 'x' is at capacity"):
        sel.cast(scenario("c1", {"role": "dispatcher"}, {"role": "support", "persona": "x"}))
    assert sel.active_rooms("d") == 0


def test_cast_strategy_is_the_calls_else_the_campaigns(make_selector):
    cat = make_catalog(
        [persona("a"), persona("b"), persona("d", "dispatcher")],
        [campaign("c1", [("d", "primary"), ("a", "primary"), ("b", "backup")])],
    )
    sel = make_selector(cat)
    s = scenario("c1", {"role": "dispatcher"}, {"role": "driver"})
    drivers = [sel.cast(s, "round_robin").member_for("driver").persona.id for _ in range(2)]
    assert drivers == ["a", "b"]
    assert sel.cast(s).member_for("driver").reason == "primary"


def test_lead_falls_back_to_the_opener_when_its_optional_slot_is_empty(make_selector):
    sel = make_selector(any_role_catalog())
    preload(sel, x=3)
    s = scenario(
        "c1",
        {"role": "dispatcher", "opens": True},
        {"role": "support", "required": False, "leads": True},
    )
    cast = sel.cast(s)
    assert cast.lead is cast.opener and cast.opener.persona.id == "d"


# -- stats and worker load -------------------------------------------------------------------


def test_stats_report_each_persona_and_the_totals(make_selector):
    cat = make_catalog(
        [persona("a"), persona("b", cap=8), persona("c", cap=1), persona("m", active=False)],
        [campaign("c1", [(p, "backup") for p in "abc"])],
    )
    sel = make_selector(cat)
    preload(sel, a=2, b=1, c=1)
    stats = sel.stats()
    by_id = {s["id"]: s for s in stats["personas"]}
    assert by_id["a"] == {
        "id": "a",
        "name": "A",
        "role": "driver",
        "max": 3,
        "active": 2,
        "available": True,
        "load_percentage": 67,
    }
    assert by_id["b"]["load_percentage"] == 13  # 12.5 rounds up
    assert (by_id["c"]["available"], by_id["c"]["load_percentage"]) == (False, 100)
    assert (by_id["m"]["available"], by_id["m"]["active"], by_id["m"]["max"]) == (False, 0, 3)
    assert stats["summary"] == {
        "personas": 4,
        "personas_with_active_rooms": 3,
        "available_personas": 2,
        "total_active_rooms": 4,
    }
    assert sel.active_rooms("a") == 2 and sel.active_rooms("m") == 0


def test_worker_load_is_rooms_in_use_over_active_capacity(make_selector):
    cat = make_catalog(
        [persona("a", cap=3), persona("b", cap=1), persona("m", cap=5, active=False)],
        [campaign("c1", [("a", "primary"), ("b", "backup")])],
    )
    sel = make_selector(cat)
    assert sel.worker_load() == 0.0
    leases = preload(sel, a=2)
    assert sel.worker_load() == 0.5  # 2 of 4: the inactive persona's 5 do not count
    leases += preload(sel, a=1, b=1)
    assert sel.worker_load() == 1.0
    for lease in leases:
        lease.release()
    assert sel.worker_load() == 0.0
