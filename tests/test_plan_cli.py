"""`python -m workers.plan` end to end, as a user runs it: each exit code and the JSON shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import PROJECT_ROOT

CATALOG = PROJECT_ROOT / "config" / "catalog.json"
SCENARIOS = PROJECT_ROOT / "scenarios"


def plan(*args: str, catalog: Path = CATALOG) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CATALOG_PATH": str(catalog), "SCENARIOS_DIR": str(SCENARIOS)}
    return subprocess.run(
        [sys.executable, "-m", "workers.plan", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def plan_json(*args: str) -> tuple[int, dict]:
    result = plan(*args, "--json")
    return result.returncode, json.loads(result.stdout)


def test_a_cast_is_printed_as_a_table_with_reasons():
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


def test_json_output_has_the_documented_shape():
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


def test_strategy_override_and_optional_slots_left_empty():
    code, out = plan_json("inbound_support", "--load", "sam=3", "--load", "priya=2")
    assert code == 0 and out["strategy"] == "least_loaded"
    assert [m["role"] for m in out["cast"]] == ["support"]
    assert out["missing"][0]["role"] == "sales" and "sam at capacity" in out["missing"][0]["reason"]
    code, out = plan_json("all_four", "--strategy", "primary_first")
    assert code == 0 and out["strategy"] == "primary_first"
    assert {m["reason"] for m in out["cast"]} == {"primary"}


def test_no_cast_exits_3_and_says_which_role_and_why():
    result = plan("dispatch_checkin", "--load", "tim=3", "--load", "dana=3")
    assert result.returncode == 3
    assert result.stdout.startswith("no cast: role 'dispatcher': ")
    assert "tim at capacity (3/3)" in result.stdout and "dana at capacity" in result.stdout
    code, out = plan_json("dispatch_checkin", "--load", "tim=3", "--load", "dana=3")
    assert code == 3 and out["error"].startswith("no cast: role 'dispatcher'")


def test_a_scenario_path_outside_the_scenarios_dir_is_accepted(tmp_path):
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
def test_bad_arguments_exit_2_with_a_clear_message(args, message):
    result = plan(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_a_bad_scenario_file_exits_2_naming_file_and_field(tmp_path):
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


def test_a_bad_catalog_exits_2_naming_it(tmp_path):
    bad = tmp_path / "catalog.json"
    data = json.loads(CATALOG.read_text())
    data["personas"][0]["voice"] = "robot"
    bad.write_text(json.dumps(data))
    result = plan("dispatch_checkin", catalog=bad)
    assert result.returncode == 2
    assert str(bad) in result.stderr and "$.personas[0].voice" in result.stderr


def test_usage_errors_are_json_too_when_asked():
    result = plan("dispatch_checkin", "--load", "tim", "--json")
    assert result.returncode == 2
    assert "not PERSONA_ID=N" in json.loads(result.stdout)["error"]
