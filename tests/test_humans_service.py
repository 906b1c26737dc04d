"""The desk in the worker's main process (workers.humans.service) and the job's client of it
(workers.humans.client): over the real private Unix socket, a job claims a call for a human,
the seat is held in the worker's lease book under the job, and comes back by `release`, by the
job ending or crashing (the pool's `process_closed`), or when the worker closes. /stats and the
Prometheus gauges show the humans per tenant."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from livekit.agents import utils
from livekit.agents.ipc.job_executor import JobStatus
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from config.catalog import Catalog
from config.settings import Settings
from tests.agent_server import serving
from tests.humans_catalog import ACME, BRIGHT, human, humans_catalog
from tests.redis_server import RedisServer
from tests.test_worker_load_stats import get_json
from tests.test_worker_request import closed_proc
from workers.humans.availability import FileAvailability
from workers.humans.client import DeskClient, desk_for_job
from workers.humans.local import LocalDesk
from workers.humans.service import HUMAN_DESK_ENV
from workers.main.worker_load import Worker
from workers.multi import build_server

CATALOG = humans_catalog(
    [
        human("alice", skills=["support"]),
        human("bob", skills=["support"], capacity=2),
        human("cleo", skills=["support"], availability="offline"),
        human("ed", tenant=ACME, skills=["dispatcher"]),
    ]
)
ALICE, BOB = CATALOG.human_by_id["alice"], CATALOG.human_by_id["bob"]


def settings_for(tmp_path: Path, url: str | None = None) -> Settings:
    return Settings(
        _env_file=None,
        stats_port=0,
        humans_state_path=tmp_path / "humans.json",
        capacity_url=url,
    )


async def started(worker: Worker, monkeypatch) -> utils.EventEmitter[str]:
    """The worker as build_server and worker_started leave it: the desk's socket open (its
    path in the environment job processes inherit), answering, the pool's job ends heard."""
    monkeypatch.setenv(HUMAN_DESK_ENV, "")  # put back as it was after the test
    worker.desk_service.open()
    pool: utils.EventEmitter[str] = utils.EventEmitter()
    worker.attach(SimpleNamespace(_proc_pool=pool))  # type: ignore[arg-type]
    async with asyncio.timeout(5):
        await worker.desk_service.listening.wait()  # listened on from attach
    return pool


def seats(worker: Worker) -> dict[str, int]:
    return {a["id"]: a["busy_seats"] for a in worker.stats()["humans"]["agents"]}


@pytest.fixture
async def worker(tmp_path, monkeypatch):
    made = Worker(settings_for(tmp_path), CATALOG, cpu_load=lambda: 0.0)
    pool = await started(made, monkeypatch)
    made.pool = pool  # type: ignore[attr-defined]
    yield made
    await made.aclose()


async def test_a_job_claims_through_the_main_process_and_the_seat_is_held_under_it(worker):
    job1, job2 = desk_for_job("AJ_1", CATALOG), desk_for_job("AJ_2", CATALOG)
    assert isinstance(job1, DeskClient)  # a job process of this worker asks its main process
    assert [h.id for h in await job1.ringable(BRIGHT, assigned=(), skill="support")] == [
        "alice",
        "bob",
    ]
    won = await asyncio.gather(job1.claim("call-1", ALICE), job2.claim("call-1", BOB))
    assert sorted(won) == [False, True]  # one winner of the call
    winner_job = "AJ_1" if won[0] else "AJ_2"
    assert "human:" in worker.leasebook.held()[winner_job]["personas"][0]
    assert await job1.claim("call-2", ALICE) is (not won[0])  # alice's one seat
    await job1.aclose()


async def test_release_frees_the_seat_in_the_lease_book_and_the_store(worker):
    job = desk_for_job("AJ_1", CATALOG)
    assert await job.claim("call-1", BOB) and await job.claim("call-2", BOB)
    assert seats(worker)["bob"] == 2
    assert worker.leasebook.held()["AJ_1"]["personas"] == ["human:bob", "human:bob"]
    await job.release("call-1", BOB)
    await job.release("call-1", BOB)  # once
    assert seats(worker)["bob"] == 1
    assert worker.leasebook.held()["AJ_1"]["personas"] == ["human:bob"]
    assert await desk_for_job("AJ_2", CATALOG).claim("call-3", BOB) is True
    assert seats(worker)["bob"] == 2


