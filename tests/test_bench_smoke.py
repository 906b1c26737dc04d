"""The benchmarks run: each bench script, at its smallest settings, prints one JSON object with
its figures. No timing is asserted here (figures come from `make bench`, never from tests).

Each script runs as `make bench` runs it, `python -m bench.<name>` in a process of its own (the
project on PYTHONPATH, as a run from its root has it); as many run at once as this process has
cores, the slowest first: most of a smoke run is interpreter start-up
and imports (several per script), not the room it measures, and on an idle machine one script
rarely keeps two cores busy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import module_env

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parent.parent
COMMON = {"bench", "machine", "params"}
TIMEOUT_S = 300  # per script: a hang guard, not a performance check

SCRIPTS: dict[str, set[str]] = {
    "floor_latency": {"measured_turns", "gap", "floor_only", "breakdown", "by_turn_slice", "aim"},
    "cast_latency": {"by_personas", "aim"},
    "vad_cost": {"by_listeners", "growth_first_to_last", "aim"},
    "offline_voice": {"tts", "stt", "end_to_final", "aim"},
    "ear_bounds": {"build", "decode", "worst_realtime_share"},
    "selector": {"strategies", "one_campaign", "aim", "meets_aim_everywhere"},
    "selector_redis": {"memory", "redis"},
    "openai_path": {"by_mode", "aim", "load_average"},
    "capacity_outage": {"trials", "longest_outage_losing_nothing_s", "over_limit_moments"},
    "human_desk": {"memory", "redis"},
}
# Scripts the smoke leaves out, and why.
NOT_SMOKED = {
    "live_room": "needs root and `make livekit`: it runs in tests/live/livenet.sh's namespace",
    "port_flood": "needs root and `make livekit`; tests/live/test_port_floods.py runs its flood",
    "bridge_relay": "needs root and `make livekit`; tests/live/test_bridge.py runs the bridge",
    "room_overhead": "smoked, with its memory figures checked, by tests/test_bench_memory_smoke.py",
    "process_model": "smoked, with its memory figures checked, by tests/test_bench_memory_smoke.py",
}
# Still run by path with their own sys.path lines until they are rewritten (another change);
# drop each from here then.
SYS_PATH_SHIMS_LEFT: set[str] = set()
# Slowest first (by their smoke runs on 2 cores), so the long ones start at once.
ORDER = ("offline_voice", "process_model", "room_overhead", "vad_cost", "cast_latency")


class BenchRuns:
    """Runs the scripts `--quick`, at most `slots` at a time, in the order given;
    `result(name)` waits for one and parses its one JSON object."""

    def __init__(self, names: list[str], cwd: Path, slots: int) -> None:
        self._cwd = cwd
        self._procs: list[subprocess.Popen[str]] = []
        self._closing = False
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="bench")
        self._futures = {name: self._pool.submit(self._run, name) for name in names}

    def _run(self, name: str) -> tuple[int, str, str]:
        if self._closing:
            return -1, "", "not started: the test session is ending"
        with subprocess.Popen(
            [sys.executable, "-m", f"bench.{name}", "--quick"],
            cwd=self._cwd,  # no .env here
            env=module_env(),  # no developer's settings or keys: offline
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            self._procs.append(proc)
            try:
                out, err = proc.communicate(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                err += f"\n{name}: killed after {TIMEOUT_S} s"
        return proc.returncode, out, err

    def result(self, name: str) -> dict[str, Any]:
        code, out, err = self._futures[name].result()
        assert code == 0, err[-3000:]
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one line of JSON on stdout, got: {out[:2000]}"
        result = json.loads(lines[0])
        assert isinstance(result, dict)
        return result

    def close(self) -> None:
        """Stop what still runs: an interrupted or failed session leaves no process behind."""
        self._closing = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        self._pool.shutdown(wait=True)


def _selected(session: pytest.Session) -> set[str]:
    """The scripts whose tests this session runs (-k may pick a few)."""
    names: set[str] = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)  # only parametrized tests have one
        if callspec is not None and "bench_result" in callspec.params:
            names.add(callspec.params["bench_result"])
    return names


@pytest.fixture(scope="module")
def bench_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BenchRuns]:
    names = sorted(
        _selected(request.session), key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)
    )
    cores = len(os.sched_getaffinity(0))  # the cores this process may use
    runs = BenchRuns(names, tmp_path_factory.mktemp("bench"), slots=max(1, cores))
    try:
        yield runs
    finally:
        runs.close()


@pytest.fixture(scope="module", params=sorted(SCRIPTS))
def bench_result(
    request: pytest.FixtureRequest, bench_runs: BenchRuns
) -> tuple[str, dict[str, Any]]:
    return request.param, bench_runs.result(request.param)


def test_prints_one_json_object_with_its_figures(bench_result: tuple[str, dict[str, Any]]) -> None:
    name, result = bench_result
    missing = (COMMON | SCRIPTS[name]) - result.keys()
    assert not missing, f"{name}: missing keys {sorted(missing)}"
    assert result["bench"] == name
    assert isinstance(result["machine"]["cores"], int) and result["machine"]["cores"] >= 1
    assert result["machine"]["python"]


def test_figures_have_the_promised_shape(bench_result: tuple[str, dict[str, Any]]) -> None:
    name, r = bench_result
    if name == "floor_latency":
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
    elif name == "openai_path":
        assert set(r["by_mode"]) == {"offline", "pipeline", "realtime"}
        for row in r["by_mode"].values():  # dispatch_checkin: 5 lines, 4 changes of speaker
            assert row["n"] == 4 * r["params"]["rooms_per_mode"]
            assert 0 < row["p50_ms"] <= row["p95_ms"]
        assert set(r["aim"]) == {"pipeline", "realtime"}
    elif name == "selector":
        assert set(r["strategies"]) == set(r["one_campaign"]["strategies"])
        assert set(r["strategies"]) == {"primary_first", "round_robin", "least_loaded", "random"}
        for row in [*r["strategies"].values(), *r["one_campaign"]["strategies"].values()]:
            assert row["pairs_per_s"] > 0 and 0 < row["p50_us"] <= row["p99_us"]


def test_every_bench_script_is_smoked_or_says_why_not() -> None:
    """`make bench` runs every bench/*.py but the private bench/_*.py: so does this smoke."""
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_")}
    unsmoked = scripts - SCRIPTS.keys() - NOT_SMOKED.keys()
    assert not unsmoked, (
        f"bench/{sorted(unsmoked)[0]}.py is not smoked: give it a --quick mode and add it to "
        "SCRIPTS in tests/test_bench_smoke.py with the keys it promises"
    )
    assert not (SCRIPTS.keys() | NOT_SMOKED.keys()) - scripts, "a listed script is gone"


def test_bench_is_a_package_run_as_modules() -> None:
    """`python -m bench.<name>`: bench/ is a package and no module of it edits sys.path."""
    assert (ROOT / "bench" / "__init__.py").is_file()
    for path in sorted((ROOT / "bench").glob("*.py")):
        if path.stem in SYS_PATH_SHIMS_LEFT:
            continue
        assert "sys.path" not in path.read_text(encoding="utf-8"), (
            f"{path.relative_to(ROOT)} edits sys.path: run it as `python -m bench.{path.stem}` "
            "from the project root instead"
        )
