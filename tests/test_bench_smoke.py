"""The benchmarks run: each bench script, at its smallest settings, prints one JSON object with
its figures. No timing is asserted here (figures come from `make bench`, never from tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMON = {"bench", "machine", "params"}

SCRIPTS: dict[str, set[str]] = {
    "room_overhead": {"points", "marginal", "aim"},
    "process_model": {"variants", "aims", "memory_ratio", "mb_per_extra_persona"},
    "floor_latency": {"measured_turns", "gap", "floor_only", "breakdown", "by_turn_slice", "aim"},
    "cast_latency": {"by_personas", "aim"},
    "vad_cost": {"by_listeners", "growth_first_to_last", "aim"},
}


def run_bench(name: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{name}.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard, not a performance check
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line of JSON on stdout, got: {out.stdout[:2000]}"
    result = json.loads(lines[0])
    assert isinstance(result, dict)
    return result


@pytest.fixture(scope="module", params=sorted(SCRIPTS))
def bench_result(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, run_bench(request.param, "--quick")


def test_prints_one_json_object_with_its_figures(bench_result: tuple[str, dict[str, Any]]) -> None:
    name, result = bench_result
    missing = (COMMON | SCRIPTS[name]) - result.keys()
    assert not missing, f"{name}: missing keys {sorted(missing)}"
    assert result["bench"] == name
    assert isinstance(result["machine"]["cores"], int) and result["machine"]["cores"] >= 1
    assert result["machine"]["python"]


def test_figures_have_the_promised_shape(bench_result: tuple[str, dict[str, Any]]) -> None:
    name, r = bench_result
    if name == "room_overhead":
        grid = {(p["rooms"], p["personas"]) for p in r["points"]}
        assert grid == {(1, 1), (1, 2), (2, 1), (2, 2)}
        for p in r["points"]:
            assert p["turns"] == p["rooms"] * r["params"]["turns_per_room"]
            assert p["max_rooms_alive"] == p["rooms"]  # the rooms really ran at once
            assert p["rss_peak_mb"] > 0 and p["cpu_s"] > 0
        assert {"mb_per_extra_persona", "mb_per_extra_room"} <= r["marginal"]["fit"].keys()
    elif name == "process_model":
        assert {v["start"] for v in r["variants"]} == {"spawn", "forkserver"}
        for variant in r["variants"]:
            assert variant["same_conversation"] is True  # both layouts said the same lines
            assert variant["process_per_persona"]["processes"] == 4
            assert len(variant["process_per_persona"]["per_process_rss_peak_mb"]) == 4
            assert variant["memory_ratio"] > 0 and variant["uss_ratio"] > 0
    elif name == "floor_latency":
        assert r["measured_turns"] == r["params"]["rooms"] * (r["params"]["turns_per_room"] - 1)
        assert {"p50_ms", "p99_ms"} <= r["gap"].keys()
        assert {"p50_ms", "p99_ms"} <= r["floor_only"].keys()
    elif name == "cast_latency":
        assert set(r["by_personas"]) == {"1", "2", "4"}
        for size in r["by_personas"].values():
            assert size["accepted_to_started"]["n"] == r["params"]["reps"]
            assert {"p50_ms", "p99_ms"} <= size["accepted_to_started"].keys()
    elif name == "vad_cost":
        assert set(r["by_listeners"]) == {"1", "2", "4"}
        for n, row in r["by_listeners"].items():
            assert row["before"]["vad_streams_fed"] == int(n)
            assert row["after"]["vad_streams_fed"] == 1  # one VAD per human track
            assert row["before"]["cpu_s_per_audio_s"] > 0
        assert 0 < r["params"]["speech_share"] < 1  # the synthetic human has speech and pauses
