"""What the real worker costs idle, and what a room adds: PSS and USS per process.

Run from the project root: `python -m bench.room_overhead [--quick] [--voice both|openai|offline]
[--personas 1 2 4] [--turns 20] [--settle 3] [--idle-only]`. Prints one JSON object.

1. **The idle worker** (`idle_worker`): `python -m workers.multi start`, the user's command,
   with no LiveKit server: LIVEKIT_URL is a loopback port nothing listens on. The credentials
   preflight (workers/main/livekit_check.py) takes a refused connection for "the server could
   not be asked" and leaves it to livekit's registration retries, so the worker runs as it would
   while its server is away: main process, multiprocessing's resource tracker, livekit's
   forkserver and the idle job processes livekit keeps prewarmed (`num_idle_processes`: the
   worker's `IDLE_PROCESSES`, one by default). Once each of them has prewarmed
   (livekit's "process initialized") and `--settle` seconds have passed, every process of the
   tree is read from /proc/<pid>/smaps_rollup. `openai`: a (fake, never used) OPENAI_API_KEY, so
   prewarm loads what a production job process loads; `offline`: no key, prewarm also loads the
   offline voice (eSpeak NG, pocketsphinx).
2. **A room's job process** (`room_job_process`): livekit runs one job per process, so a room
   costs one job process; R rooms at once cost R of them. The job process is started as the
   worker starts it (bench.process_model's layout (a): workers.multi's server, livekit's
   forkserver preload for it, `workers.multi.prewarm`), then runs a room of P personas on the
   local stage (real AgentSessions, floor, relay and transcript, the offline model; no room
   connections and no audio: bench.live_room measures those). Its PSS and USS idle (after
   prewarm) and at the room's last line; `growth` is what the room added to that process.

Exit status 77: this machine cannot be measured this way (no /proc/<pid>/smaps_rollup).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._memory import Memory, role_of, tree, tree_report
from bench.process_model import FAKE_KEY, ROOT, run_project

# issue 27's aims: a worker with a key <= 300 MB PSS, the keyless offline one <= 400 MB (it
# holds the offline voice's models: silero, pocketsphinx, eSpeak)
AIM_IDLE_WORKER_PSS_MB = {"openai": 300.0, "offline": 400.0}
AIM_ROOM_USS_GROWTH_MB = 40.0  # one 4-persona room's job process above an idle one
EXIT_CANNOT_RUN = 77
READY_TIMEOUT_S = 120.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--voice", choices=["both", "openai", "offline"], default="both")
    p.add_argument("--personas", type=int, nargs="+", default=[1, 2, 4], choices=[1, 2, 3, 4])
    p.add_argument("--turns", type=int, default=20, help="turns of each room")
    p.add_argument(
        "--settle", type=float, default=3.0, help="seconds after the last idle job prewarmed"
    )
    p.add_argument("--idle-only", action="store_true", help="the idle worker only, no room")
    p.add_argument("--quick", action="store_true", help="smoke run: openai, 4 personas, 4 turns")
    args = p.parse_args(argv)
    if args.idle_only:
        args.personas = []
    if args.quick:
        args.voice, args.personas, args.turns, args.settle = "openai", [4], 4, 1.0
    return args


# ---- the idle worker ---------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker_env(voice: str, cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LIVEKIT_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        LIVEKIT_URL=f"ws://127.0.0.1:{closed_port()}",
        LIVEKIT_API_KEY="bench-offline",
        LIVEKIT_API_SECRET=secrets.token_hex(16),  # never sent anywhere: nothing listens
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",  # livekit's "process initialized" lines say when prewarm is done
        STATS_PORT="0",
        WORKER_HTTP_PORT="0",
        TRANSCRIPTS_DIR=str(cwd / "transcripts"),
        PYTHONUNBUFFERED="1",
    )
    if voice == "openai":
        env["OPENAI_API_KEY"] = FAKE_KEY
        # nothing is asked while idle; were it, it would reach nothing (a closed port)
        env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{closed_port()}/v1"
    return env


def _log_count(path: Path, message: str, *, prefix: bool = False) -> int:
    """Log records (livekit's `message` or ours' `event`) equal to, or starting with, it."""
    count = 0
    for line in path.read_bytes().splitlines():
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            text = str(rec.get("message") or rec.get("event") or "")
            if isinstance(rec, dict) and (text.startswith(message) if prefix else text == message):
                count += 1
    return count


def _jobs(main: int) -> list[int]:
    return [pid for pid in tree(main) if role_of(pid, main) == "job"]


def _wait_idle(proc: subprocess.Popen[bytes], log: Path) -> int:
    """Until the worker is ready and every idle job process it started has prewarmed; the
    number of idle job processes."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    steady_since: float | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        jobs = _jobs(proc.pid)
        ready = _log_count(log, "worker_ready") > 0
        prewarmed = _log_count(log, "process initialized")
        if ready and jobs and prewarmed >= len(jobs):
            steady_since = steady_since or time.monotonic()
            if time.monotonic() - steady_since >= 1.0:  # no further process on its way
                return len(jobs)
        else:
            steady_since = None
        time.sleep(0.2)
    raise RuntimeError(f"the worker's job processes did not prewarm in {READY_TIMEOUT_S} s")


