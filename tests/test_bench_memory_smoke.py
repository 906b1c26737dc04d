"""The memory benchmarks run: `bench.process_model` and `bench.room_overhead` at their smallest
settings (`--quick`) print one JSON object whose memory figures are PSS and USS read from
/proc, USS never above PSS. No figure is asserted against an aim here: figures come from
`make bench`, never from tests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import module_env

pytestmark = pytest.mark.bench

TIMEOUT_S = 300  # a hang guard, not a performance check
ROLES = {"main", "resource_tracker", "forkserver", "job"}


def run_quick(name: str, cwd: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--quick"],
        cwd=cwd,  # no .env here
        env=module_env(),  # no developer's settings or keys
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line of JSON on stdout, got: {proc.stdout[:2000]}"
    result = json.loads(lines[0])
    assert result["bench"] == name and result["machine"]["cores"] >= 1
    return result


def memory_figures(node: Any) -> Iterator[dict[str, float]]:
    """Every {pss_mb, uss_mb} pair anywhere in a result."""
    if isinstance(node, dict):
        if "pss_mb" in node and "uss_mb" in node:
            yield node
        for value in node.values():
            yield from memory_figures(value)
    elif isinstance(node, list):
        for value in node:
            yield from memory_figures(value)


def assert_honest(result: dict[str, Any], *, skip: tuple[str, ...] = ()) -> None:
    """PSS and USS only (never an RSS), each PSS positive and each USS at most its PSS."""
    assert "rss" not in json.dumps(result).lower()
    figures = [f for key, part in result.items() if key not in skip for f in memory_figures(part)]
    assert figures
    for f in figures:
        assert f["pss_mb"] > 0 and 0 < f["uss_mb"] <= f["pss_mb"], f


def test_process_model_compares_whole_layouts_by_pss(tmp_path):
    r = run_quick("process_model", tmp_path)
    assert {"variants", "summary", "aims", "pss_ratio_whole_machine"} <= r.keys()
    assert {"mb_pss_per_extra_persona", "one_persona_room"} <= r.keys()
    for v in r["variants"]:
        assert v["same_conversation"] is True  # both layouts said the same lines
        ours, stock = v["this_worker"], v["stock"]
        for when in ("idle", "room"):
            assert set(ours[when]["by_role"]) == ROLES
            assert set(stock[when]["by_role"]) == ROLES
            assert ours[when]["by_role"]["job"]["count"] == 1  # one process for the room
            assert stock[when]["by_role"]["job"]["count"] == 4  # one per persona
            assert stock[when]["by_role"]["forkserver"]["count"] == 4  # one worker each
        assert len(stock["job_processes"]["room"]) == 4
        assert 0 < v["pss_ratio_whole_machine"] and 0 < v["uss_ratio_whole_machine"]
    # growth figures (room minus idle) may be negative: everything else is a measured process
    assert_honest(r, skip=("mb_pss_per_extra_persona",))


def test_room_overhead_reads_the_real_workers_tree(tmp_path):
    r = run_quick("room_overhead", tmp_path)
    assert {"idle_worker", "room_job_process", "aims", "params"} <= r.keys()
    (idle,) = r["idle_worker"].values()
    assert idle["registration_retrying"] is True  # it ran with no LiveKit server, as meant
    assert set(idle["by_role"]) == ROLES
    assert idle["by_role"]["job"]["count"] == idle["idle_job_processes"] >= 1
    assert idle["total"]["count"] == len(idle["processes"])
    assert abs(sum(p["pss_mb"] for p in idle["processes"]) - idle["total"]["pss_mb"]) < 1
    (rooms,) = r["room_job_process"].values()
    assert set(rooms) == {"4"}
    room = rooms["4"]
    assert {"idle", "at_last_line", "growth", "whole_tree_growth"} <= room.keys()
    assert_honest({"idle_worker": r["idle_worker"]})
    assert_honest({k: room[k] for k in ("idle", "at_last_line")})
