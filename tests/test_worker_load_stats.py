"""The load the worker reports to LiveKit, and the operators' stats endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from livekit.agents import AgentServer, JobRequest
from livekit.protocol import agent as agent_pb
from livekit.protocol import models
from structlog.testing import capture_logs

from agents.models import OFFLINE_END_OF_SPEECH_SILENCE_S
from config.catalog import Catalog
from config.settings import Settings
from tests.conftest import SCENARIOS_DIR
from workers import multi
from workers.main.stats_server import StatsServer, summarize
from workers.main.worker_load import Worker
from workers.multi import build_server, prewarm


class Cpu:
    """A stubbed CPU load the test sets."""

    def __init__(self) -> None:
        self.value = 0.0

    def __call__(self) -> float:
        return self.value


@pytest.fixture
def settings() -> Settings:
    return Settings(
        _env_file=None,
        scenarios_dir=SCENARIOS_DIR,
        stats_host="127.0.0.1",
        stats_port=0,
        stats_log_interval_s=0,
    )


@pytest.fixture
def cpu() -> Cpu:
    return Cpu()


@pytest.fixture
def worker(settings: Settings, catalog: Catalog, cpu: Cpu) -> Worker:
    return Worker(settings, catalog, cpu_load=cpu)


async def start_room(worker: Worker, job_id: str, scenario: str = "dispatch_checkin") -> None:
    answers: list[str] = []

    async def on_accept(_: Any) -> None:
        answers.append("accept")

    async def on_reject(_: bool) -> None:
        answers.append("reject")

    job = agent_pb.Job(
        id=job_id,
        type=agent_pb.JobType.JT_ROOM,
        room=models.Room(sid=f"RM_{job_id}", name=f"room-{job_id}"),
        metadata=json.dumps({"scenario": scenario}),
    )
    async with asyncio.timeout(5):
        await worker.admission.handle(JobRequest(job=job, on_reject=on_reject, on_accept=on_accept))
    assert answers == ["accept"]


def running(*job_ids: str) -> Any:
    """A server whose `active_jobs` lists these jobs (RunningJobInfo-shaped)."""
    return SimpleNamespace(
        active_jobs=[SimpleNamespace(job=SimpleNamespace(id=j)) for j in job_ids]
    )


async def test_load_follows_rooms_and_never_drops_below_cpu(worker: Worker, cpu: Cpu):
    capacity = sum(p.max_concurrent for p in worker.catalog.personas if p.active)
    assert worker.load(running()) == 0.0

    await start_room(worker, "AJ_1")  # two personas
    await start_room(worker, "AJ_2", "all_four")  # four more
    server = running("AJ_1", "AJ_2")
    assert worker.load(server) == pytest.approx(6 / capacity)

    cpu.value = 0.8  # a busy CPU wins
    assert worker.load(server) == 0.8
    cpu.value = 0.0

    server = running("AJ_2")  # AJ_1's job ended
    assert worker.load(server) == pytest.approx(4 / capacity)
    server = running()
    assert worker.load(server) == 0.0
    assert worker.leasebook.held() == {}

    cpu.value = 0.25
    assert worker.load(server) == 0.25


async def test_load_reaches_the_threshold_as_capacity_fills(worker: Worker):
    loads = []
    for persona in (p for p in worker.catalog.personas if p.active):
        for _ in range(persona.max_concurrent):
            worker.selector.acquire_persona(persona.id, reason="test load")
            loads.append(worker.load())
    assert loads == sorted(loads) and loads[-1] == 1.0
    assert any(v >= worker.settings.load_threshold for v in loads[:-1])  # full before the end


async def get_json(url: str) -> tuple[int, dict[str, Any]]:
    async with asyncio.timeout(5), aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.json()


async def test_stats_endpoint_serves_persona_load_and_jobs(worker: Worker, cpu: Cpu):
    cpu.value = 0.01
    await start_room(worker, "AJ_1")
    await worker.start_stats()
    try:
        assert worker.stats_server is not None and worker.stats_server.port
        base = f"http://127.0.0.1:{worker.stats_server.port}"
        status, body = await get_json(f"{base}/stats")
        assert status == 200
        assert body["persona_load"] > 0 and body["cpu_load"] == 0.01
        assert body["worker_load"] == max(body["persona_load"], body["cpu_load"])
        assert body["load_threshold"] == 0.9
        by_id = {p["id"]: p for p in body["personas"]}
        assert by_id["tim"] == {
            "id": "tim",
            "name": "Tim",
            "role": "dispatcher",
            "max": 3,
            "active": 1,
            "available": True,
            "load_percentage": 33,
        }
        assert by_id["chris"]["active"] == 1 and by_id["dana"]["active"] == 0
        assert body["summary"]["total_active_rooms"] == 2
        assert body["jobs"]["AJ_1"]["personas"] == ["dispatcher:tim", "driver:chris"]

        assert await get_json(f"{base}/healthz") == (200, {"status": "ok"})
    finally:
        await worker.aclose()
    assert worker.stats_server is None


async def test_stats_are_logged_periodically(worker: Worker):
    await start_room(worker, "AJ_1")
    logged = asyncio.Event()

    reads = 0

    def payload() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        if reads == 2:  # the first read's log line is written before the second read
            logged.set()
        return worker.stats()

    server = StatsServer(payload, host="127.0.0.1", port=0, log_interval_s=0.01)
    with capture_logs() as logs:
        await server.start()
        try:
            async with asyncio.timeout(5):
                await logged.wait()
        finally:
            await server.aclose()
    event = next(e for e in logs if e["event"] == "worker_stats")
    assert event["busy"] == {"tim": "1/3", "chris": "1/3"}
    assert event["total_active_rooms"] == 2 and event["jobs"] == 1
    assert summarize({"personas": [], "summary": {}})["busy"] == {}


async def test_a_busy_stats_port_does_not_stop_the_worker(settings: Settings, worker: Worker):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        worker.settings = settings.model_copy(update={"stats_port": taken.getsockname()[1]})
        with capture_logs() as logs:
            await worker.start_stats()
    assert worker.stats_server is None
    assert any(e["event"] == "stats_server_failed" for e in logs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration  # runs livekit's AgentServer with its HTTP server and load task
async def test_server_runs_offline_reports_load_and_releases_on_close(
    settings: Settings, catalog: Catalog, cpu: Cpu
):
    worker_port = free_port()  # the setting reaches livekit's own HTTP server
    settings = settings.model_copy(update={"worker_http_port": worker_port})
    worker = Worker(settings, catalog, cpu_load=cpu)
    calls: list[float] = []
    second_call = asyncio.Event()
    loop = asyncio.get_running_loop()

    def load_fnc(server: AgentServer | None = None) -> float:  # livekit's load task, in a thread
        value = Worker.load(worker, server)
        calls.append(value)
        if sum(v > 0 for v in calls) >= 2:  # an earlier non-zero value has been stored
            loop.call_soon_threadsafe(second_call.set)
        return value

    # a spy in place of the method: deliberately patched on the instance to count the calls
    worker.load = load_fnc  # type: ignore[method-assign]
    server = build_server(settings, catalog, worker=worker)
    assert server.setup_fnc is prewarm and server.load_fnc is load_fnc
    started = asyncio.Event()
    server.on("worker_started", started.set)
    run = asyncio.create_task(server.run(devmode=True, unregistered=True))
    try:
        async with asyncio.timeout(10):
            await started.wait()
            await start_room(worker, "AJ_1")
            await second_call.wait()
            status, info = await get_json(f"http://127.0.0.1:{worker_port}/worker")
            assert status == 200
            assert info["agent_name"] == settings.agent_name
            assert info["worker_load"] > 0  # what the worker reports to LiveKit
            await worker.stats_attempted.wait()  # started by `worker_started`
            assert worker.stats_server is not None
            _, stats = await get_json(f"http://127.0.0.1:{worker.stats_server.port}/stats")
            # not an active job yet, but just accepted: reconcile keeps it
            assert "AJ_1" in stats["jobs"]
    finally:
        async with asyncio.timeout(10):
            await server.aclose()
            await run
    assert worker.leasebook.held() == {}
    assert worker.selector.stats()["summary"]["total_active_rooms"] == 0
    assert worker.stats_server is None


# ---- what a job process holds, and what it never loads ---------------------------------------

PREWARM_PROBE = """
import gc, json
from types import SimpleNamespace
from workers.multi import prewarm
userdata = {}
before = gc.get_freeze_count()
prewarm(SimpleNamespace(userdata=userdata))
tracked = {id(o) for o in gc.get_objects()}  # the generations a collection walks
print(json.dumps({
    "frozen_before": before,
    "frozen_after": gc.get_freeze_count(),
    "catalog_walked_by_gc": id(userdata["catalog"]) in tracked,
    "vad_walked_by_gc": id(userdata["vad"]) in tracked,
    "vad_silence_s": userdata["vad"].min_silence_duration,
}))
"""


@pytest.mark.subprocess(argv=["-c", PREWARM_PROBE])  # its own process: prewarm freezes its heap
def test_prewarm_ends_by_freezing_what_it_built(program):
    """A full collection in a job process walks only what the room allocates: what prewarm
    built (VAD, offline voice, catalog) is frozen out of the collector's reach."""
    assert program.returncode == 0, program.stderr[-2000:]
    probe = json.loads(program.stdout.strip().splitlines()[-1])
    assert probe["frozen_after"] > probe["frozen_before"]
    assert probe["catalog_walked_by_gc"] is False and probe["vad_walked_by_gc"] is False
    # no key here: the VAD is the offline ear's, tuned for eSpeak (tests/test_vad_end.py)
    assert probe["vad_silence_s"] == OFFLINE_END_OF_SPEECH_SILENCE_S


