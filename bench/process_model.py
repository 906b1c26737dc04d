"""One process for the whole room against one process per persona: the same conversation.

Run from the project root: `python bench/process_model.py [--quick] [--turns 40]
[--repeats 2] [--vad both|on|off] [--start both|spawn|forkserver]`. Prints one JSON object.

(a) this project: one process hosts the room's four personas (`workers.simulate.simulate`:
    the selector's cast, four AgentSessions on the local stage, the floor relaying each line).
(b) the "one worker per agent" layout: four processes, each with the same imports and ONE
    AgentSession (the same persona agent and offline model), talking through a relay the
    parent runs over multiprocessing pipes: the relay asks the next persona to speak, then
    sends the line to the three others, who add it to their chat context (what the floor does
    in (a)). The relay's own CPU is reported apart and not counted in (b): in a deployment the
    LiveKit server carries that traffic.

Both run the same scripted round-robin conversation for the same number of turns (checked).
Process start, both reported by default:
- `spawn`: every process a fresh interpreter that imports the room stack itself;
- `forkserver`: every process forked from a server that imported the stack once, which is
  how livekit-agents starts job processes on Linux (`preload_modules`, then the framework's
  own warm-up and `gc.freeze()`, as its worker does): imported pages stay shared
  copy-on-write between the processes.
With VAD on, every process first loads silero VAD, as the worker's `prewarm` does in each job
process (`workers.multi.prewarm`).

Memory, per process, summed over (b)'s four: peak RSS (ru_maxrss; the aim's measure), and, at
the last line with every session alive, USS (pages only that process maps: what its exit would
free). RSS counts every shared page in every process that maps it, so under `forkserver`
(where the preloaded stack and model weights are shared) USS is the figure that matters.
Also the RSS growth during the room over the RSS after the imports; (a) runs with 1, 2 and 4
personas, and the growth difference gives the MB of one more persona in the room. CPU, per
process: total (under `spawn`, interpreter start and imports included) and room only (after
the imports and the prewarm: catalog, cast, session start, the conversation).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench._common import (
    MB,
    ROLES4,
    RssSampler,
    bench_catalog,
    bench_scenario,
    cpu_s,
    emit,
    machine,
    offline_settings,
    peak_rss_mb,
    quiet,
    rounded,
    rss_mb,
    settle,
)

AIM_MEMORY_RATIO = 0.40
AIM_MB_PER_PERSONA = 15.0
# the product's room stack (livekit-agents, the openai and silero plugins, our agents/workers)
SAME_IMPORTS = ("agents.persona", "agents.offline", "workers.room", "workers.simulate")
# what livekit-agents' worker adds to a forkserver's preload (worker.py): its one-time warm-up,
# then gc.freeze() so the cyclic GC in job processes does not unshare the preloaded pages
FRAMEWORK_PRELOAD = ("livekit.agents.ipc._preload", "livekit.agents.ipc._preload_freeze")
MEDIAN_KEYS = (
    "rss_peak_mb",
    "uss_mb",
    "rss_room_growth_mb",
    "cpu_total_s",
    "cpu_room_s",
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--turns", type=int, default=40, help="turns of the 4-persona conversation")
    p.add_argument("--repeats", type=int, default=2, help="runs of each layout (median)")
    p.add_argument("--vad", choices=["both", "on", "off"], default="both")
    p.add_argument("--start", choices=["both", "spawn", "forkserver"], default="both")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 4 turns, 1 repeat, no VAD, 1 and 4"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.turns, args.repeats, args.vad = 4, 1, "off"
    return args


def _imports(load_vad: bool) -> Any:
    """The same imports in every process of both layouts (a no-op after a forkserver's
    preload), and the worker's per-process VAD prewarm when asked."""
    for module in SAME_IMPORTS:
        importlib.import_module(module)
    if load_vad:
        from livekit.plugins import silero

        return silero.VAD.load()
    return None


