"""This worker's layout against the stock one-agent-per-process layout, whole-machine memory.

Run from the project root: `python -m bench.process_model [--quick] [--turns 40]
[--voice both|openai|offline] [--stock-preload both|default|off]`. Prints one JSON object.

Both layouts are started the way livekit-agents starts them on Linux, with the real pieces:
a worker main process builds its AgentServer, livekit's forkserver is started with the
preload list livekit computes for that server (the registered plugins' packages, the
server's `preload_modules`, then livekit's own warm-up `ipc._preload` and
`ipc._preload_freeze`, in livekit's order) and the environment the main process leaves it,
and each job process is forked from that forkserver and runs the server's `setup_fnc` before
its job.

(a) this project: one worker main (`workers.multi.build_server`, as `python -m workers.multi
    start` builds it), its forkserver, ONE job process: `workers.multi.prewarm`, then the room
    of 4 personas (`workers.simulate.simulate`: the selector's cast, four AgentSessions on the
    local stage, the floor relaying each line in place).
(b) stock: one worker per persona (a stock AgentServer per agent name, as in livekit's
    examples: its module imports the openai and silero plugins, so livekit preloads them, and
    the same persona code is preloaded too), each with its own forkserver and ONE job process:
    its prewarm (silero VAD, plus the offline voice when there is no key, as the project's
    does), then ONE AgentSession of the same persona agent and model. This script relays each
    line to the other three, as the LiveKit server would carry it (its CPU is not counted).
    livekit's local inference preload (its VAD and end-of-turn model, ~244 MB a forkserver)
    is left to livekit's default (`default`: stock livekit, which uses that model for turn
    detection by default) or switched off as this worker does (`off`).

Both run the same scripted round-robin conversation (`agents.offline.OfflineLLM`, checked
equal). `--voice openai`: a (fake, never used) OPENAI_API_KEY, so prewarm loads what a
production job process loads; `offline`: no key, so prewarm also loads the offline voice
(eSpeak NG, pocketsphinx). The conversation itself is text on the local stage in both: no
room connections, no audio (bench.live_room measures those on a real server).

Memory: PSS and USS from /proc/<pid>/smaps_rollup (bench/_memory.py) of every process of each
layout: the worker main(s), multiprocessing's resource tracker(s), the forkserver(s) and the job
process(es); `idle` once every job process has prewarmed, `room` at the conversation's last
line with every session alive. The aim's measure is `pss_ratio_whole_machine` = PSS(a) /
PSS(b), both summed over the whole layout, at the last line. (a) also runs with 1 persona:
`mb_pss_per_extra_persona` = its whole-machine PSS at the last line, 4 personas against 1,
divided by 3.
CPU (utime + stime, /proc/<pid>/stat): `cpu_room_s`, the job processes from the end of
prewarm to the last line; `cpu_total_s`, every process of the layout from its start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._memory import Memory, memory_of, role_of, tree

ROOT = Path(__file__).resolve().parent.parent
AIM_MEMORY_RATIO = 0.40
AIM_MB_PER_PERSONA = 15.0
PERSONAS = 4
STEP_TIMEOUT_S = 180.0  # one protocol step (start + prewarm on a busy machine); a hang guard
FAKE_KEY = "sk-bench-not-a-real-key"  # makes prewarm load what a production job loads; unused
CLK_TCK = os.sysconf("SC_CLK_TCK")
LIVEKIT_WARMUP = ["livekit.agents.ipc._preload", "livekit.agents.ipc._preload_freeze"]
LOCAL_INFERENCE_ENV = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"
# what the stock job process imports for its persona: preloaded too, so (b) is not billed for
# importing the persona code in every process (a stock worker could list it in preload_modules)
STOCK_PERSONA_MODULES = ["agents.persona", "agents.offline", "workers.room.stage"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--turns", type=int, default=40, help="turns of the 4-persona conversation")
    p.add_argument("--voice", choices=["both", "openai", "offline"], default="both")
    p.add_argument("--stock-preload", choices=["both", "default", "off"], default="both")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 turns, openai, preload off")
    # the layouts' worker main processes (this script, re-run): not for users
    p.add_argument("--main", choices=["project", "stock"], help=argparse.SUPPRESS)
    p.add_argument("--personas", type=int, default=PERSONAS, help=argparse.SUPPRESS)
    p.add_argument("--persona", help=argparse.SUPPRESS)
    p.add_argument("--cast", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.turns, args.voice, args.stock_preload = 4, "openai", "off"
    return args


# ---- /proc figures -----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)


def snapshot(mains: list[int]) -> dict[str, Any]:
    """PSS/USS of every process of a layout (the main processes and their descendants), by
    role and in total; CPU so far of the same processes."""
    by_role: dict[str, dict[str, Any]] = {}
    whole = Memory(0.0, 0.0)
    cpu = 0.0
    for main in mains:
        for pid in tree(main):
            try:
                mem = memory_of(pid)
                cpu += cpu_seconds(pid)
            except (OSError, ValueError, IndexError):
                continue  # exited meanwhile: it costs nothing now
            role = role_of(pid, main)
            slot = by_role.setdefault(role, {"count": 0, "mem": Memory(0.0, 0.0)})
            slot["count"] += 1
            slot["mem"] = slot["mem"] + mem
            whole = whole + mem
    return {
        "total": {"processes": sum(s["count"] for s in by_role.values()), **whole.as_dict()},
        "by_role": {r: {"count": s["count"], **s["mem"].as_dict()} for r, s in by_role.items()},
        "cpu_s": round(cpu, 3),
    }


# ---- the worker main processes (this script run with --main) ----------------------------------


def _say(msg: dict[str, Any]) -> None:
    """A main process's protocol line to the bench (its stdout carries nothing else)."""
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def _hear() -> dict[str, Any]:
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("bench.process_model: the bench went away")
    return json.loads(line)


