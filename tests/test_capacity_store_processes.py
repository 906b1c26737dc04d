"""Several worker processes, each with its own Selector, on one real Redis (issue 16): no
persona is ever over its max_concurrent (checked while they run, from Redis and from what each
process held when), no cast is ever partial, round robin stays one rotation for everyone, and
a process killed with SIGKILL loses its leases by expiry."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import pytest

from config.catalog import Catalog
from tests.test_capacity_store import wait_for
from tests.test_selector import campaign, make_catalog, persona, scenario, trio
from workers.capacity.redis_store import RedisStore
from workers.capacity.selector import Cast, NoCapacity, Selector
from workers.capacity.store import LeaseRefresher

pytestmark = pytest.mark.integration  # a real redis-server and several processes

# spawn: a child starts clean (no copy of the test process's threads, locks or connections)
CTX = multiprocessing.get_context("spawn")
PROCESSES = 4
ROUNDS = 150
JOIN_S = 60.0  # a hang guard, not a performance check


def hammer_catalog() -> Catalog:
    """Tight capacity: 3 rooms of dispatchers and 4 of drivers for 4 processes holding up to
    3 casts each, over two campaigns with different strategies sharing every persona."""
    personas = [persona("d1", "dispatcher", cap=1), persona("d2", "dispatcher", cap=2)]
    personas += [persona("r1", cap=1), persona("r2", cap=1), persona("r3", cap=2)]
    every = [(p["id"], "primary" if p["id"] in ("d1", "r1") else "backup") for p in personas]
    return make_catalog(
        personas,
        [campaign("ll", every, "least_loaded"), campaign("rr", every[::-1], "round_robin")],
    )


SCENARIOS = {cid: scenario(cid, {"role": "dispatcher"}, {"role": "driver"}) for cid in ("ll", "rr")}


def _hammer(url: str, prefix: str, seed: int, rounds: int, go: Any, out: Connection) -> None:
    """One worker: casts (holding up to 3 at once) and releases at random; reports when it
    held each persona (from after the claim returned until before its release began)."""
    rng = random.Random(seed)
    sel = Selector(hammer_catalog(), random.Random(seed), store=RedisStore(url, prefix=prefix))
    held: list[tuple[Cast, float]] = []
    spans: list[tuple[str, float, float]] = []
    tally: Counter[str] = Counter()
    sel.sync_counts()  # connected
    out.send("ready")
    go.wait()

    def release(cast: Cast, since: float) -> None:
        until = time.monotonic()
        cast.release()
        spans.extend((m.persona.id, since, until) for m in cast.members)

    for i in range(rounds):
        if held and (len(held) == 3 or rng.random() < 0.4):
            release(*held.pop(rng.randrange(len(held))))
            continue
        try:
            cast = sel.cast(SCENARIOS[rng.choice(["ll", "rr"])], job_id=f"p{seed}-{i}")
        except NoCapacity:
            tally["refused"] += 1
            continue
        tally["cast"] += 1
        tally["partial"] += len(cast.members) != 2
        held.append((cast, time.monotonic()))
    while held:
        release(*held.pop())
    sel.close()
    out.send({"spans": spans, "tally": dict(tally)})


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant."""
    edges = sorted([(t0, 1) for t0, _ in spans] + [(t1, -1) for _, t1 in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


class Checker:
    """Reads every live lease from Redis while the workers run: no persona over its cap, and
    every cast's leases (grouped by the job id in the lease id) all there or none."""

    def __init__(self, url: str, prefix: str, cat: Catalog) -> None:
        self.store = RedisStore(url, prefix=prefix)
        self.caps = {p.id: p.max_concurrent for p in cat.personas}
        self.problems: list[str] = []
        self.reads = 0
        self.busiest: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            leases = self.store.leases(list(self.caps))  # one script: one instant
            self.reads += 1
            by_job: Counter[str] = Counter()
            for pid, held in leases.items():
                if len(held) > self.caps[pid]:
                    self.problems.append(f"{pid} holds {len(held)} > {self.caps[pid]}")
                self.busiest[pid] = max(self.busiest[pid], len(held))
                by_job.update(lease_id.rsplit(":", 2)[1] for lease_id in held)
            partial = [job for job, n in by_job.items() if n != 2]
            self.problems.extend(f"cast {job} is partial" for job in partial)

    def __enter__(self) -> Checker:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.store.close()


def _run_workers(target: Any, args: list[tuple[Any, ...]]) -> list[Any]:
    """Start one process per `args`, let them all go at once (each says "ready" first: a
    spawned interpreter takes a while to start), and return what each sends back."""
    go = CTX.Event()
    pipes = [CTX.Pipe(duplex=False) for _ in args]
    senders = [send for _, send in pipes]
    procs = [
        CTX.Process(target=target, args=(*a, go, send))
        for a, send in zip(args, senders, strict=True)
    ]
    for p in procs:
        p.start()
    try:
        for (recv, _), p in zip(pipes, procs, strict=True):
            assert recv.poll(JOIN_S) and recv.recv() == "ready", f"worker {p.pid} never started"
        go.set()
        results = []
        for (recv, _), p in zip(pipes, procs, strict=True):
            assert recv.poll(JOIN_S), f"worker {p.pid} sent nothing in {JOIN_S} s"
            results.append(recv.recv())
        return results
    finally:
        for p in procs:
            p.join(JOIN_S)
            if p.is_alive():
                p.kill()
                p.join()


def test_processes_hammering_casts_never_overbook_nor_half_claim(redis_url):
    cat = hammer_catalog()
    prefix = "{hammer}"
    with Checker(redis_url, prefix, cat) as checker:
        args = [(redis_url, prefix, seed, ROUNDS) for seed in range(PROCESSES)]
        results = _run_workers(_hammer, args)
    assert not checker.problems, checker.problems[:5]
    assert checker.reads > 10, "the checker must have watched the run"
    tally = sum((Counter(r["tally"]) for r in results), Counter())
    assert tally["partial"] == 0
    assert tally["cast"] > PROCESSES * 20 and tally["refused"] > 0, tally  # capacity was hit
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in results:
        for pid, since, until in r["spans"]:
            spans[pid].append((since, until))
    for pid, cap in checker.caps.items():
        assert _most_at_once(spans[pid]) <= cap, f"{pid} held by more than {cap} at once"
    assert any(checker.busiest[pid] == cap for pid, cap in checker.caps.items())
    after = RedisStore(redis_url, prefix=prefix)
    assert after.snapshot(list(checker.caps), ()).counts == dict.fromkeys(checker.caps, 0)
    after.close()


def _rotate(url: str, prefix: str, rounds: int, go: Any, out: Connection) -> None:
    """Round-robin acquire+release as fast as it can; counts whom it got."""
    sel = Selector(trio("round_robin", caps=(9, 9, 9)), store=RedisStore(url, prefix=prefix))
    got: Counter[str] = Counter()
    sel.sync_counts()  # connected
    out.send("ready")
    go.wait()
    for _ in range(rounds):
        try:
            lease = sel.acquire("c1", "driver")
        except NoCapacity:  # lost the race too often in a row: not a claim
            got["contended"] += 1
            continue
        got[lease.persona.id] += 1
        lease.release()
    sel.close()
    out.send(dict(got))


def test_round_robin_is_one_rotation_across_racing_processes(redis_url):
    results = _run_workers(_rotate, [(redis_url, "{rr}", ROUNDS) for _ in range(3)])
    total = sum((Counter(r) for r in results), Counter())
    total.pop("contended", None)
    assert sum(total.values()) > ROUNDS
    # every claim moved the one shared position by one: a, b, c, a, b, c... in claim order
    assert max(total.values()) - min(total.values()) <= 1, total


def _take_turns(url: str, prefix: str, turns: Connection, out: Connection) -> None:
    sel = Selector(trio("round_robin", caps=(9, 9, 9)), store=RedisStore(url, prefix=prefix))
    while turns.recv():
        out.send(sel.acquire("c1", "driver").persona.id)
    sel.close()
    out.send(None)


def test_round_robin_over_two_processes_taking_turns_is_a_b_c_a(redis_url):
    turns = [CTX.Pipe(duplex=False) for _ in range(2)]
    outs = [CTX.Pipe(duplex=False) for _ in range(2)]
    procs = [
        CTX.Process(target=_take_turns, args=(redis_url, "{turns}", turns[i][0], outs[i][1]))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    try:
        got = []
        for i in range(7):
            turns[i % 2][1].send(True)
            assert outs[i % 2][0].poll(JOIN_S)
            got.append(outs[i % 2][0].recv())
        assert got == ["a", "b", "c", "a", "b", "c", "a"]
    finally:
        for i, p in enumerate(procs):
            turns[i][1].send(False)
            p.join(JOIN_S)


def _hold_and_refresh(url: str, prefix: str, out: Connection) -> None:
    """Takes a cast, says so, then keeps its leases alive until it is killed."""
    store = RedisStore(url, prefix=prefix, lease_ttl_s=1.0)
    cat = trio("primary_first")
    sel = Selector(cat, store=store)
    sel.cast(scenario("c1", {"role": "driver"}))
    sel.acquire("c1", "driver")
    out.send(os.getpid())
    asyncio.run(LeaseRefresher(store, 0.2).run())  # the worker's refresh loop, until killed


@pytest.fixture
def killed_worker(redis_url: str) -> Iterator[tuple[BaseProcess, Connection]]:
    recv, send = CTX.Pipe(duplex=False)
    proc = CTX.Process(target=_hold_and_refresh, args=(redis_url, "{kill}", send))
    proc.start()
    yield proc, recv
    if proc.is_alive():
        proc.kill()
    proc.join(JOIN_S)


def test_a_worker_killed_with_sigkill_loses_its_leases_by_expiry(redis_url, killed_worker):
    proc, from_worker = killed_worker
    assert from_worker.poll(JOIN_S), "the worker never took its leases"
    from_worker.recv()
    watcher = RedisStore(redis_url, prefix="{kill}")
    try:
        assert watcher.snapshot(["a"], ()).counts == {"a": 2}
        os.kill(proc.pid, signal.SIGKILL)  # no release, no finally: the process is gone
        proc.join(JOIN_S)
        assert proc.exitcode == -signal.SIGKILL
        assert watcher.snapshot(["a"], ()).counts == {"a": 2}  # outlived its owner, for now

        def freed() -> bool:
            """the dead worker's leases expired (TTL 1 s)"""
            return watcher.snapshot(["a"], ()).counts == {"a": 0}

        wait_for(freed)
    finally:
        watcher.close()


def test_a_worker_paused_past_the_ttl_takes_its_rooms_back_and_nothing_new_is_cast(
    redis_url, killed_worker
):
    """21.1: SIGSTOP past the lease TTL. The paused worker's two rooms of a expire and another
    worker fills a (3 rooms); the paused worker resumes and takes its two rooms back (they
    still run): a is over its limit by the rooms the paused worker held, and no new room is
    cast onto a until it is back under its limit."""
    proc, from_worker = killed_worker
    assert from_worker.poll(JOIN_S), "the worker never took its leases"
    from_worker.recv()
    other = Selector(trio("primary_first"), store=RedisStore(redis_url, prefix="{kill}"))
    try:
        assert other.active_rooms("a") == 2
        os.kill(proc.pid, signal.SIGSTOP)

        def expired() -> bool:
            """the paused worker's leases outlived their TTL (1 s)"""
            return other.active_rooms("a") == 0

        wait_for(expired)
        taken = [other.acquire_persona("a") for _ in range(3)]  # a's limit is 3
        os.kill(proc.pid, signal.SIGCONT)

        def taken_back() -> bool:
            """the resumed worker's refresh took its two rooms back"""
            return other.active_rooms("a") == 5

        wait_for(taken_back)
        assert other.stats()["personas"][0]["active"] == 5  # 2 over, the paused worker's 2
        with pytest.raises(NoCapacity):
            other.acquire_persona("a")
        for lease in taken[:2]:
            lease.release()
        with pytest.raises(NoCapacity):  # 3 of 3: still no new room
            other.acquire_persona("a")
        assert other.acquire("c1", "driver").persona.id == "b"
    finally:
        other.close()
