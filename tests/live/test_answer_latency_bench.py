"""The answer latency benchmark runs on the real server (`python -m bench.answer_latency
--quick`, the command `make bench` runs at its default size): a caller speaks three lines, each
is heard and answered, and each answer's time is split into the stages the transcript and the
caller measured. No timing is asserted here (figures come from the bench, never from tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from config.settings import PROJECT_ROOT
from tests.live.harness import API_KEY, API_SECRET, URL

pytestmark = pytest.mark.live

STAGES = {"way_in", "vad", "stt", "floor", "llm", "tts", "transport", "total"}


def test_the_answer_latency_bench_splits_every_answer_by_stage():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LIVEKIT_"))}
    env.update(LIVEKIT_URL=URL, LIVEKIT_API_KEY=API_KEY, LIVEKIT_API_SECRET=API_SECRET)
    done = subprocess.run(
        [sys.executable, "-m", "bench.answer_latency", "--quick"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [x for x in done.stdout.splitlines() if x.strip()]
    r = json.loads(line)
    assert r["bench"] == "answer_latency" and r["params"] == {"lines": 3, "people": 1}
    assert (r["lines_answered"], r["lines_missing"]) == (3, 0), r["per_line"]
    # each line heard as one line and answered once: none split, none heard twice
    assert (r["extra_lines_heard"], r["extra_answers"]) == (0, 0), r
    assert set(r["stages"]) == STAGES
    for stage in STAGES:  # every stage measured for every line
        assert r["stages"][stage]["n"] == 3, (stage, r["stages"][stage])
    for row in r["per_line"]:
        # the parts before the persona was asked never exceed the whole, and all are >= 0
        assert 0 <= row["vad"] and 0 <= row["stt"] and 0 <= row["floor"]
        assert row["way_in"] + row["vad"] + row["stt"] + row["floor"] < row["total"], row
    assert len(r["loadavg_before"]) == 3