def livekit_preload(server: Any) -> list[str]:
    """The forkserver preload livekit's worker sets for `server` (livekit/agents/worker.py,
    `run()`: registered plugins, then preload_modules, then its own warm-up, last)."""
    from livekit.agents import Plugin

    # `_preload_modules` is livekit's private copy of the option: an AttributeError here
    # means livekit changed how it keeps it, and this bench must follow
    modules = [p.package for p in Plugin.registered_plugins] + list(server._preload_modules)
    return list(dict.fromkeys(modules)) + LIVEKIT_WARMUP


def _forkserver_context(server: Any) -> Any:
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(livekit_preload(server))
    return ctx


def _relay_job(ctx: Any, target: Any, args: tuple[Any, ...]) -> None:
    """Start one job process and pass messages between it and the bench until it is done."""
    mine, theirs = ctx.Pipe()
    proc = ctx.Process(target=target, args=(theirs, *args))
    proc.start()
    theirs.close()
    try:
        while True:
            msg = mine.recv()
            _say({**msg, "job_pid": proc.pid})
            if msg.get("done") or msg.get("error"):
                break
            mine.send(_hear())
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()


def _project_main(args: argparse.Namespace) -> None:
    """The project's worker main: workers.multi's own server (which also sets the forkserver's
    environment), livekit's preload for it, one job process for one room."""
    from config.catalog import load_catalog
    from config.logging import configure_logging
    from config.settings import get_settings
    from workers.multi import build_server

    configure_logging("console", "ERROR", stream=sys.stderr)
    settings = get_settings()
    server = build_server(settings, load_catalog(settings.catalog_path))
    _relay_job(_forkserver_context(server), _project_job, (args.personas, args.turns))


def _stock_prewarm(proc: Any) -> None:
    """A stock one-agent worker's setup_fnc: the VAD (as livekit's examples load it) and,
    without a key, the offline voice the project's job processes load too."""
    from livekit.plugins import silero

    proc.userdata["vad"] = silero.VAD.load()
    if not os.environ.get("OPENAI_API_KEY"):
        from agents.offline import warm_offline_voice

        warm_offline_voice()


