"""The catalog's human agents and contact assignments, and a scenario's assigned agents:
checked with the path and the fix, like every catalog entry."""

from __future__ import annotations

import copy
import json

import pytest

from config.catalog import CatalogError, parse_catalog
from config.errors import ScenarioError
from config.humans import human_identity
from config.scenario import check_scenario, parse_scenario
from workers.tokens import check_human_identity


def _with(catalog_data: dict, humans: list, contacts: list | None = None) -> dict:
    data = copy.deepcopy(catalog_data)
    data["human_agents"] = humans
    data["contact_assignments"] = contacts or []
    return data


def _human(of_tenant: str, **fields) -> dict:
    human = {"id": "alice", "tenant": of_tenant, "name": "Alice", "phone": "+15550100201"}
    return {**human, **fields}


def test_human_agents_load_with_defaults(catalog_data):
    tenant = catalog_data["tenants"][0]["id"]
    data = _with(
        catalog_data,
        [
            _human(tenant, skills=["support"]),
            _human(tenant, id="bob", phone=None, sip_uri="sip:bob@10.0.0.5:5081"),
        ],
        [{"contact": "c-1", "tenant": tenant, "agents": ["bob"]}],
    )
    catalog = parse_catalog(_dump(data))
    alice, bob = catalog.human_agents
    assert (alice.capacity, alice.availability, alice.address) == (1, "available", "+15550100201")
    assert bob.address == "sip:bob@10.0.0.5:5081"
    assert catalog.assigned_humans(tenant, "c-1") == ("bob",)
    assert catalog.assigned_humans(tenant, "nobody") == ()


def _dump(data: dict) -> str:
    return json.dumps(data)


@pytest.mark.parametrize(
    ("human", "path", "words"),
    [
        ({"phone": "555-0100"}, "$.human_agents[0].phone", "E.164"),
        ({"phone": None}, "$.human_agents[0]", "exactly one of `phone` or `sip_uri`"),
        ({"sip_uri": "sip:bob@h:5060"}, "$.human_agents[0]", "exactly one"),
        ({"phone": None, "sip_uri": "http://x"}, "$.human_agents[0].sip_uri", "SIP URI"),
        ({"capacity": 0}, "$.human_agents[0].capacity", "greater than or equal to 1"),
        ({"availability": "away"}, "$.human_agents[0].availability", "available"),
        ({"tenant": "nope"}, "$.human_agents[0].tenant", "unknown tenant"),
    ],
)
def test_a_bad_human_agent_names_the_field(catalog_data, human, path, words):
    entry = _human(catalog_data["tenants"][0]["id"], **human)
    with pytest.raises(CatalogError) as err:
        parse_catalog(_dump(_with(catalog_data, [entry])), "cat.json")
    text = str(err.value)
    assert "cat.json" in text and path in text and words in text


def test_assignments_name_known_agents_of_their_own_tenant(catalog_data):
    tenants = [t["id"] for t in catalog_data["tenants"]]
    assert len(tenants) >= 2, "the shipped catalog has two tenants to tell apart"
    humans = [_human(tenants[0]), _human(tenants[1], id="carol", phone="+15550100202")]
    contacts = [
        {"contact": "c-1", "tenant": tenants[0], "agents": ["alice", "ghost"]},
        {"contact": "c-2", "tenant": tenants[0], "agents": ["carol"]},
        {"contact": "c-1", "tenant": tenants[0], "agents": ["alice"]},
    ]
    with pytest.raises(CatalogError) as err:
        parse_catalog(_dump(_with(catalog_data, humans, contacts)))
    text = str(err.value)
    assert "$.contact_assignments[0].agents[1]" in text and "unknown human agent 'ghost'" in text
    assert "$.contact_assignments[1].agents[0]" in text and f"tenant {tenants[1]!r}" in text
    assert "$.contact_assignments[2].contact" in text and "assigned twice" in text


def test_a_scenario_may_only_assign_its_tenants_agents(catalog_data, scenarios_dir):
    scenario_text = (scenarios_dir / "inbound_support.json").read_text()
    scenario = parse_scenario(scenario_text)
    catalog = parse_catalog(_dump(catalog_data))
    tenant = catalog.tenant_of(scenario.campaign).id
    other = next(t["id"] for t in catalog_data["tenants"] if t["id"] != tenant)
    data = _with(catalog_data, [_human(tenant), _human(other, id="carol", phone="+15550100202")])
    catalog = parse_catalog(_dump(data))
    raw = scenario.model_dump(mode="json")
    raw["context"]["assigned_agents"] = ["alice"]
    check_scenario(parse_scenario(_dump(raw)), catalog)  # accepted
    raw["context"]["assigned_agents"] = ["alice", "carol"]
    with pytest.raises(ScenarioError) as err:
        check_scenario(parse_scenario(_dump(raw)), catalog, "s.json")
    assert "$.context.assigned_agents[1]" in str(err.value) and "carol" in str(err.value)


def test_a_human_agents_identity_is_one_no_caller_token_may_take():
    identity = human_identity("alice")
    assert identity == "staff_alice"
    with pytest.raises(ValueError, match="reserved for staff"):
        check_human_identity(identity)