PRELOAD_PROBE = """
import json, os
from config.catalog import load_catalog
from config.settings import Settings
from workers.multi import build_server
build_server(Settings(_env_file=None), load_catalog())
# what the worker's forkserver imports (livekit worker.py), with the environment it inherits
from livekit.agents.ipc import _preload
print(json.dumps({
    "variable": _preload.ENV_PRELOAD_LOCAL_INFERENCE,
    "value": os.environ.get(_preload.ENV_PRELOAD_LOCAL_INFERENCE),
    "preloads_local_models": _preload._local_inference_models(),
}))
"""


@pytest.mark.subprocess(argv=["-c", PRELOAD_PROBE])
def test_the_forkserver_never_preloads_livekits_local_inference_models(program):
    """livekit's forkserver warm-up loads its local VAD and end-of-turn model (~244 MB) unless
    told not to; nothing in this worker uses them. Fails if livekit renames the variable."""
    assert program.returncode == 0, program.stderr[-2000:]
    probe = json.loads(program.stdout.strip().splitlines()[-1])
    assert probe["variable"] == multi.PRELOAD_LOCAL_INFERENCE
    assert probe["value"] == "0"
    assert probe["preloads_local_models"] is False


def test_build_server_keeps_an_operators_own_preload_choice(
    settings: Settings, catalog: Catalog, monkeypatch
):
    monkeypatch.setenv(multi.PRELOAD_LOCAL_INFERENCE, "1")
    build_server(settings, catalog)
    assert os.environ[multi.PRELOAD_LOCAL_INFERENCE] == "1"