async def _stock_entrypoint(ctx: Any) -> None:  # registered, never dispatched here
    raise RuntimeError("bench.process_model: the stock worker is never dispatched a room")


def _stock_main(args: argparse.Namespace) -> None:
    """A stock worker's main: an AgentServer of one agent, with livekit's defaults."""
    from livekit.agents import AgentServer
    from livekit.plugins import openai, silero  # noqa: F401  (registered, hence preloaded)

    server = AgentServer(setup_fnc=_stock_prewarm, preload_modules=STOCK_PERSONA_MODULES)
    server.rtc_session(_stock_entrypoint, agent_name=f"stock-{args.persona}")
    _relay_job(
        _forkserver_context(server),
        _stock_job,
        (args.persona, json.loads(args.cast), args.turns),
    )


# ---- the job processes ----------------------------------------------------------------------


def _guarded(conn: Any, work: Any) -> None:
    import traceback

    try:
        from bench._common import quiet

        quiet()
        work()
    except BaseException:
        conn.send({"error": traceback.format_exc()[-3000:]})
        raise
    finally:
        conn.close()


def _prewarmed(conn: Any, setup: Any) -> dict[str, Any]:
    """Run the layout's setup_fnc as livekit does in a new job process, then wait for go."""
    from types import SimpleNamespace

    from bench._common import quiet

    proc = SimpleNamespace(userdata={})  # what livekit's JobProcess gives setup_fnc to fill
    setup(proc)
    quiet()  # the project's prewarm configures logging: stdout stays the protocol's
    conn.send({"ready": True, "pid": os.getpid()})
    conn.recv()  # the bench measured the idle layout
    return proc.userdata


def _project_job(conn: Any, personas: int, turns: int) -> None:
    def work() -> None:
        import asyncio

        from workers.multi import prewarm

        _prewarmed(conn, prewarm)
        conn.send(asyncio.run(_project_room(conn, personas, turns)))

    _guarded(conn, work)


async def _project_room(conn: Any, personas: int, turns: int) -> dict[str, Any]:
    from bench._common import bench_catalog, bench_scenario, offline_settings
    from workers.capacity.selector import Selector
    from workers.simulate import simulate

    catalog = bench_catalog()
    scenario = bench_scenario(personas, turns)
    lines: list[str] = []
    cpu0 = cpu_seconds(os.getpid())

    def keep(ev: dict[str, Any]) -> None:
        if ev["event"] == "utterance":
            lines.append(ev["text"])
            if ev["turn"] == turns:  # the last line, every session alive: measured now
                conn.send({"last_line": True, "cpu_room_s": cpu_seconds(os.getpid()) - cpu0})
                conn.recv()

    with tempfile.TemporaryDirectory(prefix="bench-pm-") as tmp:
        result = await simulate(
            scenario,
            catalog,
            offline_settings(Path(tmp)),
            selector=Selector(catalog),
            room="bench-process-model",
            listeners=[keep],
        )
    if result.turns != turns:
        raise RuntimeError(f"the room ran {result.turns} turns, not {turns}: {result.reason}")
    return {"done": True, "lines": lines}


def _stock_job(conn: Any, persona_id: str, cast_ids: dict[str, str], turns: int) -> None:
    def work() -> None:
        import asyncio

        _prewarmed(conn, _stock_prewarm)
        asyncio.run(_stock_session(conn, persona_id, cast_ids, turns))

    _guarded(conn, work)


