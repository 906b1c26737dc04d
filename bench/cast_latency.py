"""From a scenario accepted to every persona's session started, on the local stage.

Run from the project root: `python -m bench.cast_latency [--quick] [--reps 200]
[--personas 1 2 4]`. Prints one JSON object.

Each repetition casts the scenario with the selector (`Selector.cast`; the worker does this in
`on_request` before it accepts), then runs the room through `workers.room.runner.run_room` on the
product's LocalStage with the offline model. The clock starts when `cast()` returns and stops
when `LocalStage.open` returns (every persona's AgentSession started): transcript opened, room
data and floor built, each persona's agent built (instructions, tools), its models built, its
session started. The room then runs one turn and closes (not timed). The selector's own
`cast()` time is reported apart. The first `--warmup` repetitions per size are not counted.
The LiveKit stage adds one room connection per extra persona (network, not measured here).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    GcPauses,
    ObservedStage,
    bench_catalog,
    bench_scenario,
    machine,
    run_async_bench,
    summary_ms,
)

AIM_P99_MS_4 = 100.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--personas", type=int, nargs="+", default=[1, 2, 4], choices=[1, 2, 3, 4])
    p.add_argument("--reps", type=int, default=1000, help="timed repetitions per cast size")
    p.add_argument("--warmup", type=int, default=5, help="untimed repetitions per cast size")
    p.add_argument("--quick", action="store_true", help="smoke run: 10 reps, 2 warm-up")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.warmup = 10, 2
    return args


async def _once(selector: Any, catalog: Any, scenario: Any, tmp: Path, i: int) -> dict[str, float]:
    from agents.offline import offline_models
    from workers.room.runner import run_room
    from workers.room.seat import seats_for

    t_cast = time.perf_counter()
    cast = selector.cast(scenario)
    accepted = time.perf_counter()
    names = {m.slot.role: m.persona.name for m in cast.members}
    stage = ObservedStage(scenario.human_lines)
    room = f"bench-cast-{i}"
    try:
        result = await run_room(
            room=room,
            scenario=scenario,
            catalog=catalog,
            seats=seats_for(cast.members, room),
            stage=stage,
            models_for=lambda persona: offline_models(persona, scenario, names),
            transcripts_dir=tmp,
        )
    finally:
        cast.release()
    if stage.opened_at is None or result.reason != "max_turns":
        raise RuntimeError(f"room did not start and run: {result.reason} {result.detail}")
    return {"cast": accepted - t_cast, "start": stage.opened_at - accepted}


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from workers.capacity.selector import Selector

    catalog = bench_catalog()
    selector = Selector(catalog)
    sizes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cast-") as tmp:
        for personas in args.personas:
            scenario = bench_scenario(personas, 1)
            for i in range(args.warmup):
                await _once(selector, catalog, scenario, Path(tmp), -1 - i)
            with GcPauses() as pauses:
                runs = [
                    await _once(selector, catalog, scenario, Path(tmp), i) for i in range(args.reps)
                ]
            sizes[str(personas)] = {
                "accepted_to_started": summary_ms([r["start"] for r in runs]),
                "selector_cast": summary_ms([r["cast"] for r in runs]),
                "gc_gen2_during_reps": pauses.summary(),
            }
    four = sizes.get("4", {}).get("accepted_to_started", {})
    return {
        "bench": "cast_latency",
        "machine": machine(),
        "params": {
            "personas": args.personas,
            "reps": args.reps,
            "warmup": args.warmup,
            "model": "offline (agents.offline.OfflineLLM)",
            "stage": "local (workers.room.runner.run_room + LocalStage), one turn per room",
            "clock": "selector.cast() returned -> LocalStage.open() returned",
        },
        "by_personas": sizes,
        "aim": {
            "p99_ms_max_for_4": AIM_P99_MS_4,
            "reached": bool(four) and four["p99_ms"] < AIM_P99_MS_4,
        },
    }


def main(argv: list[str] | None = None) -> int:
    return run_async_bench(_parse, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
