"""Phone calls answered by one worker: INVITE -> 200 OK and 200 OK -> the first persona audio at
the phone, and how many calls one worker holds at once before a call's first audio is late.

Run from the project root: `python -m bench.phone_calls [--quick] [--calls 10] [--rates 0.2 0.5]
[--max-calls 12] [--phase-s 90] [--late-s 2.0] [--capacity 100]`. Prints one JSON object.
Not inside the live suite's private network namespace (LIVE_NETNS != "1") it re-runs itself
there through `tests/live/livenet.sh run` (root, `make livekit` and `make sip` needed).

It starts the telephony stack as the live suite does (`tests/live/livenet.sh telephony`: Redis,
a Redis-backed livekit-server, livekit-sip), syncs the shipped catalog's telephony with
`python -m workers.telephony sync` under an agent name of its own (every persona's capacity
raised to `--capacity`, so the machine is measured, not the catalog's policy), and starts one
`python -m workers.multi start` worker (offline voice, LOAD_COUNTS_CPU=false). SIPp is the
phone, calling the shipped inbound number (+15550100000, the BrightCart support line); every
time is read off the namespace's loopback (`bench/_sip_phone.py`: the INVITE the phone sends,
the 200 OK it gets, the first non-silent RTP packet of that call's audio).

1. Latency: `--calls` calls, one at a time, each hung up (its room deleted) once its first
   audio was heard, then 2 s for the worker to warm a job process again.
2. Capacity, per rate in `--rates` (calls per second): SIPp places up to `--max-calls` calls at
   that fixed rate, each staying on the line; placing stops at the first call whose first audio
   comes more than `--late-s` after its 200 OK (or not within `--late-s` + 30 s), or after
   `--phase-s`. `held` = calls answered with first audio in time before the first late one.
Every figure comes with /proc/loadavg read when it was taken (other work shares the machine).
Everything it started is stopped at the end, on every path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._livenet import run_in_livenet

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    run_in_livenet("bench.phone_calls")  # the real run happens inside the private namespace

from livekit import api  # noqa: E402

from bench._common import machine  # noqa: E402
from bench._sip_phone import Call, Stack, WireTap, place_calls  # noqa: E402

SUPPORT_LINE = "+15550100000"  # config/catalog.json telephony.inbound brightcart-support
READY_S = 120.0
HEARD_S = 30.0  # a call with no first audio this long after its 200 OK is given up
KEYS = {"LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": "secret"}


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (the whole machine: other work shares it)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def catalog(tmp: Path, capacity: int) -> Path:
    """The shipped catalog, or a copy with every persona's capacity raised to `capacity` (a
    policy figure: the shipped one lets 7 calls reach the support line's personas at once)."""
    shipped = ROOT / "config" / "catalog.json"
    if capacity <= 0:
        return shipped
    data = json.loads(shipped.read_text(encoding="utf-8"))
    for persona in data["personas"]:
        persona["max_concurrent"] = capacity
    path = tmp / "catalog.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def worker_env(tmp: Path, url: str, agent: str, catalog_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(
        KEYS,
        CATALOG_PATH=str(catalog_path),
        LIVEKIT_URL=url,
        AGENT_NAME=agent,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        WORKER_HTTP_PORT=str(free_port()),
        PROMETHEUS_PORT=str(free_port()),
        STATS_PORT=str(free_port()),
        TRANSCRIPTS_DIR=str(tmp / "transcripts"),
        LOAD_COUNTS_CPU="false",
        PYTHONUNBUFFERED="1",
    )
    return env


class Worker:
    """`python -m workers.multi start` on the telephony server, its log in a file."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.log_path = tmp / "worker.log"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workers.multi", "start"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def count(self, needle: str) -> int:
        return self.log_path.read_bytes().count(needle.encode())

    async def ready(self) -> None:
        """Registered, and livekit's idle job processes prewarmed (a worker in service)."""
        async with asyncio.timeout(READY_S):
            while self.count("registered worker") < 1 or self.count("process initialized") < 2:
                if self.proc.poll() is not None:
                    raise SystemExit(f"worker exited:\n{self.log_path.read_text()[-3000:]}")
                await asyncio.sleep(0.2)

    def full_marks(self) -> int:
        return self.count("worker is at full capacity")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_s": percentile(values, 50),
        "p95_s": percentile(values, 95),
        "max_s": round(max(values), 3) if values else None,
    }


def row(call: Call, **extra: Any) -> dict[str, Any]:
    def gap(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 3)

    return {
        "caller": call.caller,
        "invite_to_ok_s": gap(call.invite, call.ok),
        "ok_to_first_audio_s": gap(call.ok, call.first_speech),
        "ok_to_first_rtp_s": gap(call.ok, call.first_rtp),
        **extra,
    }


