"""A room offered while another is still launching is taken, with one prewarmed process
(issue 27, item 3): the worker's availability is its own load (`MultiPersonaServer.
_get_effective_load`), not livekit's estimate of rooms accepted but not yet launched.

The worker's AgentServer runs as `start` does (production defaults) against a fake of
livekit-server's worker protocol on loopback (tests/worker_protocol.py); every wait is on a
condition. Jobs run in threads: what is tested is the main process's answer to offers."""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path

import pytest
from livekit.agents import AgentServer, JobContext, JobExecutorType
from livekit.protocol import agent

from config.catalog import Catalog, parse_catalog
from config.settings import Settings
from tests.agent_server import serving
from tests.catalogs import tim_alone_once
from tests.conftest import SCENARIOS_DIR
from tests.worker_protocol import FakeAgentService, fake_agent_service
from workers.main.worker_load import MultiPersonaServer, Worker

AGENT = "multi-persona"
THRESHOLD = 0.7
ROOM_METADATA = json.dumps({"scenario": "dispatch_checkin"})


class LivekitEstimate(MultiPersonaServer):
    """The worker's server with livekit's own estimate of reserved slots put back."""

    _get_effective_load = AgentServer._get_effective_load


async def quiet_entrypoint(ctx: JobContext) -> None:
    """A job that ends at once without joining its room."""
    ctx.shutdown("test job")


def worker_for(tmp_path: Path, catalog: Catalog) -> Worker:
    settings = Settings(
        _env_file=None,
        scenarios_dir=SCENARIOS_DIR,
        stats_port=0,
        transcripts_dir=tmp_path / "transcripts",
        load_counts_cpu=False,
    )
    return Worker(settings, catalog, cpu_load=lambda: 0.0)


def one_prewarmed(server_type: type[MultiPersonaServer], worker: Worker, url: str = ""):
    server = server_type(
        worker,
        ws_url=url,
        api_key="devkey",
        api_secret="a-test-secret-long-enough-for-hmac-sha256",
        num_idle_processes=1,
        load_threshold=THRESHOLD,
        load_fnc=worker.load,
        port=0,
        job_executor_type=JobExecutorType.THREAD,
    )
    server.rtc_session(quiet_entrypoint, agent_name=AGENT, on_request=worker.admission.handle)
    return server


async def stop(server: AgentServer, run: asyncio.Task[None]) -> None:
    async with asyncio.timeout(20):
        await server.aclose()
        await run


def test_livekit_still_has_the_private_load_estimate_the_worker_replaces():
    """If this fails, livekit-agents renamed or rewired its reserved-slot estimate: re-read
    `AgentServer._answer_availability`, `_is_available` and `_update_worker_status` and adapt
    `MultiPersonaServer._get_effective_load` (or drop it if livekit no longer needs it)."""
    assert callable(getattr(AgentServer, "_get_effective_load", None))
    for user in (AgentServer._is_available, AgentServer._update_worker_status):
        assert "self._get_effective_load()" in inspect.getsource(user), user.__name__
    answer = inspect.getsource(AgentServer._answer_availability)
    assert "self._reserved_slots += 1" in answer
    assert "self._reserved_slots -= 1" in answer
    assert MultiPersonaServer._get_effective_load is not AgentServer._get_effective_load


@pytest.mark.parametrize(
    ("server_type", "available"), [(MultiPersonaServer, True), (LivekitEstimate, False)]
)
async def test_one_prewarmed_process_one_reserved_slot_nothing_cast(
    tmp_path: Path, catalog: Catalog, server_type: type[MultiPersonaServer], available: bool
):
    """One prewarmed process, one room accepted and not launched, nothing cast: the worker
    is available; livekit's own estimate (load_threshold / 1 per reserved slot) says full."""
    worker = worker_for(tmp_path, catalog)
    server = one_prewarmed(server_type, worker)
    async with serving(server):
        server._reserved_slots = 1
        assert server._is_available() is available
        server._reserved_slots = 0
        assert server._is_available()


async def offer(service: FakeAgentService, job_id: str) -> tuple[agent.Job, bool]:
    job = service.job(job_id, f"room-{job_id}", ROOM_METADATA, AGENT)
    await service.offer(job)
    return job, (await service.answer(job_id)).available


@pytest.mark.parametrize(
    ("server_type", "second_taken"), [(MultiPersonaServer, True), (LivekitEstimate, False)]
)
async def test_a_room_offered_while_the_first_launches_is_taken(
    tmp_path: Path, catalog: Catalog, server_type: type[MultiPersonaServer], second_taken: bool
):
    """Two rooms offered back to back to a worker with one prewarmed process, the first not
    yet assigned (so not launched: its slot stays reserved): the second is cast and accepted
    too, and the status the worker reports meanwhile is available. With livekit's estimate
    the second is refused before the worker's own admission is asked."""
    worker = worker_for(tmp_path, catalog)
    async with fake_agent_service() as service:
        server = one_prewarmed(server_type, worker, service.url)
        run = asyncio.create_task(server.run(devmode=False))
        try:
            first, first_taken = await offer(service, "AJ_1")
            assert first_taken
            assert set(worker.leasebook.held()) == {"AJ_1"}
            second, taken = await offer(service, "AJ_2")
            assert taken is second_taken
            taken_jobs = [first, second] if taken else [first]
            assert set(worker.leasebook.held()) == {j.id for j in taken_jobs}
            status = await service.next_status()  # while the rooms wait for their assignment
            expected = agent.WorkerStatus.WS_AVAILABLE if taken else agent.WorkerStatus.WS_FULL
            assert status.status == expected
            for job in taken_jobs:  # each launches, runs and ends
                await service.assign(job)
            for job in taken_jobs:
                assert await service.job_ended(job.id) == agent.JobStatus.JS_SUCCESS
        finally:
            await stop(server, run)


DISPATCHER_ONLY = json.dumps(
    {
        "name": "dispatcher_only",
        "campaign": "freight-dispatch",
        "cast": [{"role": "dispatcher"}],
        "rules": {"turn_policy": "addressed"},
        "script": {"dispatcher": [{"say": "Dispatch here."}]},
    }
)


async def test_a_room_that_does_not_fit_is_still_refused(tmp_path: Path, catalog_data: dict):
    """Availability no longer guards against overbooking: the selector does. Two rooms
    offered before either is answered, tim free for one: one is cast, the other refused
    (terminate=False, so LiveKit offers it elsewhere), tim never in two rooms."""
    worker = worker_for(tmp_path, parse_catalog(json.dumps(tim_alone_once(catalog_data))))
    async with fake_agent_service() as service:
        server = one_prewarmed(MultiPersonaServer, worker, service.url)
        run = asyncio.create_task(server.run(devmode=False))
        try:
            jobs = [service.job(i, f"room-{i}", DISPATCHER_ONLY, AGENT) for i in ("AJ_1", "AJ_2")]
            for job in jobs:  # both offered before either is answered
                await service.offer(job)
            answers = [await service.answer(job.id) for job in jobs]
            assert sorted(a.available for a in answers) == [False, True]
            (refused,) = [a for a in answers if not a.available]
            assert not refused.terminate
            assert worker.selector.active_rooms("tim") == 1
            (taken,) = [j for j, a in zip(jobs, answers, strict=True) if a.available]
            await service.assign(taken)
            assert await service.job_ended(taken.id) == agent.JobStatus.JS_SUCCESS
        finally:
            await stop(server, run)