async def test_a_job_that_ends_or_crashes_gives_its_humans_seats_back(worker):
    pool = worker.pool
    one, two = desk_for_job("AJ_1", CATALOG), desk_for_job("AJ_2", CATALOG)
    assert await one.claim("call-1", ALICE) and await two.claim("call-2", BOB)
    assert seats(worker) == {"alice": 1, "bob": 1, "cleo": 0, "ed": 0}
    pool.emit("process_closed", closed_proc("AJ_1", JobStatus.FAILED))  # a crashed job
    assert seats(worker) == {"alice": 0, "bob": 1, "cleo": 0, "ed": 0}
    pool.emit("process_closed", closed_proc("AJ_2", JobStatus.SUCCESS))
    assert seats(worker)["bob"] == 0 and worker.leasebook.held() == {}


async def test_the_desk_socket_is_private_and_gone_when_the_worker_closes(tmp_path, monkeypatch):
    worker = Worker(settings_for(tmp_path), CATALOG, cpu_load=lambda: 0.0)
    await started(worker, monkeypatch)
    path = Path(os.environ[HUMAN_DESK_ENV])
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    job = desk_for_job("AJ_1", CATALOG)
    assert await job.claim("call-1", ALICE)
    await worker.aclose()
    assert not path.parent.exists()
    assert worker.leasebook.held() == {}
    # a job whose main process is gone finds nobody free, and claims nothing
    assert await job.ringable(BRIGHT, assigned=(), skill=None) == []
    assert await job.claim("call-2", BOB) is False


async def test_bad_requests_are_answered_not_raised(worker):
    answer = worker.desk_service.answer
    assert (await answer(b"not json"))["error"] == "bad_request"
    assert (await answer(b"[1]"))["error"] == "bad_request"
    assert "unknown op" in (await answer(b'{"op": "dance"}'))["message"]
    unknown = {"op": "claim", "job_id": "AJ_1", "call": "c", "human": "zed"}
    assert "unknown human agent" in (await answer(json.dumps(unknown).encode()))["message"]
    bad_call = {"op": "claim", "job_id": "AJ_1", "call": "two words", "human": "alice"}
    assert "call's key" in (await answer(json.dumps(bad_call).encode()))["message"]
    many = {"op": "ringable", "tenant": BRIGHT, "assigned": ["a"] * 65, "skill": None}
    assert (await answer(json.dumps(many).encode()))["error"] == "bad_request"
    # and over the socket, a line past the limit is dropped without harming the service
    reader, writer = await asyncio.open_unix_connection(os.environ[HUMAN_DESK_ENV])
    writer.write(b"x" * 20000 + b"\n")
    await writer.drain()
    assert await reader.read() == b""
    writer.close()
    assert await desk_for_job("AJ_1", CATALOG).claim("call-1", ALICE) is True


class Gate:
    """The desk core's claim held at the door until let go (the real claim runs then), to
    put requests in a known order."""

    def __init__(self, claim: Any) -> None:
        self.entered, self.go = threading.Event(), threading.Event()
        self._claim = claim

    def __call__(self, *args: Any) -> Any:
        self.entered.set()
        assert self.go.wait(10), "never let go"
        return self._claim(*args)


def request(op: str, call: str = "call-1") -> bytes:
    return json.dumps({"op": op, "job_id": "AJ_1", "call": call, "human": "alice"}).encode()


async def test_a_release_asked_while_its_claim_runs_waits_for_it(worker, monkeypatch):
    gate = Gate(worker.desk.claim)
    monkeypatch.setattr(worker.desk, "claim", gate)
    claim = asyncio.ensure_future(worker.desk_service.answer(request("claim")))
    assert await asyncio.to_thread(gate.entered.wait, 10)
    release = asyncio.ensure_future(worker.desk_service.answer(request("release")))
    await asyncio.sleep(0)  # one turn of the loop: the release reaches its claim and waits
    assert not release.done()
    gate.go.set()
    async with asyncio.timeout(10):
        assert await claim == {"ok": True, "won": True}
        assert await release == {"ok": True, "released": True}
    assert seats(worker)["alice"] == 0


async def test_a_claim_the_job_gave_up_on_leaves_no_seat_taken(worker, monkeypatch):
    gate = Gate(worker.desk.claim)
    monkeypatch.setattr(worker.desk, "claim", gate)
    job = desk_for_job("AJ_1", CATALOG)
    leg = asyncio.create_task(job.claim("call-1", ALICE))
    assert await asyncio.to_thread(gate.entered.wait, 10)
    leg.cancel()  # the transfer cancelled this leg while its claim was at the store
    gate.go.set()
    async with asyncio.timeout(10):
        with pytest.raises(asyncio.CancelledError):
            await leg
    assert seats(worker)["alice"] == 0
    assert worker.leasebook.held().get("AJ_1", {}).get("personas", []) == []