def idle_worker(voice: str, settle_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as name:
        cwd = Path(name)
        log = cwd / "worker.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "workers.multi", "start"],
                cwd=cwd,  # no .env here: the developer's settings stay out of the figures
                env=_worker_env(voice, cwd),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            idle_jobs = _wait_idle(proc, log)
            time.sleep(settle_s)
            report = tree_report(proc.pid)
            retrying = _log_count(log, "failed to connect to livekit", prefix=True) > 0
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    pss = report["total"]["pss_mb"]
    return {
        "voice": voice,
        "idle_job_processes": idle_jobs,
        "registration_retrying": retrying,  # it ran with no server, as meant
        **report,
        "aim": {
            "pss_mb_max": AIM_IDLE_WORKER_PSS_MB[voice],
            "reached": pss <= AIM_IDLE_WORKER_PSS_MB[voice],
        },
    }


# ---- a room's job process --------------------------------------------------------------------


def room_job(voice: str, personas: int, turns: int) -> dict[str, Any]:
    run = run_project(voice, personas, turns)
    idle = Memory(**run["job_process"]["idle"])
    room = Memory(**run["job_process"]["room"])
    whole_idle = Memory(run["idle"]["total"]["pss_mb"], run["idle"]["total"]["uss_mb"])
    whole_room = Memory(run["room"]["total"]["pss_mb"], run["room"]["total"]["uss_mb"])
    return {
        "personas": personas,
        "turns": turns,
        "idle": idle.as_dict(),
        "at_last_line": room.as_dict(),
        "growth": (room - idle).as_dict(),
        "whole_tree_growth": (whole_room - whole_idle).as_dict(),
        "cpu_room_s": run["cpu_room_s"],
        "cpu_ms_per_turn": round(1000 * run["cpu_room_s"] / turns, 2),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if not Path(f"/proc/{os.getpid()}/smaps_rollup").exists():
        print("bench.room_overhead: no /proc/<pid>/smaps_rollup here", file=sys.stderr)
        return EXIT_CANNOT_RUN
    from bench._common import emit, machine, quiet

    quiet()
    started = time.perf_counter()
    load_before = os.getloadavg()
    voices = ["openai", "offline"] if args.voice == "both" else [args.voice]
    idle = {voice: idle_worker(voice, args.settle) for voice in voices}
    rooms = {
        voice: {str(p): room_job(voice, p, args.turns) for p in args.personas} for voice in voices
    }
    biggest = str(max(args.personas, default=0))
    growth = {v: rooms[v][biggest]["growth"]["uss_mb"] for v in voices if args.personas}
    emit(
        {
            "bench": "room_overhead",
            "machine": machine(),
            "load_avg": {"before": load_before, "after": os.getloadavg()},
            "params": {
                "voice": voices,
                "personas": args.personas,
                "turns": args.turns,
                "settle_s": args.settle,
                "memory": "PSS and USS from /proc/<pid>/smaps_rollup (bench/_memory.py)",
                "worker": "python -m workers.multi start, no LiveKit server (a closed "
                "loopback port), no .env",
                "room": "bench.process_model layout (a): the worker's forkserver preload and "
                "prewarm, one room on the local stage, offline model",
            },
            "idle_worker": idle,
            "room_job_process": rooms,
            "aims": {
                "idle_worker_pss_mb_max": {v: AIM_IDLE_WORKER_PSS_MB[v] for v in voices},
                "idle_worker_reached": {v: idle[v]["aim"]["reached"] for v in voices},
                f"room_of_{biggest}_uss_growth_mb_max": AIM_ROOM_USS_GROWTH_MB,
                f"room_of_{biggest}_uss_growth_reached": {
                    v: g <= AIM_ROOM_USS_GROWTH_MB for v, g in growth.items()
                },
            },
            "elapsed_s": round(time.perf_counter() - started, 1),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