def _shared_aware() -> dict[str, float]:
    info = psutil.Process().memory_full_info()
    return {"uss_mb": rounded(info.uss / MB, 2)}


def _figures(
    cpu_at_ready: float, base_mb: float, sampler: RssSampler, live: dict[str, float]
) -> dict[str, Any]:
    now = cpu_s()
    sampler.sample()
    return {
        "rss_peak_mb": rounded(peak_rss_mb(), 2),
        "rss_mb": rounded(rss_mb(), 2),
        **live,
        "rss_after_imports_mb": rounded(base_mb, 2),
        "rss_room_growth_mb": rounded(sampler.peak - base_mb, 3),
        "cpu_total_s": rounded(now, 4),
        "cpu_room_s": rounded(now - cpu_at_ready, 4),
    }


def _guarded(conn: Any, work: Any) -> None:
    """Run a child's work; any failure goes back to the parent as text."""
    try:
        quiet()
        work()
    except BaseException:
        conn.send({"error": traceback.format_exc()})
        raise
    finally:
        conn.close()


# ---- (a) one process, the whole room ---------------------------------------------------------


async def _room(personas: int, turns: int, load_vad: bool) -> dict[str, Any]:
    from workers.selector import Selector
    from workers.simulate import simulate

    _vad = _imports(load_vad)
    settle()
    ready, base = cpu_s(), rss_mb()
    catalog = bench_catalog()
    scenario = bench_scenario(personas, turns)
    lines: list[str] = []
    live: dict[str, float] = {}

    def keep(ev: dict[str, Any]) -> None:
        if ev["event"] == "utterance":
            lines.append(ev["text"])
            if ev["turn"] == turns:  # the last line: every session still alive
                live.update(_shared_aware())

    with RssSampler(0.005) as sampler, tempfile.TemporaryDirectory(prefix="bench-pm-") as tmp:
        result = await simulate(
            scenario,
            catalog,
            offline_settings(Path(tmp)),
            selector=Selector(catalog),
            room="bench-process-model",
            listeners=[keep],
        )
        figures = _figures(ready, base, sampler, live)
    if result.turns != turns:
        raise RuntimeError(f"the room ran {result.turns} turns, not {turns}: {result.reason}")
    return {**figures, "turns": result.turns, "lines": lines}


def _room_proc(conn: Any, personas: int, turns: int, load_vad: bool) -> None:
    _guarded(conn, lambda: conn.send(asyncio.run(_room(personas, turns, load_vad))))


# ---- (b) one process per persona -------------------------------------------------------------


