"""Scenarios: shipped ones load and fit the catalog; bad input is refused with file + path."""

from __future__ import annotations

import json
import os
import re

import pytest

from config.scenario import (
    MAX_HUMAN_LINES,
    MAX_SCENARIO_BYTES,
    ScenarioError,
    check_scenario,
    is_scenario_name,
    largest_human_lines,
    load_scenario,
    parse_scenario,
)
from config.schema import scenario_schema_text
from config.settings import get_settings
from tests.conftest import CATALOG_PATH, SCENARIOS_DIR
from workers import plan as plan_cli
from workers.job.plan import BadMetadata, JobPlan, PlanError, parse_job_metadata, voicemail_plan

SHIPPED = ("dispatch_checkin", "inbound_support", "sales_support_handoff", "all_four")


def _minimal(**over) -> dict:
    data = {
        "name": "t",
        "campaign": "freight-dispatch",
        "cast": [{"role": "dispatcher", "opens": True}, {"role": "driver"}],
    }
    data.update(over)
    return data


def test_every_shipped_scenario_loads_and_fits_the_catalog(catalog, scenarios_dir):
    names = sorted(p.stem for p in scenarios_dir.glob("*.json") if p.stem != "schema")
    assert set(SHIPPED) <= set(names)
    for name in names:
        scenario = load_scenario(name, scenarios_dir=scenarios_dir)
        check_scenario(scenario, catalog, name)
        assert scenario.name == name


def test_dispatch_checkin_is_what_the_demo_needs(scenarios_dir):
    s = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    assert s.opener_slot.role == "dispatcher"
    assert [slot.role for slot in s.cast] == ["dispatcher", "driver"]
    assert s.model_dump()["context"]["load_id"] == "HDX-2478"
    assert any(line.tool for line in s.script["dispatcher"])


def test_inbound_support_has_sales_on_standby(scenarios_dir):
    s = load_scenario("inbound_support", scenarios_dir=scenarios_dir)
    assert s.lead_slot.role == "support"
    sales = next(slot for slot in s.cast if slot.role == "sales")
    assert sales.required is False


def test_checked_in_schema_is_current(scenarios_dir):
    on_disk = (scenarios_dir / "schema.json").read_text()
    assert on_disk == scenario_schema_text(), "run `make schema` and commit scenarios/schema.json"


def test_inline_json_is_accepted(scenarios_dir):
    s = load_scenario(json.dumps(_minimal()), scenarios_dir=scenarios_dir)
    assert s.rules.turn_policy == "alternate" and s.on_no_cast == "reject"


def test_file_path_inside_the_directory_is_accepted(scenarios_dir):
    s = load_scenario(str(scenarios_dir / "all_four.json"), scenarios_dir=scenarios_dir)
    assert s.name == "all_four"


def test_malformed_json_is_refused_naming_inline():
    with pytest.raises(ScenarioError) as info:
        parse_scenario('{"name": ')
    assert str(info.value).startswith("inline: $: not valid JSON")


def test_malformed_file_names_the_file(tmp_path):
    (tmp_path / "broken.json").write_text("{nope")
    with pytest.raises(ScenarioError) as info:
        load_scenario("broken", scenarios_dir=tmp_path)
    assert str(tmp_path / "broken.json") in str(info.value)


def test_wrong_type_names_the_json_path():
    with pytest.raises(ScenarioError) as info:
        parse_scenario(json.dumps(_minimal(rules={"max_turns": "lots"})))
    assert "$.rules.max_turns" in str(info.value)


def test_unknown_field_is_refused():
    with pytest.raises(ScenarioError, match=r"\$\.cast\[1\]\.mood"):
        parse_scenario(
            json.dumps(_minimal(cast=[{"role": "dispatcher"}, {"role": "driver", "mood": "x"}]))
        )


def test_cast_shape_rules():
    bad = [
        _minimal(cast=[{"role": "driver"}, {"role": "driver"}]),
        _minimal(cast=[{"role": "dispatcher", "opens": True}, {"role": "driver", "opens": True}]),
        _minimal(cast=[{"role": "dispatcher", "leads": True}, {"role": "driver", "leads": True}]),
        _minimal(
            cast=[{"role": "dispatcher", "required": False, "opens": True}, {"role": "driver"}]
        ),
        _minimal(cast=[{"role": "dispatcher"}]),  # alternate needs two
        _minimal(script={"sales": [{"say": "hi"}]}),
        _minimal(script={"driver": [{}]}),
    ]
    for data in bad:
        with pytest.raises(ScenarioError):
            parse_scenario(json.dumps(data))


def test_oversized_scenario_is_refused():
    big = json.dumps(_minimal(context={"blob": "x" * MAX_SCENARIO_BYTES}))
    with pytest.raises(ScenarioError, match="limit is 262144 bytes"):
        parse_scenario(big)


