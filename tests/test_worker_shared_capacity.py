"""The worker on a shared capacity store (CAPACITY_URL, a real redis-server): on_request,
load, /stats and the Prometheus gauges, with Redis up, down and back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from config.catalog import Catalog
from config.settings import Settings
from tests.conftest import SCENARIOS_DIR, until
from tests.redis_server import RedisServer
from tests.test_worker_load_stats import free_port
from tests.test_worker_request import Recorder, handle, job_request
from workers.capacity.store import LeaseRefresher
from workers.main.worker_load import Worker
from workers.multi import build_server

pytestmark = pytest.mark.integration  # a real redis-server

DISPATCH = json.dumps({"scenario": "dispatch_checkin"})


def shared_settings(url: str, tmp_path: Path, **extra: object) -> Settings:
    return Settings(
        _env_file=None,
        scenarios_dir=SCENARIOS_DIR,
        transcripts_dir=tmp_path,
        stats_host="127.0.0.1",
        stats_port=0,
        capacity_url=SecretStr(url),
        capacity_timeout_s=0.2,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def two_workers(
    redis_url: str, tmp_path: Path, catalog: Catalog
) -> Iterator[tuple[Worker, Worker]]:
    a = Worker(shared_settings(redis_url, tmp_path), catalog, cpu_load=lambda: 0.0)
    b = Worker(shared_settings(redis_url, tmp_path), catalog, cpu_load=lambda: 0.0)
    yield a, b
    for w in (a, b):
        w.leasebook.release_all()
        w.selector.close()


async def test_two_workers_see_one_capacity(two_workers: tuple[Worker, Worker]) -> None:
    a, b = two_workers
    assert a.selector.store.shared
    rec = Recorder()
    await handle(a, job_request(rec, DISPATCH, job_id="AJ_a"))
    assert rec.last[0] == "accept"
    # worker B counts A's room, and says it is not its own
    stats = b.stats()
    active = {p["id"]: p["active"] for p in stats["personas"]}
    assert active["tim"] == 1 and active["chris"] == 1
    assert b.stats()["own_rooms"] == {} and a.stats()["own_rooms"] == {"tim": 1, "chris": 1}
    assert stats["capacity_store"]["shared"] and stats["capacity_store"]["state"] == "available"
    a.leasebook.release("AJ_a")
    assert {p["id"]: p["active"] for p in b.stats()["personas"]}["tim"] == 0


async def test_a_persona_full_on_one_worker_is_full_on_the_other(
    two_workers: tuple[Worker, Worker],
) -> None:
    """Tim has three rooms: two workers together never give him a fourth."""
    a, b = two_workers
    recs = []
    for i, w in enumerate([a, b, a, b]):
        rec = Recorder()
        await handle(w, job_request(rec, DISPATCH, job_id=f"AJ_{i}"))
        recs.append(rec)
    accepted = [r.last[1] for r in recs if r.last[0] == "accept"]
    tims = [args for args in accepted if json.loads(args.metadata)["persona"] == "tim"]
    assert len(tims) == 3  # the fourth room gets the backup dispatcher
    assert json.loads(accepted[-1].metadata)["persona"] == "dana"


async def test_redis_down_rejects_reports_full_and_recovers(
    own_redis_server: RedisServer, tmp_path: Path, catalog: Catalog
) -> None:
    settings = shared_settings(own_redis_server.url, tmp_path, capacity_when_unavailable="refuse")
    worker = Worker(settings, catalog, cpu_load=lambda: 0.0)
    try:
        assert worker.load() == 0.0 and worker.store_up is True
        own_redis_server.stop()
        rec = Recorder()
        await handle(worker, job_request(rec, DISPATCH, job_id="AJ_down"))
        assert rec.last == ("reject", False)  # another worker may still serve it
        assert worker.metrics.rejections["capacity_store_unavailable"] == 1
        assert worker.load() == 1.0 and worker.store_up is False  # full: no rooms sent here
        stats = worker.stats()
        assert stats["capacity_store"]["state"] == "unavailable"
        assert "password" not in json.dumps(stats)
        own_redis_server.start()
        for _ in range(100):  # the store cools down for a second after a failure
            if worker.load() == 0.0:
                break
            await asyncio.sleep(0.05)
        assert worker.store_up is True
        for i in range(100):  # back empty: refused while it settles (refuse waits for nothing)
            rec = Recorder()
            await handle(worker, job_request(rec, DISPATCH, job_id=f"AJ_back{i}"))
            if rec.last[0] == "accept":
                break
            await asyncio.sleep(0.05)
        assert rec.last[0] == "accept"
    finally:
        worker.leasebook.release_all()
        worker.selector.close()


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, catalog: Catalog) -> AsyncIterator[Worker]:
    """The real worker's server (build_server) running unregistered, its HTTP servers up."""
    worker = Worker(settings, catalog, cpu_load=lambda: 0.0)
    server = build_server(settings, catalog, worker=worker)
    started = asyncio.Event()
    server.on("worker_started", started.set)
    run = asyncio.create_task(server.run(devmode=True, unregistered=True))
    try:
        async with asyncio.timeout(15):
            await started.wait()
        yield worker
    finally:
        async with asyncio.timeout(10):
            await server.aclose()
            await run


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