async def _recv(conn: Any) -> Any:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(conn.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


async def _persona(
    conn: Any, persona_id: str, cast_ids: dict[str, str], turns: int, load_vad: bool
) -> None:
    """Serve one persona: `speak`, `hear`, `stats`, `close` requests from the relay."""
    from livekit.agents import llm

    from agents.offline import offline_models
    from agents.persona import RecordingFloor, build_agent
    from agents.room_data import RoomData
    from workers.stage import make_session

    _vad = _imports(load_vad)
    settle()
    ready, base = cpu_s(), rss_mb()
    sampler = RssSampler(0.005).__enter__()
    catalog = bench_catalog()
    scenario = bench_scenario(len(cast_ids), turns)
    cast = {role: catalog.persona(pid) for role, pid in cast_ids.items()}
    persona = catalog.persona(persona_id)
    names = {role: p.name for role, p in cast.items()}
    room = RoomData(scenario, catalog)
    agent = build_agent(persona, room=room, cast=cast, floor=RecordingFloor())
    session = make_session(offline_models(persona, scenario, names))
    await session.start(agent)
    conn.send({"ready": True})
    while True:
        msg = await _recv(conn)
        if msg["op"] == "speak":
            handle = session.generate_reply()
            await handle
            text = " ".join(
                m.text_content or ""
                for m in handle.chat_items
                if getattr(m, "type", "") == "message" and m.role == "assistant"
            ).strip()
            conn.send({"text": text})
        elif msg["op"] == "hear":
            ctx: llm.ChatContext = agent.chat_ctx.copy()
            ctx.add_message(role="user", content=msg["line"])
            await agent.update_chat_ctx(ctx)
            conn.send({"ok": True})
        elif msg["op"] == "stats":
            conn.send(_figures(ready, base, sampler, _shared_aware()))
        elif msg["op"] == "close":
            await session.aclose()
            conn.send({"closed": True})
            break
    sampler.__exit__()


def _persona_proc(
    conn: Any, persona_id: str, cast_ids: dict[str, str], turns: int, load_vad: bool
) -> None:
    _guarded(conn, lambda: asyncio.run(_persona(conn, persona_id, cast_ids, turns, load_vad)))


def _answer(conn: Any, who: str) -> dict[str, Any]:
    msg = conn.recv()
    if "error" in msg:
        raise RuntimeError(f"{who} failed:\n{msg['error'][-3000:]}")
    return msg


def _per_persona_layout(ctx: Any, turns: int, load_vad: bool) -> dict[str, Any]:
    """Cast as (a) does, start one process per persona, relay the conversation."""
    from workers.selector import Selector

    catalog = bench_catalog()
    scenario = bench_scenario(len(ROLES4), turns)
    cast = Selector(catalog).cast(scenario)
    cast_ids = {m.slot.role: m.persona.id for m in cast.members}
    labels = {m.persona.id: f"{m.persona.name} ({m.persona.role})" for m in cast.members}
    order = [m.persona.id for m in cast.members]  # opener first, then slot order: round robin
    conns: dict[str, Any] = {}
    procs = []
    try:
        for pid in order:
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_persona_proc, args=(theirs, pid, cast_ids, turns, load_vad))
            proc.start()
            theirs.close()
            conns[pid] = mine
            procs.append(proc)
        for pid, conn in conns.items():
            _answer(conn, pid)  # ready
        relay_cpu0 = cpu_s()
        lines: list[str] = []
        for turn in range(turns):
            speaker = order[turn % len(order)]
            conns[speaker].send({"op": "speak"})
            text = _answer(conns[speaker], speaker)["text"]
            lines.append(text)
            line = f"{labels[speaker]}: {text}"
            others = [pid for pid in order if pid != speaker]
            for pid in others:
                conns[pid].send({"op": "hear", "line": line})
            for pid in others:
                _answer(conns[pid], pid)
        relay_cpu = cpu_s() - relay_cpu0
        stats = {}
        for pid, conn in conns.items():
            conn.send({"op": "stats"})
            stats[pid] = _answer(conn, pid)
        for pid, conn in conns.items():
            conn.send({"op": "close"})
            _answer(conn, pid)
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        cast.release()
    total = {k: sum(s[k] for s in stats.values()) for k in MEDIAN_KEYS}
    return {**total, "processes": stats, "relay_cpu_s": relay_cpu, "lines": lines}


def _one_process_layout(ctx: Any, personas: int, turns: int, load_vad: bool) -> dict[str, Any]:
    mine, theirs = ctx.Pipe()
    proc = ctx.Process(target=_room_proc, args=(theirs, personas, turns, load_vad))
    proc.start()
    theirs.close()
    try:
        return _answer(mine, f"one-process room ({personas} personas)")
    finally:
        proc.join(30)


def _median(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: rounded(statistics.median(r[k] for r in runs), 3) for k in keys}