@pytest.mark.parametrize(
    "ref", ["../config/catalog", "../../etc/passwd", "/etc/passwd", "a/../../x.json"]
)
def test_traversal_is_refused(ref, scenarios_dir):
    with pytest.raises(ScenarioError):
        load_scenario(ref, scenarios_dir=scenarios_dir)


def test_link_leaving_the_directory_is_refused(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(_minimal()))
    inner = tmp_path / "scenarios"
    inner.mkdir()
    os.symlink(outside, inner / "sneaky.json")
    with pytest.raises(ScenarioError, match="outside the scenarios directory"):
        load_scenario("sneaky", scenarios_dir=inner)
    # a local user on the command line may point anywhere
    assert load_scenario(str(outside), scenarios_dir=inner, allow_outside=True).name == "t"


def test_unknown_name_lists_known_scenarios(scenarios_dir):
    with pytest.raises(ScenarioError, match=r"known: .*dispatch_checkin"):
        load_scenario("no_such_thing", scenarios_dir=scenarios_dir)


def test_bad_name_characters_are_refused(scenarios_dir):
    with pytest.raises(ScenarioError, match="not a scenario name"):
        load_scenario("rm -rf", scenarios_dir=scenarios_dir)


def _check(catalog, **over):
    check_scenario(parse_scenario(json.dumps(_minimal(**over))), catalog, "inline")


def test_unknown_campaign_is_refused(catalog):
    with pytest.raises(ScenarioError, match=r"\$\.campaign: unknown campaign 'nope'"):
        _check(catalog, campaign="nope")


def test_unknown_role_is_refused(catalog):
    with pytest.raises(ScenarioError, match=r"\$\.cast\[1\]\.role: unknown role 'pilot'"):
        _check(catalog, cast=[{"role": "dispatcher"}, {"role": "pilot"}])


def test_unknown_or_wrong_role_pinned_persona_is_refused(catalog):
    with pytest.raises(ScenarioError, match="unknown persona 'ghost'"):
        _check(catalog, cast=[{"role": "dispatcher", "persona": "ghost"}, {"role": "driver"}])
    with pytest.raises(ScenarioError, match="persona 'chris' has role 'driver'"):
        _check(catalog, cast=[{"role": "dispatcher", "persona": "chris"}, {"role": "driver"}])


def test_required_role_the_campaign_cannot_staff_is_refused(catalog):
    with pytest.raises(ScenarioError, match="has no persona for role 'sales'"):
        _check(catalog, cast=[{"role": "dispatcher"}, {"role": "sales"}])
    # optional slots may be unstaffable
    _check(
        catalog,
        cast=[{"role": "dispatcher"}, {"role": "driver"}, {"role": "sales", "required": False}],
        rules={"turn_policy": "round_robin"},
    )


def test_script_tool_must_belong_to_the_role(catalog):
    with pytest.raises(ScenarioError, match=r"\$\.script\.driver\[0\]\.tool"):
        _check(catalog, script={"driver": [{"tool": "quote_price"}]})


# -- context: the keys the tools read are checked with the scenario --------------------------

BAD_LOADS = [
    ([{"origin": "Reno, NV"}], r"\$\.context\.loads\[0\]\.id: Field required \(add it\)"),
    ([{"id": "A-1"}, {"id": ""}], r"\$\.context\.loads\[1\]\.id: String should have at least 1"),
    ([{"id": 7}], r"\$\.context\.loads\[0\]\.id: Input should be a valid string"),
    (["HDX-2478"], r"\$\.context\.loads\[0\]: Input should be a valid dictionary"),
    ({"MAP-9": "Boise"}, r"\$\.context\.loads\.MAP-9: Input should be a valid dictionary"),
    (
        "HDX-2478",
        r"\$\.context\.loads: expected a list of loads \(each with an `id`\) or a mapping",
    ),
]


@pytest.mark.parametrize(("loads", "expected"), BAD_LOADS)
def test_context_loads_are_checked_with_the_scenario(loads, expected):
    with pytest.raises(ScenarioError, match=expected):
        parse_scenario(json.dumps(_minimal(context={"loads": loads, "note": "free-form"})))


def test_context_loads_forms_are_accepted_and_the_context_kept_as_written():
    listed = {"loads": [{"id": "NEW-1", "origin": "Reno, NV"}], "note": {"any": ["json", 1]}}
    s = parse_scenario(json.dumps(_minimal(context=listed)))
    assert s.context == listed  # the personas see the context verbatim
    assert s.loads == ({"id": "NEW-1", "origin": "Reno, NV"},)
    mapping = parse_scenario(json.dumps(_minimal(context={"loads": {"MAP-9": {"eta": "x"}}})))
    assert mapping.loads == ({"eta": "x", "id": "MAP-9"},)
    assert parse_scenario(json.dumps(_minimal(context={"loads": None}))).loads == ()
    assert parse_scenario(json.dumps(_minimal())).loads == ()


