"""What hosting rooms costs one process: RSS and CPU of R rooms x P personas at once.

Run from the project root: `python bench/room_overhead.py [--quick] [--rooms 1 5 20]
[--personas 1 2 4] [--turns 20] [--repeats 3]`. Prints one JSON object.

Each (R, P) point runs in a fresh subprocess (so no RSS carries over from another point): it
imports the product, runs one small warm-up room, notes its RSS, then runs R rooms of P
personas concurrently through `workers.simulate.simulate` (the selector's cast, real
AgentSessions on the local stage, the real floor and transcript, the offline model), each room
exactly `--turns` turns, while a thread samples RSS. The point's figures are the peak RSS over
the run, the growth over the warm baseline, and the CPU time of the run. The parent fits
`rss_rooms = base + a*rooms + b*(rooms*personas)` over all points (rss_rooms: the peak minus
the point's own warm baseline, which removes the process-to-process spread of the baseline):
`b` is the memory of one more persona in a room, `a` of one more room beyond its personas.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    RssSampler,
    bench_catalog,
    bench_scenario,
    cpu_s,
    emit,
    lstsq,
    machine,
    offline_settings,
    quiet,
    rounded,
    rss_mb,
    settle,
)

AIM_MB_PER_PERSONA = 15.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rooms", type=int, nargs="+", default=[1, 5, 20])
    p.add_argument("--personas", type=int, nargs="+", default=[1, 2, 4], choices=[1, 2, 3, 4])
    p.add_argument("--turns", type=int, default=20, help="turns per room")
    p.add_argument("--repeats", type=int, default=2, help="fresh processes per point (median)")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: rooms 1 2, personas 1 2, 4 turns, 1 rep"
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.rooms, args.personas, args.turns, args.repeats = [1, 2], [1, 2], 4, 1
    return args


# ---- one point, in its own process -----------------------------------------------------------


async def _point(rooms: int, personas: int, turns: int) -> dict[str, Any]:
    from workers.selector import Selector
    from workers.simulate import simulate

    catalog = bench_catalog()
    selector = Selector(catalog)
    scenario = bench_scenario(personas, turns)
    with tempfile.TemporaryDirectory(prefix="bench-rooms-") as tmp:
        settings = offline_settings(Path(tmp))
        # warm-up: one tiny room, so lazy imports and first-use caches are not billed to rooms
        await simulate(bench_scenario(1, 2), catalog, settings, selector=selector, room="warm")
        settle()
        base = rss_mb()
        alive = {"now": 0, "max": 0}

        def count(ev: dict[str, Any]) -> None:
            if ev["event"] == "room_started":
                alive["now"] += 1
                alive["max"] = max(alive["max"], alive["now"])
            elif ev["event"] == "room_ended":
                alive["now"] -= 1

        cpu0, wall0 = cpu_s(), time.perf_counter()
        with RssSampler(0.005) as sampler:
            results = await asyncio.gather(
                *(
                    simulate(
                        scenario,
                        catalog,
                        settings,
                        selector=selector,
                        room=f"bench-{i}",
                        listeners=[count],
                    )
                    for i in range(rooms)
                )
            )
        cpu, wall = cpu_s() - cpu0, time.perf_counter() - wall0
    bad = [r.reason for r in results if r.reason != "max_turns" or r.turns != turns]
    if bad:
        raise RuntimeError(f"rooms did not run their {turns} turns: {bad}")
    total_turns = sum(r.turns for r in results)
    return {
        "rooms": rooms,
        "personas": personas,
        "sessions": rooms * personas,
        "turns": total_turns,
        "max_rooms_alive": alive["max"],
        "rss_base_mb": rounded(base, 2),
        "rss_peak_mb": rounded(sampler.peak, 2),
        "rss_rooms_mb": rounded(sampler.peak - base, 2),
        "cpu_s": rounded(cpu, 4),
        "wall_s": rounded(wall, 4),
    }


def _run_child(args: argparse.Namespace) -> None:
    quiet()
    emit(asyncio.run(_point(args.rooms[0], args.personas[0], args.turns)))


# ---- the parent: one subprocess per point and repeat ----------------------------------------


def _measure(rooms: int, personas: int, turns: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--rooms",
        str(rooms),
        "--personas",
        str(personas),
        "--turns",
        str(turns),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"point R={rooms} P={personas} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median_point(samples: list[dict[str, Any]]) -> dict[str, Any]:
    point = dict(samples[0])
    for key in ("rss_base_mb", "rss_peak_mb", "rss_rooms_mb", "cpu_s", "wall_s"):
        point[key] = rounded(statistics.median(s[key] for s in samples), 4)
    point["max_rooms_alive"] = min(s["max_rooms_alive"] for s in samples)
    point["cpu_ms_per_turn"] = rounded(1000 * point["cpu_s"] / point["turns"], 3)
    point["rss_rooms_mb_samples"] = [s["rss_rooms_mb"] for s in samples]
    return point


def _marginals(points: list[dict[str, Any]]) -> dict[str, Any]:
    by = {(p["rooms"], p["personas"]): p for p in points}
    rooms = sorted({p["rooms"] for p in points})
    personas = sorted({p["personas"] for p in points})
    out: dict[str, Any] = {}
    rows = [[1.0, p["rooms"], p["rooms"] * p["personas"]] for p in points]
    if len(rooms) > 1 and len(personas) > 1:
        base, per_room, per_persona = lstsq(rows, [p["rss_rooms_mb"] for p in points])
        _c0, c_room, c_persona = lstsq(rows, [p["cpu_s"] for p in points])
        out["fit"] = {
            "model": "rss_rooms_mb = base + per_room*R + per_persona*R*P (least squares)",
            "base_mb": rounded(base, 2),
            "mb_per_extra_room": rounded(per_room, 3),
            "mb_per_extra_persona": rounded(per_persona, 3),
            "mb_per_extra_room_of_4": rounded(per_room + 4 * per_persona, 3),
            "cpu_s_per_extra_room": rounded(c_room, 4),
            "cpu_s_per_extra_persona": rounded(c_persona, 4),
        }
    lo_p, hi_p = personas[0], personas[-1]
    lo_r, hi_r = rooms[0], rooms[-1]
    if hi_p > lo_p:
        out["mb_per_extra_persona_by_rooms"] = {
            str(r): rounded(
                (by[r, hi_p]["rss_rooms_mb"] - by[r, lo_p]["rss_rooms_mb"]) / (r * (hi_p - lo_p)),
                3,
            )
            for r in rooms
        }
    if hi_r > lo_r:
        out["mb_per_extra_room_by_personas"] = {
            str(p): rounded(
                (by[hi_r, p]["rss_rooms_mb"] - by[lo_r, p]["rss_rooms_mb"]) / (hi_r - lo_r), 3
            )
            for p in personas
        }
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.child:
        _run_child(args)
        return 0
    started = time.perf_counter()
    points = []
    for rooms in args.rooms:
        for personas in args.personas:
            samples = [_measure(rooms, personas, args.turns) for _ in range(args.repeats)]
            points.append(_median_point(samples))
    marginals = _marginals(points)
    per_persona = marginals.get("fit", {}).get("mb_per_extra_persona")
    emit(
        {
            "bench": "room_overhead",
            "machine": machine(),
            "params": {
                "rooms": args.rooms,
                "personas": args.personas,
                "turns_per_room": args.turns,
                "repeats": args.repeats,
                "model": "offline (agents.offline.OfflineLLM, scripted lines incl. tool calls)",
                "stage": "local (workers.simulate.simulate: selector cast, run_room, LocalStage)",
                "rss": "peak RSS sampled every 5 ms while the rooms run; base = RSS after "
                "imports and one warm-up room; median over repeats, each a fresh process",
            },
            "points": points,
            "marginal": marginals,
            "aim": {
                "mb_per_extra_persona_max": AIM_MB_PER_PERSONA,
                "reached": per_persona is not None and per_persona <= AIM_MB_PER_PERSONA,
            },
            "elapsed_s": rounded(time.perf_counter() - started, 1),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