def _variant(
    start: str, load_vad: bool, turns: int, repeats: int, sizes: tuple[int, ...]
) -> dict[str, Any]:
    ctx = mp.get_context(start)
    if start == "forkserver":
        ctx.set_forkserver_preload(["__main__", *SAME_IMPORTS, *FRAMEWORK_PRELOAD])
    one = {p: [_one_process_layout(ctx, p, turns, load_vad) for _ in range(repeats)] for p in sizes}
    per = [_per_persona_layout(ctx, turns, load_vad) for _ in range(repeats)]
    a = _median(one[4], MEDIAN_KEYS)
    b = _median(per, (*MEDIAN_KEYS, "relay_cpu_s"))
    growth = {p: statistics.median(r["rss_room_growth_mb"] for r in rs) for p, rs in one.items()}
    middle = per[len(per) // 2]["processes"]
    return {
        "start": start,
        "vad_prewarm": load_vad,
        "one_process": {**a, "processes": 1, "personas": 4},
        "process_per_persona": {
            **b,
            "processes": 4,
            "per_process_rss_peak_mb": [s["rss_peak_mb"] for s in middle.values()],
            "per_process_uss_mb": [s["uss_mb"] for s in middle.values()],
        },
        "same_conversation": all(r["lines"] == per[0]["lines"] for r in one[4] + per),
        "memory_ratio": rounded(a["rss_peak_mb"] / b["rss_peak_mb"], 3),
        "uss_ratio": rounded(a["uss_mb"] / b["uss_mb"], 3),
        "cpu_total_ratio": rounded(a["cpu_total_s"] / b["cpu_total_s"], 3),
        "cpu_room_ratio": rounded(a["cpu_room_s"] / b["cpu_room_s"], 3),
        "one_process_room_growth_mb_by_personas": {str(p): v for p, v in growth.items()},
        "mb_per_extra_persona": rounded((growth[4] - growth[1]) / 3, 3),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    quiet()
    started = time.perf_counter()
    starts = ["spawn", "forkserver"] if args.start == "both" else [args.start]
    vads = {"both": [True, False], "on": [True], "off": [False]}[args.vad]
    sizes = (1, 4) if args.quick else (1, 2, 4)
    variants = [_variant(s, v, args.turns, args.repeats, sizes) for s in starts for v in vads]
    head = variants[0]
    emit(
        {
            "bench": "process_model",
            "machine": machine(),
            "params": {
                "personas": 4,
                "turns": args.turns,
                "repeats": args.repeats,
                "vad": args.vad,
                "start": starts,
                "model": "offline (agents.offline.OfflineLLM, scripted lines incl. tool calls)",
                "memory": "per process, summed over (b): peak RSS (memory_ratio, the aim's "
                "measure); USS at the last line with every session alive",
                "cpu": "per process: total, and room only (after imports and prewarm)",
            },
            "variants": variants,
            "summary": [
                {
                    "start": v["start"],
                    "vad_prewarm": v["vad_prewarm"],
                    "one_process_rss_mb": v["one_process"]["rss_peak_mb"],
                    "per_persona_rss_mb": v["process_per_persona"]["rss_peak_mb"],
                    "memory_ratio": v["memory_ratio"],
                    "uss_ratio": v["uss_ratio"],
                    "cpu_total_ratio": v["cpu_total_ratio"],
                    "cpu_room_ratio": v["cpu_room_ratio"],
                    "mb_per_extra_persona": v["mb_per_extra_persona"],
                }
                for v in variants
            ],
            "aims": {
                "memory_ratio_max": AIM_MEMORY_RATIO,
                "memory_ratio_reached": all(
                    v["memory_ratio"] <= AIM_MEMORY_RATIO for v in variants
                ),
                "uss_ratio_reached": all(v["uss_ratio"] <= AIM_MEMORY_RATIO for v in variants),
                "mb_per_extra_persona_max": AIM_MB_PER_PERSONA,
                "mb_per_extra_persona_reached": all(
                    v["mb_per_extra_persona"] <= AIM_MB_PER_PERSONA for v in variants
                ),
            },
            "memory_ratio": head["memory_ratio"],
            "mb_per_extra_persona": head["mb_per_extra_persona"],
            "elapsed_s": rounded(time.perf_counter() - started, 1),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
