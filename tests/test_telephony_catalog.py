"""The catalog's telephony section and what `python -m workers.telephony` builds from it
before any network call: bad entries are refused with exit 2 and one line naming the file,
the JSON path and the fix; a password comes only from the environment and is never printed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from config.catalog import CatalogError, parse_catalog
from workers.telephony.cli import main
from workers.telephony.resources import agent_metadata, managed_key, wanted

LIVEKIT = {
    "LIVEKIT_URL": "ws://127.0.0.1:9",  # never reached: every case fails before the network
    "LIVEKIT_API_KEY": "devkey",
    "LIVEKIT_API_SECRET": "secret",
}


def _with(catalog_data: dict, **telephony) -> dict:
    data = copy.deepcopy(catalog_data)
    data["telephony"] = telephony
    return data


def test_the_shipped_catalog_routes_a_number_to_the_phone_scenario(catalog, scenarios_dir):
    want = wanted(
        catalog, source="c", scenarios_dir=scenarios_dir, agent_name="multi-persona", environ={}
    )
    route, person = want.inbound  # the support line; the line that reaches a person
    assert list(route.trunk.numbers) == ["+15550100000"]
    assert json.loads(person.rule.room_config.agents[0].metadata)["scenario"] == "support_to_human"
    rule = route.rule
    assert rule.rule.dispatch_rule_individual.room_prefix == "call-brightcart-support"
    (agent,) = rule.room_config.agents
    assert agent.agent_name == "multi-persona"
    assert json.loads(agent.metadata) == {"scenario": "phone_support", "inbound": True}
    assert managed_key(rule.metadata) == managed_key(route.trunk.metadata) == route.key
    assert managed_key('{"key": "inbound:x"}') is None and managed_key("not json") is None
    (out,) = want.outbound.values()
    assert out.address == "10.77.0.1:5080" and list(out.numbers) == ["+15550100900"]


@pytest.mark.parametrize(
    ("telephony", "path", "fix"),
    [
        (
            {"inbound": [{"id": "a", "numbers": ["555-0100"], "scenario": "phone_support"}]},
            "$.telephony.inbound[0].numbers[0]",
            "write it as +15550100000",
        ),
        (
            {
                "inbound": [
                    {"id": "a", "numbers": ["+15550100000"], "scenario": "phone_support"},
                    {"id": "b", "numbers": ["+15550100000"], "scenario": "inbound_support"},
                ]
            },
            "$.telephony.inbound[1].numbers[0]",
            "a number reaches one inbound line",
        ),
        (
            {
                "inbound": [
                    {"id": "a", "numbers": ["+15550100000"], "scenario": "x", "campaign": "nope"}
                ]
            },
            "$.telephony.inbound[0].campaign",
            "known: freight-dispatch",
        ),
        (
            {
                "outbound": [
                    {
                        "id": "o",
                        "tenant": "acme-logistics",
                        "address": "sip://x",
                        "numbers": ["+15550100900"],
                    }
                ]
            },
            "$.telephony.outbound[0].address",
            "e.g. sip.example.com:5060",
        ),
        (
            {
                "outbound": [
                    {
                        "id": "o",
                        "tenant": "acme-logistics",
                        "address": "x:5060",
                        "numbers": ["+15550100900"],
                        "auth_username": "u",
                    }
                ]
            },
            "$.telephony.outbound[0]",
            "both auth_username and auth_password_env",
        ),
        (
            {
                "outbound": [
                    {
                        "id": "o",
                        "tenant": "acme-logistics",
                        "address": "x",
                        "numbers": ["+15550100900"],
                        "auth_username": "u",
                        "auth_password_env": "hunter2!",
                    }
                ]
            },
            "$.telephony.outbound[0].auth_password_env",
            "never the password",
        ),
        (
            {
                "outbound": [
                    {"id": "o", "tenant": "nobody", "address": "x", "numbers": ["+15550100900"]}
                ]
            },
            "$.telephony.outbound[0].tenant",
            "known: acme-logistics",
        ),
    ],
)
def test_bad_telephony_entries_exit_2_with_the_path_and_the_fix(
    catalog_data, tmp_path, monkeypatch, run_main, telephony, path, fix
):
    bad = tmp_path / "catalog.json"
    bad.write_text(json.dumps(_with(catalog_data, **telephony)))
    with pytest.raises(CatalogError):
        parse_catalog(bad.read_text(), str(bad))
    for name, value in {**LIVEKIT, "CATALOG_PATH": str(bad)}.items():
        monkeypatch.setenv(name, value)
    result = run_main(main, "sync")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"{bad}: {path}" in lines[0] and fix in lines[0], lines[0]


def test_a_scenario_that_does_not_exist_or_fit_is_refused_before_the_network(
    catalog_data, tmp_path, monkeypatch, run_main
):
    bad = tmp_path / "catalog.json"
    line = {"id": "a", "numbers": ["+15550100000"], "scenario": "no_such_scenario"}
    bad.write_text(json.dumps(_with(catalog_data, inbound=[line])))
    for name, value in {**LIVEKIT, "CATALOG_PATH": str(bad)}.items():
        monkeypatch.setenv(name, value)
    result = run_main(main, "sync")
    assert result.returncode == 2
    assert "$.telephony.inbound[0].scenario" in result.stderr and "known:" in result.stderr
    line["scenario"], line["campaign"] = "dispatch_checkin", "inbound-support"
    bad.write_text(json.dumps(_with(catalog_data, inbound=[line])))
    result = run_main(main, "sync")
    assert result.returncode == 2
    assert "no persona for role 'dispatcher'" in result.stderr


def test_the_password_comes_from_the_environment_and_is_never_printed(
    catalog_data, tmp_path, monkeypatch, run_main
):
    trunk = {
        "id": "o",
        "tenant": "acme-logistics",
        "address": "sip.example.com:5060",
        "numbers": ["+15550100900"],
        "auth_username": "acme",
        "auth_password_env": "ACME_SIP_PASSWORD",
    }
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(_with(catalog_data, outbound=[trunk])))
    for name, value in {**LIVEKIT, "CATALOG_PATH": str(path)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ACME_SIP_PASSWORD", raising=False)
    result = run_main(main, "sync")
    assert result.returncode == 2
    assert "ACME_SIP_PASSWORD is not set" in result.stderr
    assert "$.telephony.outbound[0].auth_password_env" in result.stderr
    catalog = parse_catalog(path.read_text())
    want = wanted(
        catalog,
        source=str(path),
        scenarios_dir=Path("scenarios"),
        agent_name="a",
        environ={"ACME_SIP_PASSWORD": "s3cret-pw"},
    )
    (out,) = want.outbound.values()
    assert out.auth_username == "acme" and out.auth_password == "s3cret-pw"
    assert "s3cret-pw" not in path.read_text()
    monkeypatch.setenv("ACME_SIP_PASSWORD", "s3cret-pw")
    result = run_main(main, "sync")  # the server is unreachable: exit 1, the secret unsaid
    assert result.returncode == 1
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_inbound_metadata_names_the_campaign_only_when_the_line_does(catalog):
    from config.telephony import InboundLine

    line = InboundLine(id="a", numbers=("+15550100000",), scenario="s", campaign="mixed-ops")
    assert json.loads(agent_metadata(line)) == {
        "scenario": "s",
        "inbound": True,
        "campaign": "mixed-ops",
    }
