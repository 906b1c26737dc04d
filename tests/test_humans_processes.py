"""Across processes, as in production: several worker processes, each with its own store, on
one real Redis race to claim calls for human agents (exactly one winner per call, a human of
capacity 1 on one call at a time); and a job process asking its worker's main process through
the socket path it inherits in the environment."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import sys
from multiprocessing.connection import Connection
from typing import Any

import pytest

from config.settings import PROJECT_ROOT, Settings
from tests.humans_catalog import human, humans_catalog
from workers.capacity.redis_store import RedisStore
from workers.humans.claims import HumanClaims
from workers.humans.service import HUMAN_DESK_ENV
from workers.main.worker_load import Worker

pytestmark = pytest.mark.integration  # several processes (and a real redis-server)

CTX = multiprocessing.get_context("spawn")  # each child starts clean
PROCESSES = 4
ROUNDS = 40
JOIN_S = 60.0  # a hang guard, not a performance check
HUMANS = [human(f"h{i}", skills=["support"]) for i in range(PROCESSES)]


def _racer(url: str, index: int, go: Any, out: Connection) -> None:
    """One worker: each round, claims that round's call for its own human, then a call of its
    own for h0 (everyone's capacity-1 human); reports what it won; releases between rounds."""
    catalog = humans_catalog(HUMANS)
    claims = HumanClaims(RedisStore(url))
    mine, shared = catalog.human_by_id[f"h{index}"], catalog.human_by_id["h0"]
    won: list[tuple[int, bool, bool]] = []
    for n in range(ROUNDS):
        go.wait(JOIN_S)
        call = claims.claim(f"job-{index}", f"call-{n}", mine)
        go.wait(JOIN_S)  # every claim of the round's call made before anything is released
        if call is not None:
            call.release()
        go.wait(JOIN_S)
        seat = claims.claim(f"job-{index}", f"call-{n}-{index}", shared)
        go.wait(JOIN_S)
        if seat is not None:
            seat.release()
        won.append((n, call is not None, seat is not None))
    out.send(won)
    claims.store.close()


def test_worker_processes_on_one_redis_get_exactly_one_winner_per_call(redis_url):
    settle = RedisStore(redis_url)  # a Redis in use, not one that just came up empty
    settle.needs_refresh()
    settle.close()
    go = CTX.Barrier(PROCESSES)
    pipes = [CTX.Pipe(duplex=False) for _ in range(PROCESSES)]
    procs = [
        CTX.Process(target=_racer, args=(redis_url, i, go, pipes[i][1]), daemon=True)
        for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    results = []
    for (reader, _), p in zip(pipes, procs, strict=True):
        assert reader.poll(JOIN_S), "a racing worker hung"
        results.append(reader.recv())
        p.join(JOIN_S)
        assert p.exitcode == 0
    for n in range(ROUNDS):
        calls = sum(results[i][n][1] for i in range(PROCESSES))
        seats = sum(results[i][n][2] for i in range(PROCESSES))
        assert (calls, seats) == (1, 1), f"round {n}: {calls} winners of the call, {seats} of h0"


JOB = """
import asyncio, json, sys
from tests.humans_catalog import human, humans_catalog
from workers.humans.client import desk_for_job

async def main():
    catalog = humans_catalog([human(h["id"], skills=h["skills"]) for h in json.loads(sys.argv[1])])
    desk = desk_for_job("AJ_7", catalog)
    free = await desk.ringable("brightcart", assigned=(), skill="support")
    won = await desk.claim("call-7", free[0])
    print(json.dumps({"desk": type(desk).__name__, "free": [h.id for h in free], "won": won}))

asyncio.run(main())
"""


async def test_a_job_process_claims_through_its_worker_main_process(tmp_path, monkeypatch):
    monkeypatch.setenv(HUMAN_DESK_ENV, "")  # put back as it was after the test
    catalog = humans_catalog(HUMANS[:2])
    settings = Settings(_env_file=None, stats_port=0, humans_state_path=tmp_path / "h.json")
    worker = Worker(settings, catalog, cpu_load=lambda: 0.0)
    worker.desk_service.open()  # as build_server does: job processes inherit the path
    await worker.desk_service.listen()
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            JOB,
            json.dumps(HUMANS[:2]),
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(child.communicate(), JOIN_S)
        assert child.returncode == 0
        answer = json.loads(out.decode().strip().splitlines()[-1])
        assert answer == {"desk": "DeskClient", "free": ["h0", "h1"], "won": True}
        # the seat is the main process's, held under the job until the job ends
        assert worker.leasebook.held()["AJ_7"]["personas"] == ["human:h0"]
        assert worker.desk.claims.busy_seats(["h0"]) == {"h0": 1}
        worker.leasebook.release("AJ_7")  # the job's end
        assert worker.desk.claims.busy_seats(["h0"]) == {"h0": 0}
    finally:
        await worker.aclose()