async def _stock_session(conn: Any, persona_id: str, cast_ids: dict[str, str], turns: int) -> None:
    """One persona's AgentSession: `speak`, `hear`, `cpu`, `close` requests from the bench."""
    import asyncio

    from livekit.agents import llm

    from agents.offline import offline_models
    from agents.persona import RecordingFloor, build_agent
    from agents.room_data import RoomData
    from bench._common import bench_catalog, bench_scenario
    from workers.room.floor import append_user_line
    from workers.room.stage import make_session

    cpu0 = cpu_seconds(os.getpid())
    catalog = bench_catalog()
    scenario = bench_scenario(len(cast_ids), turns)
    cast = {role: catalog.persona(pid) for role, pid in cast_ids.items()}
    persona = catalog.persona(persona_id)
    names = {role: p.name for role, p in cast.items()}
    agent = build_agent(
        persona, room_data=RoomData(scenario, catalog), cast=cast, floor=RecordingFloor()
    )
    session = make_session(offline_models(persona, scenario, names))
    await session.start(agent)
    conn.send({"started": True})
    loop = asyncio.get_running_loop()
    while True:
        msg = await loop.run_in_executor(None, conn.recv)
        if msg["op"] == "speak":
            handle = session.generate_reply()
            await handle
            text = " ".join(
                m.text_content or ""
                for m in handle.chat_items
                if isinstance(m, llm.ChatMessage) and m.role == "assistant"
            ).strip()
            conn.send({"text": text})
        elif msg["op"] == "hear":
            await append_user_line(agent, session, msg["line"])  # as the floor does
            conn.send({"ok": True})
        elif msg["op"] == "cpu":
            conn.send({"cpu_room_s": cpu_seconds(os.getpid()) - cpu0})
        elif msg["op"] == "close":
            await session.aclose()
            conn.send({"done": True})
            return


# ---- the bench: starts the main processes and talks to them ----------------------------------


class Main:
    """One worker main process (this script with --main), in its own process group."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        # its logs go to a file: a pipe nobody reads would stall it once full
        self.log = tempfile.NamedTemporaryFile(prefix="main-", suffix=".log", dir=cwd)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.process_model", *argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.job_pid: int | None = None

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(STEP_TIMEOUT_S):
                raise RuntimeError(f"worker main {self.pid}: no answer in {STEP_TIMEOUT_S} s")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            err = Path(self.log.name).read_text(errors="replace")
            raise RuntimeError(f"worker main {self.pid} exited:\n{err[-3000:]}")
        msg = json.loads(line)
        if "error" in msg:
            raise RuntimeError(f"job process of main {self.pid} failed:\n{msg['error']}")
        self.job_pid = msg.get("job_pid", self.job_pid)
        return msg

    def ask(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.send(msg)
        return self.recv()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.communicate(timeout=10)
        self.log.close()


def _env(voice: str, cwd: Path, local_inference: str | None) -> dict[str, str]:
    """A clean environment (no OpenAI/LiveKit variables, no .env in cwd); the key per voice;
    livekit's local-inference variable only where a layout sets it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LIVEKIT_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="ERROR",
        TRANSCRIPTS_DIR=str(cwd / "transcripts"),
        PYTHONUNBUFFERED="1",
    )
    if voice == "openai":
        env["OPENAI_API_KEY"] = FAKE_KEY
    if local_inference is not None:
        env[LOCAL_INFERENCE_ENV] = local_inference
    return env


def run_project(voice: str, personas: int, turns: int) -> dict[str, Any]:
    """Layout (a): idle and last-line snapshots of the whole tree, the job apart."""
    with tempfile.TemporaryDirectory(prefix="bench-pm-a-") as name:
        cwd = Path(name)
        main = Main(
            ["--main", "project", "--personas", str(personas), "--turns", str(turns)],
            _env(voice, cwd, None),
            cwd,
        )
        try:
            main.recv()  # ready: prewarmed
            idle = snapshot([main.pid])
            idle_job = memory_of(_job(main))
            last = main.ask({"go": True})
            room = snapshot([main.pid])
            room_job = memory_of(_job(main))
            done = main.ask({"go": True})
        finally:
            main.stop()
    return {
        "personas": personas,
        "idle": idle,
        "room": room,
        "job_process": {"idle": idle_job.as_dict(), "room": room_job.as_dict()},
        "cpu_room_s": round(last["cpu_room_s"], 3),
        "cpu_total_s": room["cpu_s"],
        "lines": done["lines"],
    }


