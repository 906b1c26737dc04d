"""The floor's own overhead: from one persona's utterance ending to the next one being asked.

Run from the project root: `python -m bench.floor_latency [--quick] [--rooms 3]
[--turns 500] [--personas 4]`. Prints one JSON object.

Each room runs on the local stage through `workers.room.runner.run_room` (the real floor, relay,
transcript and AgentSessions) with a model that answers instantly (`InstantLLM` in
bench/_common.py: a one-line reply, no tools). For every turn after the first we take:

- `utterance_end`: the speaker's session added its assistant message
  (`conversation_item_added`): the utterance is over;
- `floor_emit`: the floor wrote its `floor` event (it has relayed the line into every other
  persona's chat context and chosen who is next);
- `next_chat`: the next persona's model is called (`chat()`), i.e. it is being asked to reply.

`gap` = next_chat - utterance_end is the headline (floor + the framework's own
generate_reply scheduling); `floor_only` = floor_emit - utterance_end is the floor's share.
The floor appends each line to every listener's chat context in place (no copy), but the
framework's own reply preparation still reads the speaker's whole context, so the figures are
also given per 100-turn slice of a room, first and last. A room is capped at 500 turns by the
scenario schema (`rules.max_turns`), so >= 1,000 turns are measured over several rooms; one
more room of `--long-turns` (default 2,000) bypasses that cap (model_copy) to show how a longer
room scales (reported apart, under `beyond_cap`; `beyond_cap.at_end` is the aim: gap p99 over
its last 100 turns, and those turns against its first 100).

Python's cyclic garbage collector pauses the whole event loop: the run counts the collections
of the oldest generation and their pauses (`gc_gen2`). `--gc-freeze` calls `gc.freeze()` after
the warm-up (moves every object alive then out of the collector's reach) to show the effect.
`job_gc` measures what a job process pays: a fresh process imports what the worker's
forkserver preloads (ending with livekit's `_preload_freeze`: collect + freeze, as the
forkserver does before forking a job process), runs `workers.multi.prewarm`, then
`--gc-turns` turns (rooms of <= 500) while gc.callbacks times every collection of every
generation: `as_today` (prewarm as it is), `freeze_after_prewarm` (one more freeze) and
`freeze_each_turn` (also `workers.job.gc_policy.freeze_after_each_turn` on each turn, as
`workers.job.runner` runs a room).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    GcPauses,
    InstantLLM,
    ObservedStage,
    bench_catalog,
    bench_scenario,
    machine,
    quiet,
    rounded,
    run_async_bench,
    summary_ms,
)

AIM_P99_MS = 5.0
AIM_FLAT_RATIO = 1.5  # last 100 turns of the long room against its first 100 (p50)
AIM_GC_PAUSE_MS = 20.0
SLICE = 100
FREEZE_MODES = ("as_today", "freeze_after_prewarm", "freeze_each_turn")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rooms", type=int, default=3, help="rooms run one after the other")
    p.add_argument("--turns", type=int, default=500, help="turns per room (schema cap: 500)")
    p.add_argument("--personas", type=int, default=4, choices=[2, 3, 4])
    p.add_argument(
        "--long-turns",
        type=int,
        default=2000,
        help="one extra room this long, beyond the schema cap (0: none)",
    )
    p.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after the warm-up")
    p.add_argument(
        "--gc-turns",
        type=int,
        default=1000,
        help="turns run in each job-like process for `job_gc` (0: skip it)",
    )
    p.add_argument("--job-gc-child", choices=FREEZE_MODES, help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 room of 30 turns")
    args = p.parse_args(argv)
    if args.quick:
        args.rooms, args.turns, args.long_turns, args.gc_turns = 1, 30, 0, 20
    return args


def _scenario(personas: int, turns: int) -> Any:
    scenario = bench_scenario(personas, min(turns, 500), tools=False)
    if turns > 500:  # beyond the schema's cap: only to show how a longer room scales
        rules = scenario.rules.model_copy(update={"max_turns": turns})
        scenario = scenario.model_copy(update={"rules": rules})
    return scenario


async def _room(
    index: int, personas: int, turns: int, tmp: Path, *, freeze_each_turn: bool = False
) -> dict[str, Any]:
    from workers.capacity.selector import Selector
    from workers.job.gc_policy import freeze_after_each_turn
    from workers.room.runner import run_room
    from workers.room.seat import seats_for

    catalog = bench_catalog()
    scenario = _scenario(personas, turns)
    chats: list[tuple[float, str]] = []  # (time, persona name) of every chat() call
    ends: list[tuple[float, str]] = []  # assistant message added
    floor_emits: list[float] = []
    utterances: list[float] = []

    def on_chat(name: str) -> None:
        chats.append((time.perf_counter(), name))

    def on_event(ev: dict[str, Any]) -> None:
        if ev["event"] == "floor":
            floor_emits.append(time.perf_counter())
        elif ev["event"] == "utterance":
            utterances.append(time.perf_counter())

    def on_open(cast: Any, sessions: Any) -> None:
        for session in sessions.values():

            def added(ev: Any) -> None:
                item = ev.item
                if getattr(item, "type", "") == "message" and item.role == "assistant":
                    ends.append((time.perf_counter(), ""))

            session.on("conversation_item_added", added)

    def models_for(persona: Any) -> Any:
        from agents.models import SessionModels

        return SessionModels(llm=InstantLLM(persona.name, on_chat=on_chat), offline=True)

    selector = Selector(catalog)
    cast = selector.cast(scenario)
    room = f"bench-floor-{index}"
    try:
        result = await run_room(
            room=room,
            scenario=scenario,
            catalog=catalog,
            seats=seats_for(cast.members, room),
            stage=ObservedStage(scenario.human_lines, on_open=on_open),
            models_for=models_for,
            transcripts_dir=tmp,
            listeners=[on_event, *([freeze_after_each_turn] if freeze_each_turn else [])],
        )
    finally:
        cast.release()
    if result.turns != turns:
        raise RuntimeError(f"room ran {result.turns} of {turns} turns: {result.reason}")
    if not (len(chats) == len(ends) == turns and len(floor_emits) >= turns - 1):
        raise RuntimeError(
            f"unexpected event counts: chat={len(chats)} ends={len(ends)} "
            f"floor={len(floor_emits)} turns={turns}"
        )
    gaps = [chats[i + 1][0] - ends[i][0] for i in range(turns - 1)]
    floor_only = [floor_emits[i] - ends[i][0] for i in range(turns - 1)]
    relay = [floor_emits[i] - utterances[i] for i in range(turns - 1)]
    handle_done = [utterances[i] - ends[i][0] for i in range(turns - 1)]
    ask = [chats[i + 1][0] - floor_emits[i] for i in range(turns - 1)]
    return {
        "gaps": gaps,
        "floor_only": floor_only,
        "relay": relay,
        "handle_done": handle_done,
        "ask": ask,
    }


def _slices(values: list[list[float]]) -> list[dict[str, Any]]:
    """Per 100-turn slice of a room (turn index within the room), pooled over rooms."""
    longest = max(len(v) for v in values)
    out = []
    for start in range(0, longest, SLICE):
        pooled = [x for v in values for x in v[start : start + SLICE]]
        s = summary_ms(pooled)
        out.append({"turns": f"{start + 2}-{min(start + SLICE, longest) + 1}", **s})
    return out


def _at_end(gaps: list[float]) -> dict[str, Any]:
    """The long room's aim: gap p99 over its last 100 turns, and those against its first 100."""
    first, last = summary_ms(gaps[:SLICE]), summary_ms(gaps[-SLICE:])

    def ratio(key: str) -> float | None:
        return rounded(last[key] / first[key], 2) if first.get(key) else None

    p50_ratio = ratio("p50_ms")
    return {
        "last_turn": len(gaps) + 1,
        "first_100": first,
        "last_100": last,
        "ratio_last_to_first": {"p50": p50_ratio, "p99": ratio("p99_ms"), "mean": ratio("mean_ms")},
        "aim": {
            "p99_ms_max": AIM_P99_MS,
            "ratio_max": AIM_FLAT_RATIO,
            "ratio_measure": "p50",
            "p99_reached": last["p99_ms"] < AIM_P99_MS,
            "flat_reached": p50_ratio is not None and p50_ratio <= AIM_FLAT_RATIO,
        },
    }


