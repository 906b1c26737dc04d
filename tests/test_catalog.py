"""The catalog: the shipped one loads; every validation rule refuses bad input clearly."""

from __future__ import annotations

import copy
import json
import typing

import pytest
from structlog.testing import capture_logs

from config import models
from config.catalog import CatalogError, load_catalog, parse_catalog
from config.roles import ROLE_TOOLS


def _errors(data: dict) -> CatalogError:
    with pytest.raises(CatalogError) as info:
        parse_catalog(json.dumps(data), "test-catalog.json")
    return info.value


def test_shipped_catalog_has_what_the_product_promises(catalog):
    by_role: dict[str, list] = {}
    for p in catalog.personas:
        by_role.setdefault(p.role, []).append(p)
    for role in ("dispatcher", "driver", "sales", "support"):
        people = by_role[role]
        assert len(people) >= 2, role
        assert len({p.name for p in people}) == len(people)
        assert len({p.voice for p in people}) == len(people)
    names = {(p.name, p.role) for p in catalog.personas}
    assert ("Tim", "dispatcher") in names and ("Chris", "driver") in names
    assert len({t.tier for t in catalog.tenants}) >= 2
    assert {"freight-dispatch", "inbound-support", "mixed-ops"} <= set(catalog.campaign_by_id)
    assert catalog.persona(catalog.voicemail_persona).role == "voicemail"
    assert catalog.persona(catalog.system_default_persona)


def test_defaults_apply(catalog_data):
    data = copy.deepcopy(catalog_data)
    del data["personas"][0]["max_concurrent"]
    cat = parse_catalog(json.dumps(data))
    assert cat.personas[0].max_concurrent == 3
    assert cat.personas[0].active is True


def test_allowed_tools_is_persona_list_cut_by_tenant_tier(catalog):
    sam = catalog.persona("sam")
    assert catalog.allowed_tools(sam, "mixed-ops") == ("qualify_lead", "quote_price")
    assert catalog.allowed_tools(sam, "inbound-support") == ("qualify_lead",)


def test_malformed_json_names_the_file_and_position(tmp_path):
    path = tmp_path / "cat.json"
    path.write_text('{"tenants": [')
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(path) in str(info.value)
    assert "not valid JSON" in str(info.value) and "line 1" in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CatalogError, match="cannot read the file"):
        load_catalog(tmp_path / "nope.json")


def test_wrong_type_names_the_json_path(catalog_data):
    catalog_data["personas"][1]["max_concurrent"] = "three"
    err = _errors(catalog_data)
    assert "test-catalog.json: $.personas[1].max_concurrent:" in str(err)


def test_capacity_below_one_is_refused(catalog_data):
    catalog_data["personas"][0]["max_concurrent"] = 0
    assert "$.personas[0].max_concurrent" in str(_errors(catalog_data))


def test_extra_fields_are_forbidden(catalog_data):
    catalog_data["personas"][0]["favourite_colour"] = "blue"
    err = _errors(catalog_data)
    assert "$.personas[0].favourite_colour" in str(err) and "remove it" in str(err)


def test_duplicate_ids_are_refused(catalog_data):
    catalog_data["personas"].append(copy.deepcopy(catalog_data["personas"][0]))
    err = _errors(catalog_data)
    assert "duplicate id 'tim'" in str(err) and "also at index 0" in str(err)


def test_unknown_role_lists_the_valid_ones(catalog_data):
    catalog_data["personas"][0]["role"] = "pilot"
    err = str(_errors(catalog_data))
    assert "$.personas[0].role: unknown role 'pilot'" in err and "dispatcher" in err


def test_unknown_strategy_is_refused(catalog_data):
    catalog_data["campaigns"][0]["strategy"] = "fastest"
    assert "$.campaigns[0].strategy" in str(_errors(catalog_data))


def test_unknown_persona_reference_is_refused(catalog_data):
    catalog_data["campaigns"][0]["assignments"][0]["persona"] = "ghost"
    err = str(_errors(catalog_data))
    assert "$.campaigns[0].assignments[0].persona: unknown persona 'ghost'" in err


def test_unknown_tenant_and_defaults_are_refused(catalog_data):
    catalog_data["campaigns"][0]["tenant"] = "nobody"
    catalog_data["tenants"][0]["default_persona"] = "ghost"
    catalog_data["system_default_persona"] = "ghost2"
    err = str(_errors(catalog_data))
    assert "$.campaigns[0].tenant: unknown tenant 'nobody'" in err
    assert "$.tenants[0].default_persona" in err
    assert "$.system_default_persona" in err


def test_persona_assigned_twice_is_refused(catalog_data):
    c = catalog_data["campaigns"][0]
    c["assignments"].append(dict(c["assignments"][0]))
    assert "assigned twice" in str(_errors(catalog_data))