def _job(main: Main) -> int:
    if main.job_pid is None:
        raise RuntimeError(f"worker main {main.pid} named no job process")
    return main.job_pid


def _cast() -> tuple[dict[str, str], list[str], dict[str, str]]:
    """The cast layout (a) gets (the selector's, from a fresh selector): role -> persona id,
    the speaking order (opener first, then slot order: round robin), and each one's label."""
    from bench._common import bench_catalog, bench_scenario
    from workers.capacity.selector import Selector

    catalog = bench_catalog()
    cast = Selector(catalog).cast(bench_scenario(PERSONAS, 4))
    try:
        ids = {m.slot.role: m.persona.id for m in cast.members}
        order = [m.persona.id for m in cast.members]
        labels = {m.persona.id: f"{m.persona.name} ({m.persona.role})" for m in cast.members}
    finally:
        cast.release()
    return ids, order, labels


def run_stock(voice: str, preload: str, turns: int) -> dict[str, Any]:
    """Layout (b): one worker per persona; this process relays the lines between them."""
    cast_ids, order, labels = _cast()
    local_inference = None if preload == "default" else "0"
    mains: dict[str, Main] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pm-b-") as name:
        cwd = Path(name)
        try:
            for pid in order:
                argv = ["--main", "stock", "--persona", pid, "--cast", json.dumps(cast_ids)]
                argv += ["--turns", str(turns)]
                mains[pid] = Main(argv, _env(voice, cwd, local_inference), cwd)
            for main in mains.values():
                main.recv()  # ready: prewarmed
            idle = snapshot([m.pid for m in mains.values()])
            idle_jobs = [memory_of(_job(m)).as_dict() for m in mains.values()]
            for main in mains.values():
                main.ask({"go": True})  # session started
            lines = _relay(mains, order, labels, turns)
            room = snapshot([m.pid for m in mains.values()])
            room_jobs = [memory_of(_job(m)).as_dict() for m in mains.values()]
            cpu_room = sum(m.ask({"op": "cpu"})["cpu_room_s"] for m in mains.values())
            for main in mains.values():
                main.ask({"op": "close"})
        finally:
            for main in mains.values():
                main.stop()
    return {
        "personas": PERSONAS,
        "local_inference_preload": preload,
        "idle": idle,
        "room": room,
        "job_processes": {"idle": idle_jobs, "room": room_jobs},
        "cpu_room_s": round(cpu_room, 3),
        "cpu_total_s": room["cpu_s"],
        "lines": lines,
    }


