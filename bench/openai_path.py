"""The paid-model path's own cost per turn: from the end of one persona's line (its last audio
frame handed to the speaker) to the next persona's first audio frame, in dispatch_checkin,
with the OpenAI plugins talking to workers/openai_server (which answers at once and speaks with
eSpeak NG), against the same rooms on the offline model and voice (eSpeak in-process). Both
sides synthesise the same audio with the same engine, so the difference is what the path adds:
HTTP or WebSocket, SSE, base64, resampling, the plugins. Aim: p95 at most 50 ms above offline.

    python -m bench.openai_path [--rooms 5] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from livekit import rtc

from agents.offline import offline_models
from bench._common import machine, percentile, rounded, run_async_bench, summary_ms
from config.catalog import load_catalog
from config.scenario import load_scenario
from config.settings import PROJECT_ROOT, Settings
from workers.openai_server import OpenAIServer
from workers.openai_server.rooms import (
    KEY_ENV,
    CapturedAudio,
    SpeakingStage,
    brains_for,
    run_served_room,
    served_catalog,
)
from workers.room.stage import StageCast, StageEvents

AIM_MS = 50.0


class TimedAudio(CapturedAudio):
    """Each segment's first frame and its end (flush), by the monotonic clock."""

    def __init__(self) -> None:
        super().__init__()
        self.segments: list[list[float]] = []  # [first frame, flushed]

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        if not self.segments or len(self.segments[-1]) == 2:
            self.segments.append([time.perf_counter()])
        await super().capture_frame(frame)

    def flush(self) -> None:
        super().flush()
        if self.segments and len(self.segments[-1]) == 1:
            self.segments[-1].append(time.perf_counter())


class TimedStage(SpeakingStage):
    async def _open(self, cast: StageCast, events: StageEvents) -> dict[str, Any]:
        sessions = await super()._open(cast, events)
        for persona_id, session in sessions.items():
            self.audio[persona_id] = TimedAudio()
            session.output.audio = self.audio[persona_id]
        return sessions


def gaps(stage: TimedStage) -> list[float]:
    """Seconds from one persona's end of line to the next persona's first frame."""
    segments = sorted(
        (seg[0], seg[-1], pid)
        for pid, audio in stage.audio.items()
        for seg in audio.segments  # type: ignore[attr-defined]
        if len(seg) == 2
    )
    return [b[0] - a[1] for a, b in itertools.pairwise(segments) if a[2] != b[2]]


STAGES = ("floor_gap_s", "llm_ttft_s", "llm_first_sentence_s", "tts_ttfb_s")


def stage_times(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each turn's time by stage, as its `utterance` record's latency has it (livekit's own
    measures and the floor's gap): where the end-of-line to first-frame time goes."""
    out: dict[str, list[float]] = {k: [] for k in STAGES}
    for r in records:
        if r.get("event") == "utterance":
            for k in STAGES:
                if isinstance(r.get("latency", {}).get(k), int | float):
                    out[k].append(r["latency"][k])
    return out


async def _rooms(mode: str, rooms: int, tmp: Path, stages: dict[str, list[float]]) -> list[float]:
    catalog = load_catalog()
    scenario = load_scenario("dispatch_checkin", scenarios_dir=PROJECT_ROOT / "scenarios")
    data = json.loads((PROJECT_ROOT / "config" / "catalog.json").read_text())
    names = {p.role: p.name for p in (catalog.persona("tim"), catalog.persona("chris"))}
    measured: list[float] = []
    for i in range(rooms + 1):  # the first room warms up (imports, connections, eSpeak)
        server = OpenAIServer(brains_for(catalog, scenario, "tim", "chris"))
        await server.start()
        os.environ[KEY_ENV] = server.key
        stage = TimedStage()
        try:
            if mode == "offline":
                _, _, records = await run_served_room(
                    catalog, scenario, Settings(_env_file=None), tmp / f"{mode}-{i}", stage,
                    lambda p: offline_models(p, scenario, names, voice=True),
                )  # fmt: skip
            else:
                served = served_catalog(data, server, {"tim": mode, "chris": mode})
                _, _, records = await run_served_room(
                    served, scenario, Settings(_env_file=None), tmp / f"{mode}-{i}", stage
                )
        finally:
            await server.stop()
        if i:
            measured.extend(gaps(stage))
            for k, values in stage_times(records).items():
                stages.setdefault(k, []).extend(values)
    return measured


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.openai_path", description=__doc__)
    parser.add_argument("--rooms", type=int, default=5, help="measured rooms per mode")
    parser.add_argument("--quick", action="store_true", help="one measured room per mode")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    rooms = 1 if args.quick else args.rooms
    by_mode: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("offline", "pipeline", "realtime"):
            stages: dict[str, list[float]] = {}
            measured = await _rooms(mode, rooms, Path(tmp), stages)
            by_mode[mode] = summary_ms(measured)
            by_mode[mode]["p95_ms"] = rounded(percentile([v * 1000 for v in measured], 95))
            by_mode[mode]["stages_ms"] = {
                k: {
                    "p50": rounded(percentile([v * 1000 for v in vs], 50)),
                    "p95": rounded(percentile([v * 1000 for v in vs], 95)),
                }
                for k, vs in stages.items()
                if vs
            }
    aim = {}
    for mode in ("pipeline", "realtime"):
        above = by_mode[mode]["p95_ms"] - by_mode["offline"]["p95_ms"]
        aim[mode] = {"p95_above_offline_ms": rounded(above), "meets": above <= AIM_MS}
    return {
        "bench": "openai_path",
        "machine": machine(),
        "params": {"rooms_per_mode": rooms, "scenario": "dispatch_checkin", "aim_ms": AIM_MS},
        "by_mode": by_mode,
        "aim": aim,
        "load_average": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    return run_async_bench(_parse, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