@pytest.fixture
def bad_loads_dir(tmp_path):
    """A scenarios directory whose one scenario has a load without an id."""
    data = json.loads((SCENARIOS_DIR / "dispatch_checkin.json").read_text(encoding="utf-8"))
    data["name"] = "bad_loads"
    data["context"]["loads"] = [{"origin": "Dallas, TX"}]
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "bad_loads.json").write_text(json.dumps(data), encoding="utf-8")
    return folder


def test_malformed_context_loads_is_refused_by_load_and_job_metadata(catalog, bad_loads_dir):
    path = r"\$\.context\.loads\[0\]\.id: Field required"
    with pytest.raises(ScenarioError, match=path):
        load_scenario("bad_loads", scenarios_dir=bad_loads_dir)
    inline = (bad_loads_dir / "bad_loads.json").read_text(encoding="utf-8")
    for metadata in (json.dumps({"scenario": "bad_loads"}), inline):
        with pytest.raises(BadMetadata, match=path) as info:
            parse_job_metadata(metadata, catalog=catalog, scenarios_dir=bad_loads_dir)
        assert info.value.problem == "invalid_scenario"
    # a plan carrying such a scenario is refused by the job too
    good = load_scenario("dispatch_checkin", scenarios_dir=SCENARIOS_DIR)
    plan = json.loads(voicemail_plan(good, catalog).to_handoff())
    plan["scenario"]["context"] = {"loads": [{"origin": "Dallas, TX"}]}
    with pytest.raises(PlanError, match=path):
        JobPlan.from_handoff(json.dumps(plan), catalog)


def test_plan_cli_exits_2_on_malformed_context_loads(bad_loads_dir, monkeypatch, capsys):
    monkeypatch.chdir(bad_loads_dir)  # no developer .env
    monkeypatch.setenv("SCENARIOS_DIR", str(bad_loads_dir))
    monkeypatch.setenv("CATALOG_PATH", str(CATALOG_PATH))
    get_settings.cache_clear()
    try:
        code = plan_cli.main(["bad_loads"])
    finally:
        get_settings.cache_clear()
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "bad_loads.json: $.context.loads[0].id: Field required (add it)" in err
    assert "Traceback" not in err


# -- names: a trailing newline is not part of a name -----------------------------------------


def test_scenario_name_field_refuses_a_trailing_newline():
    # pydantic runs `pattern=` in Rust's regex engine, where `$` is the end of the text
    with pytest.raises(ScenarioError, match=r"\$\.name: String should match pattern"):
        parse_scenario(json.dumps(_minimal(name="dispatch_checkin\n")))


@pytest.mark.parametrize("name", ["dispatch_checkin\n", "dispatch_checkin\r\n", "\ndispatch"])
def test_scenario_names_refuse_a_trailing_newline(catalog, scenarios_dir, name):
    assert not is_scenario_name(name)
    with pytest.raises(ScenarioError, match="not a scenario name"):
        load_scenario(name, scenarios_dir=scenarios_dir)
    with pytest.raises(BadMetadata) as info:
        parse_job_metadata(
            json.dumps({"scenario": name}), catalog=catalog, scenarios_dir=scenarios_dir
        )
    assert info.value.problem == "bad_scenario_name"
    assert is_scenario_name("dispatch_checkin")


SIXTEEN_NUMBERS = "1001 1002 1003 1004 1005 1006 1007 1008 1009 1010 1011 1012 1013 1014 1015 1016"


@pytest.mark.parametrize(
    ("lines", "path", "message"),
    [
        (["Yes."] * (MAX_HUMAN_LINES + 1), r"\$\.human_lines:", "at most 40 items"),
        (["Yes.", "word " * 41], r"\$\.human_lines\[1\]:", "205 characters, limit 200"),
        (["Yes.", "No.", "a, b, c, d, e, f, g, h, i."], r"\$\.human_lines\[2\]:", "9 clauses"),
        ([SIXTEEN_NUMBERS], r"\$\.human_lines\[0\]:", "16 numbers, limit 8"),
    ],
)
def test_human_lines_beyond_what_the_ear_can_take_are_refused_by_line(lines, path, message):
    """The offline ear builds a grammar of these lines: each limit names the line and the fix."""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(json.dumps(_minimal(human_lines=lines)))
    text = str(info.value)
    assert re.search(path, text) and message in text, text
    assert "shorten it" in text


def test_the_largest_accepted_human_lines_are_accepted():
    lines = largest_human_lines()
    assert len(lines) == MAX_HUMAN_LINES
    assert parse_scenario(json.dumps(_minimal(human_lines=lines))).human_lines == tuple(lines)