def _relay(mains: dict[str, Main], order: list[str], labels: dict[str, str], turns: int) -> list:
    lines: list[str] = []
    for turn in range(turns):
        speaker = order[turn % len(order)]
        text = mains[speaker].ask({"op": "speak"})["text"]
        lines.append(text)
        others = [pid for pid in order if pid != speaker]
        for pid in others:
            mains[pid].send({"op": "hear", "line": f"{labels[speaker]}: {text}"})
        for pid in others:
            mains[pid].recv()
    return lines


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _variant(voice: str, preload: str, turns: int, ones: dict[str, Any]) -> dict[str, Any]:
    a = ones[voice]
    b = run_stock(voice, preload, turns)
    a_room, b_room = a["room"]["total"], b["room"]["total"]
    a_jobs, b_jobs = a["room"]["by_role"]["job"], b["room"]["by_role"]["job"]
    return {
        "voice": voice,
        "stock_local_inference_preload": preload,
        "this_worker": {k: v for k, v in a.items() if k != "lines"},
        "stock": {k: v for k, v in b.items() if k != "lines"},
        "same_conversation": a["lines"] == b["lines"],
        "pss_ratio_whole_machine": _ratio(a_room["pss_mb"], b_room["pss_mb"]),
        "uss_ratio_whole_machine": _ratio(a_room["uss_mb"], b_room["uss_mb"]),
        "pss_ratio_job_processes": _ratio(a_jobs["pss_mb"], b_jobs["pss_mb"]),
        "pss_ratio_idle_whole_machine": _ratio(
            a["idle"]["total"]["pss_mb"], b["idle"]["total"]["pss_mb"]
        ),
        "cpu_room_ratio": _ratio(a["cpu_room_s"], b["cpu_room_s"]),
        "cpu_total_ratio": _ratio(a["cpu_total_s"], b["cpu_total_s"]),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.main == "project":
        _project_main(args)
        return 0
    if args.main == "stock":
        _stock_main(args)
        return 0
    from bench._common import emit, machine, quiet

    quiet()
    started = time.perf_counter()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    voices = ["openai", "offline"] if args.voice == "both" else [args.voice]
    preloads = ["default", "off"] if args.stock_preload == "both" else [args.stock_preload]
    ones: dict[str, Any] = {}
    one_persona: dict[str, Any] = {}
    for voice in voices:
        ones[voice] = run_project(voice, PERSONAS, args.turns)
        one_persona[voice] = run_project(voice, 1, args.turns)
    variants = [_variant(v, p, args.turns, ones) for v in voices for p in preloads]
    per_persona = {
        voice: round(
            (ones[voice]["room"]["total"]["pss_mb"]
             - one_persona[voice]["room"]["total"]["pss_mb"]) / (PERSONAS - 1),
            2,
        )
        for voice in voices
    }  # fmt: skip
    head = variants[0]
    emit(
        {
            "bench": "process_model",
            "machine": machine(),
            "load_avg": {"before": load_before, "after": os.getloadavg()},
            "params": {
                "personas": PERSONAS,
                "turns": args.turns,
                "voice": voices,
                "stock_local_inference_preload": preloads,
                "model": "offline (agents.offline.OfflineLLM, scripted lines incl. tool calls)",
                "memory": "PSS and USS from /proc/<pid>/smaps_rollup, summed over every "
                "process of the layout (worker mains, resource trackers, forkservers, job "
                "processes); `room` at the last line, every session alive",
            },
            "variants": variants,
            "one_persona_room": {
                v: {k: x for k, x in r.items() if k != "lines"} for v, r in one_persona.items()
            },
            "mb_pss_per_extra_persona": per_persona,
            "summary": [
                {
                    "voice": v["voice"],
                    "stock_local_inference_preload": v["stock_local_inference_preload"],
                    "this_worker_pss_mb": v["this_worker"]["room"]["total"]["pss_mb"],
                    "stock_pss_mb": v["stock"]["room"]["total"]["pss_mb"],
                    "pss_ratio_whole_machine": v["pss_ratio_whole_machine"],
                    "uss_ratio_whole_machine": v["uss_ratio_whole_machine"],
                    "pss_ratio_job_processes": v["pss_ratio_job_processes"],
                    "cpu_room_ratio": v["cpu_room_ratio"],
                    "same_conversation": v["same_conversation"],
                }
                for v in variants
            ],
            "aims": {
                "pss_ratio_max": AIM_MEMORY_RATIO,
                "pss_ratio_reached": {
                    f"{v['voice']}/stock_preload_{v['stock_local_inference_preload']}": (
                        v["pss_ratio_whole_machine"] is not None
                        and v["pss_ratio_whole_machine"] <= AIM_MEMORY_RATIO
                    )
                    for v in variants
                },
                "mb_per_extra_persona_max": AIM_MB_PER_PERSONA,
                "mb_per_extra_persona_reached": all(
                    x <= AIM_MB_PER_PERSONA for x in per_persona.values()
                ),
            },
            "pss_ratio_whole_machine": head["pss_ratio_whole_machine"],
            "elapsed_s": round(time.perf_counter() - started, 1),
        }
    )
    return 0


if __name__ == "__main__":
    # Run the imported module's main, so the job targets pickle as bench.process_model.<name>
    # (not __main__) for the forkserver's job processes, as workers.multi does.
    from bench.process_model import main as _main

    raise SystemExit(_main())