def test_campaign_needs_assignments_or_legacy(catalog_data):
    catalog_data["campaigns"][0]["assignments"] = []
    err = str(_errors(catalog_data))
    assert "$.campaigns[0]: campaign has neither assignments nor legacy_persona" in err


def test_tool_outside_the_role_is_refused(catalog_data):
    catalog_data["personas"][0]["tools"].append("quote_price")
    assert "tool 'quote_price' is not a dispatcher tool" in str(_errors(catalog_data))


def test_unknown_tenant_tool_is_refused(catalog_data):
    allowed = catalog_data["tenants"][0]["allowed_tools"]
    allowed.append("launch_rockets")
    at = f"$.tenants[0].allowed_tools[{len(allowed) - 1}]"
    assert f"{at}: unknown tool 'launch_rockets'" in str(_errors(catalog_data))


def test_a_persona_tool_no_tenant_allows_is_warned_about_once(catalog_data):
    """Valid, but that persona would silently never be offered the tool: one line says so,
    naming the persona and the tool."""
    persona = catalog_data["personas"][0]
    tool = persona["tools"][0]
    for tenant in catalog_data["tenants"]:
        tenant["allowed_tools"].remove(tool)
    with capture_logs() as events:
        parse_catalog(json.dumps(catalog_data), "test-catalog.json")
    warned = [e for e in events if e["event"] == "persona_tool_allowed_by_no_tenant"]
    listing = [p["id"] for p in catalog_data["personas"] if tool in p["tools"]]
    assert [(e["persona"], e["tool"]) for e in warned] == [(pid, tool) for pid in listing]
    assert persona["id"] in listing
    assert all(e["log_level"] == "warning" and e["catalog"] == "test-catalog.json" for e in warned)
    assert "allowed_tools" in warned[0]["fix"]


def test_the_shipped_catalog_offers_every_persona_tool_somewhere(catalog_data):
    with capture_logs() as events:
        parse_catalog(json.dumps(catalog_data))
    assert [e for e in events if e["event"] == "persona_tool_allowed_by_no_tenant"] == []


def test_unknown_voice_lists_valid_voices(catalog_data):
    catalog_data["personas"][1]["voice"] = "darth"
    err = str(_errors(catalog_data))
    assert "$.personas[1].voice: unknown TTS voice 'darth'" in err and "nova" in err


def test_realtime_voice_list_differs_from_tts(catalog_data):
    # `nova` is a TTS voice but not a realtime one.
    catalog_data["personas"][0]["voice"] = "nova"
    assert "unknown realtime voice 'nova'" in str(_errors(catalog_data))


def test_unknown_model_is_refused(catalog_data):
    catalog_data["personas"][1]["model"]["llm"] = "gpt-2"
    catalog_data["personas"][0]["model"]["realtime_model"] = "gpt-2-realtime"
    err = str(_errors(catalog_data))
    assert "$.personas[1].model.llm: unknown LLM 'gpt-2'" in err
    assert "$.personas[0].model.realtime_model: unknown realtime model" in err


def test_voicemail_persona_must_be_a_voicemail_persona(catalog_data):
    catalog_data["voicemail_persona"] = "tim"
    assert "has role 'dispatcher'" in str(_errors(catalog_data))


def test_oversized_catalog_is_refused():
    with pytest.raises(CatalogError, match="limit is"):
        parse_catalog(" " * (4 * 1024 * 1024 + 1))


def test_model_lists_match_the_openai_plugin():
    from livekit.plugins.openai import models as plugin

    assert set(models.TTS_VOICES) <= set(typing.get_args(plugin.TTSVoices))
    assert set(models.TTS_MODELS) <= set(typing.get_args(plugin.TTSModels))
    assert set(models.REALTIME_MODELS) <= set(typing.get_args(plugin.RealtimeModels))
    chat = set(typing.get_args(plugin.ChatModels))
    assert set(models.LLM_MODELS) <= chat


def test_every_role_has_tools_and_a_persona_in_the_shipped_catalog(catalog):
    assert all(ROLE_TOOLS[r] for r in ROLE_TOOLS)
    assert {p.role for p in catalog.personas} == set(ROLE_TOOLS)


def test_every_model_read_from_input_has_the_one_strict_base():
    import inspect

    from pydantic import BaseModel

    from config import catalog as catalog_module
    from config import scenario as scenario_module
    from config.settings import PROJECT_ROOT
    from config.strict import StrictModel

    models_read = [
        cls
        for module in (catalog_module, scenario_module)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseModel) and cls.__module__ == module.__name__
    ]
    assert len(models_read) >= 8
    assert all(issubclass(cls, StrictModel) for cls in models_read), models_read
    bases = [
        str(path.relative_to(PROJECT_ROOT))
        for package in ("config", "agents", "workers")
        for path in (PROJECT_ROOT / package).rglob("*.py")
        if 'extra="forbid"' in path.read_text(encoding="utf-8")
    ]
    assert bases == ["config/strict.py"]