async def test_the_gauges_are_on_livekits_prometheus_endpoint(
    redis_url: str, tmp_path: Path, catalog: Catalog
) -> None:
    port = free_port()
    settings = shared_settings(
        redis_url, tmp_path, prometheus_port=port, worker_http_port=free_port()
    )
    async with running_worker(settings, catalog) as worker:
        async with asyncio.timeout(10):
            await handle(worker, job_request(Recorder(), DISPATCH, job_id="AJ_m"))
            await handle(worker, job_request(Recorder(), "{not json", job_id="AJ_bad"))
            text = await asyncio.to_thread(_scrape, port)
    assert 'persona_active_rooms{persona="tim",role="dispatcher"} 1.0' in text
    assert 'persona_capacity{persona="tim",role="dispatcher"} 3.0' in text
    assert "capacity_store_up 1.0" in text
    assert 'rooms_total{outcome="accepted",scenario="dispatch_checkin"} 1.0' in text
    assert 'cast_rejections_total{reason="not_json"} 1.0' in text


def test_plan_starts_from_every_workers_rooms_and_claims_none(
    redis_url: str,
    catalog: Catalog,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from workers import plan
    from workers.capacity.redis_store import RedisStore
    from workers.capacity.selector import Selector

    other_worker = Selector(catalog, store=RedisStore(redis_url))
    leases = [other_worker.acquire_persona("tim", job_id=f"AJ_{i}") for i in range(3)]
    monkeypatch.setenv("CAPACITY_URL", redis_url)
    try:
        assert plan.main(["dispatch_checkin", "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["live_rooms"] == {"tim": 3}
        assert {m["role"]: m["persona"] for m in shown["cast"]}["dispatcher"] == "dana"
        assert other_worker.active_rooms("dana") == 0  # planning claimed nothing
    finally:
        for lease in leases:
            lease.release()
        other_worker.close()


# -- 21: a Redis restarted empty, a short outage ------------------------------------------------


def _cast_of(rec: Recorder) -> str:
    assert rec.last[0] == "accept", rec.calls
    return json.loads(rec.last[1].metadata)["persona"]


async def test_after_redis_restarts_empty_a_new_offer_never_takes_a_running_rooms_persona(
    own_redis_server: RedisServer, tmp_path: Path, catalog: Catalog
) -> None:
    """21.1: worker A's rooms hold every room of tim; Redis restarts empty. An offer worker B
    gets at once waits while the store settles, in which A's refresher puts A's rooms back:
    B casts the backup dispatcher, and tim is never over his limit."""
    url = own_redis_server.url
    a = Worker(shared_settings(url, tmp_path), catalog, cpu_load=lambda: 0.0)
    b = Worker(shared_settings(url, tmp_path), catalog, cpu_load=lambda: 0.0)
    refresher = asyncio.create_task(LeaseRefresher(a.selector.store, 5.0).run())
    try:
        for i in range(3):
            rec = Recorder()
            await handle(a, job_request(rec, DISPATCH, job_id=f"AJ_a{i}"))
            assert _cast_of(rec) == "tim"
        own_redis_server.stop()
        own_redis_server.start()  # empty: no persistence
        rec = Recorder()
        await handle(b, job_request(rec, DISPATCH, job_id="AJ_b"))
        assert _cast_of(rec) == "dana"
        assert b.selector.active_rooms("tim") == 3
    finally:
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)
        for w in (a, b):
            w.leasebook.release_all()
            w.selector.close()


async def test_an_offer_during_a_short_redis_outage_waits_for_it_and_is_cast(
    own_redis_server: RedisServer, tmp_path: Path, catalog: Catalog, events
) -> None:
    """21.2: LiveKit drops a room every worker refused, so an offer made while Redis is down
    waits for it (up to CAPACITY_WAIT_S) instead of being refused; the worker's load stays
    what it was meanwhile, so offers keep coming to it."""
    settings = shared_settings(own_redis_server.url, tmp_path, capacity_wait_s=2.5)
    worker = Worker(settings, catalog, cpu_load=lambda: 0.0)
    try:
        assert worker.load() == 0.0
        own_redis_server.stop()
        rec = Recorder()
        offer = asyncio.create_task(
            worker.admission.handle(job_request(rec, DISPATCH, job_id="AJ_wait"))
        )
        await until(lambda: "capacity_store_unavailable" in events())  # found Redis down
        assert worker.load() == 0.0  # not full: the offer waits here
        assert not offer.done()
        own_redis_server.start()
        async with asyncio.timeout(10):
            await offer
        assert _cast_of(rec) == "tim"
        assert "capacity_store_waited" in events()
    finally:
        worker.leasebook.release_all()
        worker.selector.close()


async def test_an_outage_longer_than_the_wait_refuses_the_offer_and_reports_full(
    own_redis_server: RedisServer, tmp_path: Path, catalog: Catalog
) -> None:
    settings = shared_settings(own_redis_server.url, tmp_path, capacity_wait_s=0.5)
    worker = Worker(settings, catalog, cpu_load=lambda: 0.0)
    try:
        assert worker.load() == 0.0
        own_redis_server.stop()
        started = time.monotonic()
        rec = Recorder()
        await handle(worker, job_request(rec, DISPATCH, job_id="AJ_long"))
        assert rec.last == ("reject", False)
        assert time.monotonic() - started >= 0.5
        assert worker.metrics.rejections["capacity_store_unavailable"] == 1
        await until(lambda: worker.load() == 1.0)  # past CAPACITY_WAIT_S into the outage: full
    finally:
        worker.leasebook.release_all()
        worker.selector.close()