def _growth(slices: list[dict[str, Any]]) -> dict[str, Any]:
    first, last = slices[0], slices[-1]
    return {
        "first_slice": first["turns"],
        "last_slice": last["turns"],
        "first_slice_p50_ms": first.get("p50_ms"),
        "last_slice_p50_ms": last.get("p50_ms"),
        "first_slice_p99_ms": first.get("p99_ms"),
        "last_slice_p99_ms": last.get("p99_ms"),
        "p50_ratio_last_to_first": rounded(last["p50_ms"] / first["p50_ms"], 2)
        if first.get("p50_ms")
        else None,
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    per_room = []
    long_room = None
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        await _room(-1, args.personas, 10, Path(tmp))  # warm-up, not counted
        gc.collect()
        if args.gc_freeze:
            gc.freeze()
        with GcPauses() as pauses:
            for i in range(args.rooms):
                per_room.append(await _room(i, args.personas, args.turns, Path(tmp)))
        if args.long_turns:
            with GcPauses() as long_pauses:
                long_room = await _room(args.rooms, args.personas, args.long_turns, Path(tmp))
    pooled = {k: [x for r in per_room for x in r[k]] for k in per_room[0]}
    slices = _slices([r["gaps"] for r in per_room])
    beyond_cap: dict[str, Any] | None = None
    if long_room is not None:
        long_slices = _slices([long_room["gaps"]])
        beyond_cap = {
            "turns": args.long_turns,
            "note": "one room past the scenario schema's 500-turn cap (not reachable in the "
            "product today): how the gap would keep growing with the context",
            "gap": summary_ms(long_room["gaps"]),
            "floor_only": summary_ms(long_room["floor_only"]),
            "at_end": _at_end(long_room["gaps"]),
            "floor_only_at_end": _at_end(long_room["floor_only"]),
            "growth": _growth(long_slices),
            "by_turn_slice": long_slices[:: max(1, len(long_slices) // 10)] + long_slices[-1:],
            "gc_gen2": long_pauses.summary(),
        }
    return {
        "bench": "floor_latency",
        "machine": machine(),
        "params": {
            "rooms": args.rooms,
            "turns_per_room": args.turns,
            "personas": args.personas,
            "turn_policy": "round_robin",
            "model": "InstantLLM (bench/_common.py): answers at once, no tools",
            "stage": "local (workers.room.runner.run_room + LocalStage)",
            "gc_freeze": args.gc_freeze,
            "long_turns": args.long_turns,
        },
        "measured_turns": len(pooled["gaps"]),
        "gap": summary_ms(pooled["gaps"]),
        "floor_only": summary_ms(pooled["floor_only"]),
        "breakdown": {
            "utterance_end_to_handle_done": summary_ms(pooled["handle_done"]),
            "relay_and_next_choice": summary_ms(pooled["relay"]),
            "floor_emit_to_next_chat": summary_ms(pooled["ask"]),
        },
        "by_turn_slice": slices,
        "growth": _growth(slices),
        "gc_gen2": pauses.summary(),
        "beyond_cap": beyond_cap,
        "job_gc": _job_gc(args) if args.gc_turns else None,
        "aim": {
            "p99_ms_max": AIM_P99_MS,
            "gap_p99_reached": summary_ms(pooled["gaps"])["p99_ms"] < AIM_P99_MS,
            "floor_only_p99_reached": summary_ms(pooled["floor_only"])["p99_ms"] < AIM_P99_MS,
        },
    }


# ---- GC pauses in a job-like process --------------------------------------------------------


class _AllGcPauses:
    """Every collection, any generation: (generation, seconds)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._t0))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for gen in (0, 1, 2):
            ms = [d * 1000 for g, d in self.pauses if g == gen]
            out[f"gen{gen}"] = {
                "collections": len(ms),
                "max_pause_ms": rounded(max(ms)) if ms else 0.0,
                "total_pause_ms": rounded(sum(ms)),
            }
        every = [d * 1000 for _, d in self.pauses]
        out["max_pause_ms"] = rounded(max(every)) if every else 0.0
        return out


def _as_the_forkserver_does() -> list[str]:
    """Import what the worker's forkserver preloads, in its order (livekit worker.py): the
    plugins, our preload module, livekit's warm-up, then `_preload_freeze` (collect+freeze)."""
    from livekit.agents import Plugin

    import workers.multi  # noqa: F401  (registers the plugins it imports)

    plugins = [p.package for p in Plugin.registered_plugins]
    modules = list(dict.fromkeys([*plugins, "workers.multi"]))
    modules += ["livekit.agents.ipc._preload", "livekit.agents.ipc._preload_freeze"]
    for name in modules:
        importlib.import_module(name)
    return modules


def _job_gc_child(mode: str, turns: int, personas: int) -> dict[str, Any]:
    """One job-like process: forkserver preloads, prewarm, [gc.freeze()], then `turns` turns."""
    from types import SimpleNamespace

    preloaded = _as_the_forkserver_does()
    from workers.multi import prewarm

    prewarm(SimpleNamespace(userdata={}))  # type: ignore[arg-type]  # stands in: only .userdata
    quiet()  # prewarm configured the product's logging: stdout carries only the JSON
    if mode != "as_today":
        gc.freeze()
    each_turn = mode == "freeze_each_turn"  # as workers.job.runner runs a room
    frozen = gc.get_freeze_count()
    pauses = _AllGcPauses()
    rooms = [min(500, turns - k) for k in range(0, turns, 500)]
    with tempfile.TemporaryDirectory(prefix="bench-floor-gc-") as tmp:

        async def run() -> None:
            gc.callbacks.append(pauses)
            try:
                for i, n in enumerate(rooms):
                    await _room(i, personas, n, Path(tmp), freeze_each_turn=each_turn)
            finally:
                gc.callbacks.remove(pauses)

        asyncio.run(run())
    return {
        "mode": mode,
        "turns": sum(rooms),
        "rooms": len(rooms),
        "preloaded": preloaded,
        "frozen_objects": frozen,
        **pauses.summary(),
    }


def _job_gc(args: argparse.Namespace) -> dict[str, Any]:
    """Run the job-like process twice (as today, and with gc.freeze() after prewarm)."""
    out: dict[str, Any] = {}
    env = {**os.environ, "OPENAI_API_KEY": ""}  # prewarm warms the offline voice, as offline
    for mode in FREEZE_MODES:
        cmd = [sys.executable, "-m", "bench.floor_latency", "--job-gc-child", mode]
        cmd += ["--gc-turns", str(args.gc_turns), "--personas", str(args.personas)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"job_gc child {mode} failed: {proc.stderr[-2000:]}")
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    longest = {mode: out[mode]["max_pause_ms"] for mode in FREEZE_MODES}
    out["aim"] = {
        "max_pause_ms_max": AIM_GC_PAUSE_MS,
        **{f"{mode}_reached": ms <= AIM_GC_PAUSE_MS for mode, ms in longest.items()},
    }
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.job_gc_child:
        quiet()
        print(json.dumps(_job_gc_child(args.job_gc_child, args.gc_turns, args.personas)))
        return 0
    return run_async_bench(_parse, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