def worker_side(row: dict[str, Any], call: Call, transcripts: Path) -> None:
    """Where 200 OK -> first audio goes, from the call's transcript (same machine clock): the
    worker seeing the call active (`call_answered`), then the greeting's start to the phone."""
    paths = sorted(transcripts.glob(f"*{call.caller.lstrip('+')}_*.jsonl"))
    events = [json.loads(line) for path in paths for line in path.read_text().splitlines()]
    answered = [e["at"] for e in events if e["event"] == "call_answered"]
    greeting = [e["started"] for e in events if e["event"] == "utterance"]
    if call.ok is None or not answered:
        return
    row["ok_to_worker_sees_active_s"] = round(answered[0] - call.ok, 3)
    if greeting and call.first_speech is not None:
        row["greeting_start_to_first_audio_s"] = round(call.first_speech - greeting[0], 3)


async def delete_rooms(lk: api.LiveKitAPI) -> None:
    """Every room on the server (ours only): livekit-sip hangs each call up (BYE)."""
    for room in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms:
        with contextlib.suppress(api.TwirpError):
            await lk.room.delete_room(api.DeleteRoomRequest(room=room.name))


async def until(done: Callable[[], bool], within_s: float, step_s: float = 0.05) -> bool:
    """Whether `done()` held within `within_s` (polled: the tap fills from its own thread)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if done():
            return True
        await asyncio.sleep(step_s)
    return done()


async def wait_exit(proc: subprocess.Popen[bytes], within_s: float) -> None:
    if not await until(lambda: proc.poll() is not None, within_s):
        proc.kill()
        proc.wait(timeout=5)


def by_caller(tap: WireTap, caller: str) -> Call:
    return next(c for c in tap.calls.values() if c.caller == caller)


async def call_of(tap: WireTap, caller: str, within_s: float) -> Call:
    if not await until(lambda: any(c.caller == caller for c in tap.calls.values()), within_s):
        raise SystemExit(f"no INVITE from {caller} seen on the wire within {within_s} s")
    return by_caller(tap, caller)


async def one_call(
    i: int, tmp: Path, stack: Stack, tap: WireTap, lk: api.LiveKitAPI
) -> dict[str, Any]:
    """One call, hung up (its room deleted) once its first audio was heard (bounded)."""
    caller = f"+15552{i:06d}"
    at_load = load1()
    sipp = place_calls(
        tmp, stack, SUPPORT_LINE, [caller], hold_ms=60_000, every_ms=1000,
        port=5100 + 2 * (i % 100), local_ip=stack.sip_host,
    )  # fmt: skip
    try:
        call = await call_of(tap, caller, 10)
        await until(lambda: call.first_speech is not None or sipp.poll() is not None, HEARD_S + 30)
        await delete_rooms(lk)
        await wait_exit(sipp, 15)
        return row(call, load1=at_load)
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait(timeout=5)


async def latency(
    args: argparse.Namespace, tmp: Path, stack: Stack, tap: WireTap, lk: api.LiveKitAPI
) -> dict[str, Any]:
    rows = []
    for i in range(args.calls):
        rows.append(await one_call(i, tmp, stack, tap, lk))
        await asyncio.sleep(2.0)  # livekit's pool warms a job process for the next call
    ok = [r["invite_to_ok_s"] for r in rows if r["invite_to_ok_s"] is not None]
    heard = [r["ok_to_first_audio_s"] for r in rows if r["ok_to_first_audio_s"] is not None]
    return {
        "invite_to_ok": summary(ok),
        "ok_to_first_audio": summary(heard),
        "answered": len(ok),
        "heard": len(heard),
        "calls": rows,
    }


async def capacity(
    phase: int,
    rate: float,
    args: argparse.Namespace,
    tmp: Path,
    stack: Stack,
    tap: WireTap,
    lk: api.LiveKitAPI,
    worker: Worker,
) -> dict[str, Any]:
    callers = [f"+1555{phase + 3}{i:06d}" for i in range(args.max_calls)]  # unique per phase
    every_ms = round(1000 / rate)
    full_before = worker.full_marks()
    started, load_start = time.monotonic(), loadavg()
    sipp = place_calls(
        tmp, stack, SUPPORT_LINE, callers, hold_ms=int(args.phase_s * 1000) + 60_000,
        every_ms=every_ms, port=5400 + 2 * phase, local_ip=stack.sip_host,
    )  # fmt: skip
    late: dict[str, Any] | None = None
    loads: dict[str, float] = {}
    try:
        deadline = started + args.phase_s
        while time.monotonic() < deadline and sipp.poll() is None and late is None:
            now = time.time()  # the tap's times are the wall clock
            placed = [c for c in tap.calls.values() if c.caller in callers]
            for c in placed:
                loads.setdefault(c.caller, load1())
            for c in sorted(placed, key=lambda c: c.invite):
                if c.ok is None and now - c.invite > args.late_s + HEARD_S:
                    late = {"caller": c.caller, "why": "not answered"}
                elif c.ok is not None and c.first_speech is None and now - c.ok > args.late_s:
                    late = {"caller": c.caller, "why": f"no audio {args.late_s} s after 200 OK"}
                elif c.first_speech is not None and c.ok is not None:
                    if c.first_speech - c.ok > args.late_s:
                        late = {"caller": c.caller, "why": "first audio late"}
                if late:
                    break
            if len(placed) == len(callers) and all(c.first_speech for c in placed):
                break
            await asyncio.sleep(0.05)
        if late is not None:  # the late call's figures, once it has them (bounded)
            slow = by_caller(tap, late["caller"])
            await until(lambda: slow.first_speech is not None, HEARD_S)
        load_end = loadavg()
        ours = (c for c in tap.calls.values() if c.caller in callers)
        placed = sorted(ours, key=lambda c: c.invite)
    finally:
        if sipp.poll() is None:
            sipp.send_signal(signal.SIGINT)  # no more calls; those up are hung up below
        await delete_rooms(lk)
        await wait_exit(sipp, 20)
    rows = []
    for c in placed:
        up = sum(1 for o in placed if o.ok is not None and o.ok < c.invite)
        rows.append(row(c, up_at_invite=up, load1=loads.get(c.caller)))
        if c.ok is None:
            rows[-1]["note"] = "still ringing when the phase stopped"
    held = 0
    for r in rows:
        audio = r["ok_to_first_audio_s"]
        if audio is None or audio > args.late_s:
            break
        held += 1
    return {
        "rate_per_s": rate,
        "every_ms": every_ms,
        "placed": len(rows),
        "held": held,
        "stopped_by": late or ("every call in time" if held == len(callers) else "phase time"),
        "worker_marked_full": worker.full_marks() - full_before,
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "calls": rows,
    }


async def sync(url: str, agent: str, catalog_path: Path) -> dict[str, Any]:
    env = {**os.environ, **KEYS, "LIVEKIT_URL": url, "AGENT_NAME": agent}
    env["CATALOG_PATH"] = str(catalog_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.telephony", "sync", "--json", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"workers.telephony sync failed:\n{err.decode()[-2000:]}")
    return dict(json.loads(out))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    agent = f"phonebench-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="phone-calls-") as tmp_name:
        tmp = Path(tmp_name)
        stack = Stack.start(tmp / "telephony")
        worker: Worker | None = None
        try:
            catalog_path = catalog(tmp, args.capacity)
            synced = await sync(stack.url, agent, catalog_path)
            worker = Worker(tmp, worker_env(tmp, stack.url, agent, catalog_path))
            await worker.ready()
            http = stack.url.replace("ws://", "http://")
            key, secret = KEYS["LIVEKIT_API_KEY"], KEYS["LIVEKIT_API_SECRET"]
            async with api.LiveKitAPI(http, key, secret) as lk:
                with WireTap(stack.sip_port) as tap:
                    load_start, _ = loadavg(), tap.dropped()  # counters from here
                    lat = await latency(args, tmp, stack, tap, lk)
                    lat["loadavg_start"], lat["loadavg_end"] = load_start, loadavg()
                    lat["packets_dropped"] = tap.dropped()
                    caps = []
                    for phase, rate in enumerate(args.rates):
                        await asyncio.sleep(3.0)  # the last phase's job processes end
                        caps.append(await capacity(phase, rate, args, tmp, stack, tap, lk, worker))
                    for r in [*lat["calls"], *(x for c in caps for x in c["calls"])]:
                        worker_side(r, by_caller(tap, r["caller"]), tmp / "transcripts")
                    for part in ("ok_to_worker_sees_active_s", "greeting_start_to_first_audio_s"):
                        values = [r[part] for r in lat["calls"] if part in r]
                        lat[part.removesuffix("_s")] = summary(values)
        finally:
            if worker is not None:
                worker.stop()
            stack.stop()
            if args.keep_logs is not None:  # the worker's, livekit-sip's and SIPp's logs
                shutil.copytree(tmp, args.keep_logs, dirs_exist_ok=True)
    return {
        "bench": "phone_calls",
        "machine": machine(),
        "params": {
            "calls": args.calls,
            "rates": args.rates,
            "max_calls": args.max_calls,
            "phase_s": args.phase_s,
            "late_s": args.late_s,
            "number": SUPPORT_LINE,
            "persona_capacity": args.capacity or "shipped",
            "synced": [f"{c['action']} {c['kind']} {c['name']}" for c in synced["changes"]],
        },
        "latency": lat,
        "aim": {  # for each of the two: p50 <= 1.0 s, p95 <= 1.5 s
            name: {
                "p50_met": (lat[name]["p50_s"] or 99) <= 1.0,
                "p95_met": (lat[name]["p95_s"] or 99) <= 1.5,
            }
            for name in ("invite_to_ok", "ok_to_first_audio")
        },
        "capacity": caps,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--rates", type=float, nargs="+", default=[0.2, 0.5])
    p.add_argument("--max-calls", type=int, default=12)
    p.add_argument("--phase-s", type=float, default=90.0)
    p.add_argument("--late-s", type=float, default=2.0)
    p.add_argument(
        "--capacity", type=int, default=100,
        help="every persona's max_concurrent in the worker's catalog (0: the shipped catalog)",
    )  # fmt: skip
    p.add_argument("--keep-logs", type=Path, help="copy every log of the run into this directory")
    p.add_argument("--quick", action="store_true", help="2 calls, then 2 calls at 0.5 per second")
    args = p.parse_args()
    if args.quick:
        args.calls, args.rates, args.max_calls, args.phase_s = 2, [0.5], 2, 30.0
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
