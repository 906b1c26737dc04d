"""Redis outages against the worker's admission (issue 21): for each outage length, whether a
room offered at the start of the outage is cast or lost, and whether any persona is ever over
its limit.

Run from the project root: `python -m bench.capacity_outage [--quick]`. Prints one JSON object.
Two workers (`workers.main.worker_load.Worker`, default settings, `CAPACITY_URL` on a
`redis-server` this script starts on a free loopback port) with their lease refreshers running,
as `start` runs them. Worker A holds all three of tim's rooms. At t=0 Redis goes away, either
`restart` (killed, then started again empty after the outage: no persistence) or `pause`
(SIGSTOP, then SIGCONT: slow, nothing lost); at once worker B is offered a dispatch_checkin
room through the same `RequestHandler.handle` LiveKit's offers go through. A room is **lost**
when B refuses it or answers after livekit-server's 3 s (the server asks workers through
psrpc with its default 3 s request timeout and drops the room when it expires). A watcher
reads every persona's count from Redis every 20 ms: an **over-limit moment** is a reading with
a persona above its `max_concurrent`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from livekit.agents import JobRequest
from livekit.protocol import agent as agent_pb
from livekit.protocol import models

from bench._common import emit, machine, quiet
from config.catalog import load_catalog
from config.settings import PROJECT_ROOT, Settings
from workers.capacity.redis_store import RedisStore
from workers.capacity.store import CapacityStoreUnavailable, LeaseRefresher
from workers.main.worker_load import Worker

LIVEKIT_OFFER_S = 3.0  # livekit-server waits this long for a worker's answer to an offer
LENGTHS_S = (0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3)
QUICK_LENGTHS_S = (0.5, 3)
OFFER = json.dumps({"scenario": "dispatch_checkin"})
START_TIMEOUT_S = 10.0


class Redis:
    """A redis-server on a free loopback port, no persistence; stop/start keep the port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit(
                "bench.capacity_outage needs redis-server (apt-get install redis-server)"
            )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="bench-outage-")
        self.argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self.argv += ["--appendonly", "no", "--dir", self.dir]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Answer:
    """What the worker told LiveKit about one offer, and when."""

    def __init__(self) -> None:
        self.outcome = ""
        self.persona = ""
        self.at = 0.0

    async def accept(self, args: Any) -> None:
        self.outcome, self.at = "accepted", time.monotonic()
        self.persona = json.loads(args.metadata)["persona"]

    async def reject(self, terminate: bool) -> None:
        self.outcome, self.at = "refused", time.monotonic()


def offer(answer: Answer, job_id: str) -> JobRequest:
    job = agent_pb.Job(
        id=job_id,
        type=agent_pb.JobType.JT_ROOM,
        room=models.Room(sid=f"RM_{job_id}", name=f"room-{job_id}"),
        agent_name="multi-persona",
        metadata=OFFER,
    )
    return JobRequest(job=job, on_reject=answer.reject, on_accept=answer.accept)


class Watcher:
    """Reads every persona's count from Redis every 20 ms; counts readings over a limit."""

    def __init__(self, url: str, caps: dict[str, int]) -> None:
        self.store = RedisStore(url, prefix="{capacity}")
        self.caps = caps
        self.readings = 0
        self.over: list[dict[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                counts = self.store.snapshot(list(self.caps), ()).counts
            except CapacityStoreUnavailable:
                continue
            self.readings += 1
            over = {p: n for p, n in counts.items() if n > self.caps[p]}
            if over:
                self.over.append(over)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.store.close()


async def trial(kind: str, length_s: float, folder: Path) -> dict[str, Any]:
    catalog = load_catalog(PROJECT_ROOT / "config" / "catalog.json")
    caps = {p.id: p.max_concurrent for p in catalog.personas if p.active}
    redis = Redis()
    redis.start()
    settings = Settings(_env_file=None, capacity_url=redis.url, transcripts_dir=folder)
    a = Worker(settings, catalog, cpu_load=lambda: 0.0)
    b = Worker(settings, catalog, cpu_load=lambda: 0.0)
    refreshers = [
        asyncio.create_task(LeaseRefresher(w.selector.store, settings.capacity_refresh_s).run())
        for w in (a, b)
    ]
    try:
        for i in range(3):  # tim's three rooms, on worker A (a new Redis settles first)
            for attempt in range(20):
                held = Answer()
                await a.admission.handle(offer(held, f"A{i}-{attempt}"))
                if held.outcome == "accepted":
                    break
            assert held.persona == "tim", held.outcome
        with Watcher(redis.url, caps) as watcher:
            if kind == "restart":
                redis.stop()
            else:
                assert redis.proc is not None
                redis.proc.send_signal(signal.SIGSTOP)
            began = time.monotonic()
            answer = Answer()
            task = asyncio.create_task(b.admission.handle(offer(answer, "B")))
            await asyncio.sleep(length_s)  # the outage itself
            if kind == "restart":
                redis.start()
            else:
                assert redis.proc is not None
                redis.proc.send_signal(signal.SIGCONT)
            await task
            await asyncio.sleep(1.0)  # a second more of readings after the answer
        answered_s = answer.at - began
        lost = answer.outcome != "accepted" or answered_s >= LIVEKIT_OFFER_S
        return {
            "kind": kind,
            "outage_s": length_s,
            "answer": answer.outcome,
            "cast": answer.persona,
            "answered_after_s": round(answered_s, 2),
            "lost": lost,
            "over_limit_moments": len(watcher.over),
            "readings": watcher.readings,
        }
    finally:
        for task in refreshers:
            task.cancel()
        await asyncio.gather(*refreshers, return_exceptions=True)
        for w in (a, b):
            w.leasebook.release_all()
            w.selector.close()
        redis.close()


async def run(lengths: tuple[float, ...]) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-outage-transcripts-"))
    try:
        trials = [await trial(k, n, folder) for k in ("restart", "pause") for n in lengths]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    longest = {
        kind: max((t["outage_s"] for t in trials if t["kind"] == kind and not t["lost"]), default=0)
        for kind in ("restart", "pause")
    }
    return {
        "trials": trials,
        "longest_outage_losing_nothing_s": longest,
        "over_limit_moments": sum(t["over_limit_moments"] for t in trials),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: two outage lengths")
    args = p.parse_args(argv)
    quiet()
    lengths = QUICK_LENGTHS_S if args.quick else LENGTHS_S
    result = asyncio.run(run(lengths))
    emit(
        {
            "bench": "capacity_outage",
            "machine": machine(),
            "params": {"outage_lengths_s": lengths},
            "load": os.getloadavg(),
            **result,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
