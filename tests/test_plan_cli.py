"""`workers.plan`, as a user runs it: each exit code and the JSON shape, through `main(argv)`
in-process; one test runs `python -m workers.plan` as a program. Last, the scenario input
plan shares with dispatch and simulate (`workers.cli_input`)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.roles import ROLES
from config.scenario import check_scenario, load_scenario
from config.settings import PROJECT_ROOT, Settings
from tests.conftest import CliResult
from workers.cli_input import BadInput, load_scenario_input
from workers.plan import main

CATALOG = PROJECT_ROOT / "config" / "catalog.json"
SCENARIOS = PROJECT_ROOT / "scenarios"

Plan = Callable[..., CliResult]


@pytest.fixture
def plan(run_main, monkeypatch) -> Plan:
    """`python -m workers.plan ARGS...` in-process, with the catalog given (default: shipped)."""

    def run(*args: str, catalog: Path = CATALOG) -> CliResult:
        monkeypatch.setenv("CATALOG_PATH", str(catalog))
        monkeypatch.setenv("SCENARIOS_DIR", str(SCENARIOS))
        return run_main(main, *args)

    return run


@pytest.fixture
def plan_json(plan: Plan) -> Callable[..., tuple[int, dict]]:
    def run(*args: str) -> tuple[int, dict]:
        result = plan(*args, "--json")
        return result.returncode, json.loads(result.stdout)

    return run


@pytest.mark.subprocess(
    argv=[
        "-m",
        "workers.plan",
        "dispatch_checkin",
        "--load",
        "tim=3",
        "--load",
        "dana=3",
        "--json",
    ],
    env={"CATALOG_PATH": str(CATALOG), "SCENARIOS_DIR": str(SCENARIOS)},
)
def test_runs_as_a_program_and_exits_with_mains_status(program):
    assert program.returncode == 3, program.stderr  # no cast: main's status is the exit status
    assert json.loads(program.stdout)["error"].startswith("no cast: role 'dispatcher'")


def test_a_cast_is_printed_as_a_table_with_reasons(plan):
    result = plan("dispatch_checkin", "--load", "tim=3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "dispatch_checkin" in lines[0] and "freight-dispatch" in lines[0]
    assert "primary_first" in lines[0]
    header = next(line for line in lines if line.startswith("ROLE"))
    assert header.split() == ["ROLE", "PERSONA", "NAME", "REASON", "REQUIRED"]
    dispatcher = next(line for line in lines if line.startswith("dispatcher"))
    assert dispatcher.split()[:3] == ["dispatcher", "dana", "Dana"]
    assert "backup: primary at capacity" in dispatcher and dispatcher.endswith("yes")
    driver = next(line for line in lines if line.startswith("driver"))
    assert driver.split() == ["driver", "chris", "Chris", "primary", "yes"]


def test_json_output_has_the_documented_shape(plan_json):
    code, out = plan_json("dispatch_checkin", "--load", "tim=3")
    assert code == 0
    assert {"scenario", "campaign", "strategy", "cast", "missing"} <= set(out)
    assert (out["scenario"], out["campaign"], out["strategy"]) == (
        "dispatch_checkin",
        "freight-dispatch",
        "primary_first",
    )
    assert out["cast"] == [
        {
            "role": "dispatcher",
            "persona": "dana",
            "name": "Dana",
            "reason": "backup: primary at capacity",
            "required": True,
        },
        {
            "role": "driver",
            "persona": "chris",
            "name": "Chris",
            "reason": "primary",
            "required": True,
        },
    ]
    assert out["missing"] == []


def test_strategy_override_and_optional_slots_left_empty(plan_json):
    code, out = plan_json("inbound_support", "--load", "sam=3", "--load", "priya=2")
    assert code == 0 and out["strategy"] == "least_loaded"
    assert [m["role"] for m in out["cast"]] == ["support"]
    assert out["missing"][0]["role"] == "sales" and "sam at capacity" in out["missing"][0]["reason"]
    code, out = plan_json("all_four", "--strategy", "primary_first")
    assert code == 0 and out["strategy"] == "primary_first"
    assert {m["reason"] for m in out["cast"]} == {"primary"}


def test_no_cast_exits_3_and_says_which_role_and_why(plan, plan_json):
    result = plan("dispatch_checkin", "--load", "tim=3", "--load", "dana=3")
    assert result.returncode == 3
    assert result.stdout.startswith("no cast: role 'dispatcher': ")
    assert "tim at capacity (3/3)" in result.stdout and "dana at capacity" in result.stdout
    code, out = plan_json("dispatch_checkin", "--load", "tim=3", "--load", "dana=3")
    assert code == 3 and out["error"].startswith("no cast: role 'dispatcher'")


def test_a_scenario_path_outside_the_scenarios_dir_is_accepted(plan_json, tmp_path):
    data = json.loads((SCENARIOS / "dispatch_checkin.json").read_text())
    data["name"] = "local_copy"
    path = tmp_path / "local_copy.json"
    path.write_text(json.dumps(data))
    code, out = plan_json(str(path))
    assert code == 0 and out["scenario"] == "local_copy"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dispatch_checkin", "--load", "tim"], "not PERSONA_ID=N"),
        (["dispatch_checkin", "--load", "tim=-1"], "not PERSONA_ID=N"),
        (["dispatch_checkin", "--load", "bob=1"], "unknown persona 'bob'"),
        (["dispatch_checkin", "--load", "tim=4"], "tim can hold at most 3 rooms"),
        (["dispatch_checkin", "--load", "morgan=1"], "morgan is inactive"),
        (["dispatch_checkin", "--load", "tim=1", "--load", "tim=1"], "given twice"),
        (["dispatch_checkin", "--strategy", "fastest"], "invalid choice: 'fastest'"),
        (["no_such_scenario"], "no such scenario"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(plan, args, message):
    result = plan(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_a_bad_scenario_file_exits_2_naming_file_and_field(plan, tmp_path):
    path = tmp_path / "bad.json"
    data = json.loads((SCENARIOS / "dispatch_checkin.json").read_text())
    data["campaign"] = "no-such-campaign"
    path.write_text(json.dumps(data))
    result = plan(str(path))
    assert result.returncode == 2
    assert "$.campaign: unknown campaign 'no-such-campaign'" in result.stderr
    path.write_text("{not json")
    result = plan(str(path), "--json")
    assert result.returncode == 2
    assert str(path) in result.stderr and "not valid JSON" in result.stderr
    assert "not valid JSON" in json.loads(result.stdout)["error"]


def test_a_bad_catalog_exits_2_naming_it(plan, tmp_path):
    bad = tmp_path / "catalog.json"
    data = json.loads(CATALOG.read_text())
    data["personas"][0]["voice"] = "robot"
    bad.write_text(json.dumps(data))
    result = plan("dispatch_checkin", catalog=bad)
    assert result.returncode == 2
    assert str(bad) in result.stderr and "$.personas[0].voice" in result.stderr


def test_usage_errors_are_json_too_when_asked(plan):
    result = plan("dispatch_checkin", "--load", "tim", "--json")
    assert result.returncode == 2
    assert "not PERSONA_ID=N" in json.loads(result.stdout)["error"]


# -- the scenario input plan shares with dispatch and simulate (workers.cli_input) ----------


def _settings() -> Settings:
    return Settings(_env_file=None, catalog_path=CATALOG, scenarios_dir=SCENARIOS)


def test_the_shared_input_says_which_file_a_scenario_came_from(tmp_path):
    by_name = load_scenario_input("dispatch_checkin", _settings())
    assert by_name.scenario.name == "dispatch_checkin"
    assert by_name.path == (SCENARIOS / "dispatch_checkin.json").resolve()
    assert by_name.catalog.persona("tim").role == "dispatcher"
    link = tmp_path / "checkin.json"
    link.symlink_to(SCENARIOS / "dispatch_checkin.json")
    assert load_scenario_input(str(link), _settings()).path == by_name.path  # links followed
    inline = (SCENARIOS / "dispatch_checkin.json").read_text()
    assert load_scenario_input(inline, _settings()).path is None


def test_the_shared_input_raises_one_error_type_with_configs_message(tmp_path, catalog):
    path = tmp_path / "bad.json"
    data = json.loads((SCENARIOS / "dispatch_checkin.json").read_text())
    path.write_text(json.dumps({**data, "campaign": "no-such-campaign"}))
    with pytest.raises(ConfigError) as config_error:
        check_scenario(load_scenario(path, allow_outside=True), catalog, str(path))
    with pytest.raises(BadInput) as bad:
        load_scenario_input(str(path), _settings())
    assert str(bad.value) == str(config_error.value)  # the file, the field and the fix
    with pytest.raises(BadInput, match="no such scenario"):
        load_scenario_input("no_such_scenario", _settings())


@pytest.mark.parametrize("cli", ["workers.plan", "workers.dispatch", "workers.simulate"])
def test_every_cli_refuses_a_bad_scenario_with_the_same_message(
    cli, run_main, monkeypatch, tmp_path, restore_logging
):
    path = tmp_path / "bad.json"
    data = json.loads((SCENARIOS / "dispatch_checkin.json").read_text())
    pilot = [{"role": "pilot", "opens": True}, data["cast"][1]]
    path.write_text(json.dumps({**data, "cast": pilot, "script": {}}))
    monkeypatch.setenv("CATALOG_PATH", str(CATALOG))
    monkeypatch.setenv("SCENARIOS_DIR", str(SCENARIOS))
    extra = ["--identity", "caller-jamie"] if cli == "workers.dispatch" else []
    result = run_main(importlib.import_module(cli).main, str(path), *extra)
    assert result.returncode == 2 and result.stdout == ""
    prefix = "" if cli == "workers.plan" else f"{cli}: "  # plan's errors carry no prefix
    problem = f"$.cast[0].role: unknown role 'pilot' (valid: {', '.join(ROLES)})"
    assert result.stderr == f"{prefix}{path}: {problem}\n"
