"""An idle-connection flood on one of the worker's HTTP ports, on a real livekit-server: what it
costs the worker in file descriptors and log, and whether the worker still takes rooms and
answers its health checks.

Run from the project root: `python -m bench.port_flood [--quick] [--ports worker_http
prometheus stats] [--connections 1100] [--hold-s 12] [--fd-limit 1024 1024]`. Prints one JSON
object. Not inside the live suite's private network namespace (LIVE_NETNS != "1") it re-runs
itself there through `tests/live/livenet.sh run` (root and `make livekit` needed).

For each port: one `python -m workers.multi start` worker (offline voice), started with the
file-descriptor limit `--fd-limit SOFT HARD` (the issue's machine: 1024 1024, so raising the
soft limit cannot help and only the worker's own bounds protect it). The script opens
`--connections` TCP connections to 127.0.0.1:PORT that send nothing and holds them
`--hold-s` seconds; while they are held it dispatches one room (accepted: the worker logs
`job_accepted` within 30 s) and asks livekit's health check (`/` on WORKER_HTTP_PORT), `/healthz` on
STATS_PORT and `/metrics` on PROMETHEUS_PORT, each with a 5 s limit. The worker's main process
is sampled every 0.1 s: open descriptors (`/proc/<pid>/fd`); its log's size is read at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench._livenet import run_in_livenet

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    run_in_livenet("bench.port_flood")  # the real run happens inside the private namespace

import aiohttp  # noqa: E402
from livekit import api  # noqa: E402

from bench._common import machine  # noqa: E402

HOST = "127.0.0.1"
PORTS = ("worker_http", "prometheus", "stats")
CHECK_TIMEOUT_S = 5.0
READY_S = 60.0
ACCEPT_S = 30.0  # a room offered under the flood is accepted within this
SCENARIO = json.dumps({"scenario": "dispatch_checkin"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Worker:
    def __init__(self, tmp: Path, fd_limit: tuple[int, int]) -> None:
        self.ports = {name: free_port() for name in PORTS}
        self.agent = f"flood-{secrets.token_hex(3)}"
        self.log_path = tmp / f"{self.agent}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env.update(
            AGENT_NAME=self.agent,
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
            WORKER_HTTP_PORT=str(self.ports["worker_http"]),
            PROMETHEUS_PORT=str(self.ports["prometheus"]),
            STATS_PORT=str(self.ports["stats"]),
            TRANSCRIPTS_DIR=str(tmp / "transcripts"),
            LOAD_COUNTS_CPU="false",
            PYTHONUNBUFFERED="1",
        )

        def limits() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, fd_limit)

        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workers.multi", "start"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=limits,
            )

    def logged(self, event: str) -> bool:
        needle = f'"{event}"'.encode()
        return needle in self.log_path.read_bytes()

    async def wait_logged(self, event: str, within_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                while not self.logged(event):
                    if self.proc.poll() is not None:
                        return False
                    await asyncio.sleep(0.1)
                return True
        return False

    def fds(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return -1

    def fd_soft_limit(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
        return -1

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


async def check(url: str) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as resp:
            await resp.read()
            status: int | str = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        status = type(e).__name__
    return {"status": status, "s": round(time.perf_counter() - started, 3)}


def top_lines(log: bytes, n: int = 3) -> dict[str, int]:
    """The most frequent log lines during the flood, by their event (or first 80 bytes)."""
    counts: Counter[str] = Counter()
    for line in log.splitlines():
        try:
            record = json.loads(line)
            key = str(record.get("event") or record.get("message"))[:80]
        except ValueError:
            key = line[:80].decode(errors="replace")
        counts[key] += 1
    return dict(counts.most_common(n))


async def open_flood(port: int, n: int) -> tuple[list[socket.socket], int]:
    """`n` connections that never send; those the worker dropped while opening still count."""
    held: list[socket.socket] = []
    failed = 0
    loop = asyncio.get_running_loop()
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(s, (HOST, port)), 2.0)
            held.append(s)
        except (OSError, TimeoutError):
            failed += 1
            s.close()
    return held, failed


async def flood_one(target: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    worker = Worker(tmp, (args.fd_limit[0], args.fd_limit[1]))
    try:
        if not await worker.wait_logged("stats_server_started", READY_S):
            raise SystemExit(f"worker did not start:\n{worker.log_path.read_text()[-3000:]}")
        await worker.wait_logged("registered worker", READY_S)
        log_before = worker.log_path.stat().st_size
        fds_before = worker.fds()
        peak = fds_before
        stop = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, worker.fds())
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        held, failed = await open_flood(worker.ports[target], args.connections)
        opened_s = time.perf_counter() - started
        room = f"flood-{secrets.token_hex(3)}"
        lk = api.LiveKitAPI(
            os.environ["LIVEKIT_URL"].replace("ws://", "http://"),
            os.environ["LIVEKIT_API_KEY"],
            os.environ["LIVEKIT_API_SECRET"],
        )
        try:
            await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(
                    agent_name=worker.agent, room=room, metadata=SCENARIO
                )
            )
            checks = {
                "livekit_health": await check(f"http://{HOST}:{worker.ports['worker_http']}/"),
                "stats_healthz": await check(f"http://{HOST}:{worker.ports['stats']}/healthz"),
                "metrics": await check(f"http://{HOST}:{worker.ports['prometheus']}/metrics"),
            }
            accepted = await worker.wait_logged("job_accepted", ACCEPT_S)
            rest = args.hold_s - (time.perf_counter() - started - opened_s)
            if rest > 0:
                await asyncio.sleep(rest)  # the flood stays open this long (what is measured)
            with contextlib.suppress(Exception):
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        finally:
            await lk.aclose()
        stop.set()
        await sampler
        for s in held:
            s.close()
        log_bytes = worker.log_path.stat().st_size - log_before
        flood_log = worker.log_path.read_bytes()[log_before:]
        return {
            "port": target,
            "connections": args.connections,
            "connect_failed": failed,
            "open_s": round(opened_s, 2),
            "fd_soft_limit_at_start": worker.fd_soft_limit(),
            "fds_before": fds_before,
            "fds_peak": peak,
            "room_accepted": accepted,
            **checks,
            "log_bytes_during_flood": log_bytes,
            "log_lines_during_flood": flood_log.count(b"\n"),
            "log_top_lines": top_lines(flood_log),
        }
    finally:
        worker.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this side holds the flood
    results = []
    with tempfile.TemporaryDirectory(prefix="port-flood-") as tmp:
        for target in args.ports:
            results.append(await flood_one(target, args, Path(tmp)))
    return {
        "bench": "port_flood",
        "machine": machine(),
        "params": {
            "connections": args.connections,
            "hold_s": args.hold_s,
            "fd_limit": args.fd_limit,
            "ports": args.ports,
        },
        "floods": results,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ports", nargs="+", choices=PORTS, default=list(PORTS))
    p.add_argument("--connections", type=int, default=1100)
    p.add_argument("--hold-s", type=float, default=12.0)
    p.add_argument("--fd-limit", type=int, nargs=2, default=[1024, 1024])
    p.add_argument("--quick", action="store_true", help="200 connections, 3 s, one port")
    args = p.parse_args()
    if args.quick:
        args.connections, args.hold_s, args.ports = 200, 3.0, ["worker_http"]
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