async def test_stats_and_gauges_show_humans_per_tenant(worker, tmp_path):
    job = desk_for_job("AJ_1", CATALOG)
    assert await job.claim("call-1", ALICE) and await job.claim("call-2", BOB)
    FileAvailability(tmp_path / "humans.json").set(CATALOG.human_by_id["ed"], "busy")
    humans = worker.stats()["humans"]
    assert humans["tenants"] == {
        BRIGHT: {"available": 1, "busy": 1, "offline": 1, "busy_seats": 2, "seats": 4},
        ACME: {"available": 0, "busy": 1, "offline": 0, "busy_seats": 0, "seats": 1},
    }
    alice = next(a for a in humans["agents"] if a["id"] == "alice")
    assert alice == {
        "id": "alice",
        "tenant": BRIGHT,
        "name": "Alice",
        "skills": ["support"],
        "capacity": 1,
        "state": "available",
        "busy_seats": 1,
        "status": "busy",
    }
    found = gauges(worker)
    assert found["human_agents"][(BRIGHT, "busy")] == 1.0
    assert found["human_agents"][(ACME, "busy")] == 1.0
    assert found["human_agents"][(BRIGHT, "offline")] == 1.0
    assert found["human_busy_seats"][(BRIGHT,)] == 2.0
    assert found["human_seats"][(ACME,)] == 1.0
    assert len(found["human_agents"]) == 6  # two tenants x three statuses, nothing else


def gauges(worker: Worker) -> dict[str, dict[tuple[str, ...], float]]:
    registry = CollectorRegistry()
    registry.register(worker.metrics)
    text = generate_latest(registry).decode()
    return {  # each sample by its (tenant, status) labels, those it has
        family.name: {label_values(s.labels): s.value for s in family.samples}
        for family in text_string_to_metric_families(text)
    }


def label_values(labels: dict[str, str]) -> tuple[str, ...]:
    return tuple(labels[name] for name in ("tenant", "status") if name in labels)


async def test_without_humans_in_the_catalog_stats_say_none_and_no_gauges(
    tmp_path, catalog: Catalog
):
    # the shipped catalog has BrightCart's people: a catalog without any
    worker = Worker(settings_for(tmp_path), humans_catalog([]), cpu_load=lambda: 0.0)
    try:
        assert worker.stats()["humans"] == {"tenants": {}, "agents": []}
        assert "human_agents" not in gauges(worker)
    finally:
        await worker.aclose()


def test_without_a_worker_main_process_a_job_gets_a_local_desk(tmp_path):
    desk: Any = desk_for_job("sim-1", CATALOG, settings=settings_for(tmp_path))
    assert isinstance(desk, LocalDesk) and desk.job_id == "sim-1"


@pytest.mark.integration
async def test_redis_down_the_job_finds_nobody_free_and_stats_say_why(
    tmp_path, monkeypatch, own_redis_server: RedisServer
):
    worker = Worker(settings_for(tmp_path, own_redis_server.url), CATALOG, cpu_load=lambda: 0.0)
    await started(worker, monkeypatch)
    try:
        job = desk_for_job("AJ_1", CATALOG)
        own_redis_server.stop()
        assert await job.ringable(BRIGHT, assigned=(), skill="support") == []
        assert await job.claim("call-1", ALICE) is False
        assert "unavailable" in worker.stats()["humans"]["error"]
        assert "human_agents" not in gauges(worker)  # no figures rather than wrong ones
    finally:
        await worker.aclose()


@pytest.mark.integration  # runs livekit's AgentServer (unregistered) as the worker does
async def test_the_real_server_serves_the_desk_to_its_jobs_and_gives_seats_back_on_close(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(HUMAN_DESK_ENV, "")  # put back as it was after the test
    settings = settings_for(tmp_path)
    worker = Worker(settings, CATALOG, cpu_load=lambda: 0.0)
    server = build_server(settings, CATALOG, worker=worker)
    path = Path(os.environ[HUMAN_DESK_ENV])  # set before livekit's forkserver would start
    async with serving(server), asyncio.timeout(10):
        await worker.desk_service.listening.wait()  # listened on from `worker_started`
        job = desk_for_job("AJ_1", CATALOG)
        assert isinstance(job, DeskClient) and job.path == str(path)
        assert await job.claim("call-1", ALICE)
        await worker.stats_attempted.wait()
        assert worker.stats_server is not None
        _, stats = await get_json(f"http://127.0.0.1:{worker.stats_server.port}/stats")
        assert stats["jobs"]["AJ_1"]["personas"] == ["human:alice"]
        assert stats["humans"]["tenants"][BRIGHT]["busy_seats"] == 1
    assert worker.leasebook.held() == {}
    assert worker.desk.claims.busy_seats(["alice"]) == {"alice": 0}
    assert not path.parent.exists()
