"""The job in its process (workers/job/runner.py), up to the point the room would run: the plan
found or refused, a stop while still joining, a join that fails. The room itself runs on the
real server in tests/live/."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from config.catalog import Catalog
from config.scenario import load_scenario
from config.settings import Settings
from workers.capacity.selector import Selector
from workers.job.plan import JobPlan
from workers.job.plan_handoff import PlanHandoff
from workers.job.room_ender import RoomEnder
from workers.job.runner import find_plan, run_job
from workers.main.admission import plan_directory
from workers.room.floor import EndReason, Floor
from workers.room.stage.local import LocalStage


class _Owner:
    """What livekit's job process keeps: the future its stop signal resolves."""

    def __init__(self) -> None:
        self._shutdown_fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()


class JobCtx:
    """The parts of livekit's JobContext the job reads before its room runs."""

    def __init__(self, accepted_with: str, catalog: Catalog, connect: object) -> None:
        self.job = SimpleNamespace(id="AJ_7", room=SimpleNamespace(name="room-7", metadata=""))
        self.job.metadata = ""
        self.room = SimpleNamespace(name="room-7")
        self.proc = SimpleNamespace(userdata={"catalog": catalog})
        self._info = SimpleNamespace(
            accept_arguments=SimpleNamespace(metadata=accepted_with), url="ws://10.1.2.3:7880"
        )
        self.owner = _Owner()
        owner = self.owner

        def _on_ctx_shutdown(reason: str) -> None:  # as livekit's job process wires it
            owner._shutdown_fut.set_result(reason)

        self._on_shutdown = _on_ctx_shutdown
        self.connect = connect
        self.shutdowns: list[str] = []

    def add_shutdown_callback(self, callback: object) -> None:
        return None

    def shutdown(self, reason: str = "") -> None:
        self.shutdowns.append(reason)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        transcripts_dir=tmp_path,
        livekit_url="ws://127.0.0.1:1",
        livekit_api_key="devkey",
        livekit_api_secret="secret",
        openai_api_key=None,
    )


def _hand_plan(settings: Settings, catalog: Catalog, scenarios_dir: Path) -> None:
    scenario = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    plan = JobPlan.from_cast(scenario, Selector(catalog).cast(scenario))
    PlanHandoff(plan_directory(settings)).put("AJ_7", plan.to_handoff())


async def test_a_stop_while_joining_ends_the_job_at_once(
    settings: Settings, catalog: Catalog, scenarios_dir: Path
) -> None:
    """The room deleted or the worker draining while the job still joins: the job does not
    wait for the join to give up; it ends now and says why."""
    joining = asyncio.Event()

    async def connect_forever(**_: object) -> None:
        joining.set()
        await asyncio.Event().wait()

    _hand_plan(settings, catalog, scenarios_dir)
    ctx = JobCtx('{"persona": "tim"}', catalog, connect_forever)
    running = run_job(ctx, settings, catalog)  # type: ignore[arg-type]  # a stand-in
    job = asyncio.create_task(running)
    async with asyncio.timeout(10):
        await joining.wait()
        ctx.owner._shutdown_fut.set_result("drain timeout")
        await job
    assert ctx.shutdowns == ["stopped while joining"]


async def test_a_join_that_fails_fails_the_job_and_says_so(
    settings: Settings, catalog: Catalog, scenarios_dir: Path
) -> None:
    async def refused(**_: object) -> None:
        raise ConnectionError("server refused the join")

    _hand_plan(settings, catalog, scenarios_dir)
    ctx = JobCtx('{"persona": "tim"}', catalog, refused)
    with pytest.raises(ConnectionError):
        async with asyncio.timeout(10):
            await run_job(ctx, settings, catalog)  # type: ignore[arg-type]  # a stand-in
    assert ctx.shutdowns == ["job failed: ConnectionError"]


async def test_an_accepted_job_without_its_plan_ends_saying_so(
    settings: Settings, catalog: Catalog
) -> None:
    ctx = JobCtx('{"persona": "tim"}', catalog, None)
    missing = find_plan(ctx, settings, catalog)  # type: ignore[arg-type]  # a stand-in
    assert missing == "job plan missing"
    await run_job(ctx, settings, catalog)  # type: ignore[arg-type]  # a stand-in
    assert ctx.shutdowns == ["job plan missing"]


async def test_a_job_nobody_accepted_casts_for_itself_from_the_job_metadata(
    settings: Settings, catalog: Catalog
) -> None:
    """`connect --room`: livekit builds the job itself, with no on_request and no plan."""
    ctx = JobCtx("", catalog, None)
    ctx.job.metadata = '{"scenario": "dispatch_checkin"}'
    found = find_plan(ctx, settings, catalog)  # type: ignore[arg-type]  # a stand-in
    assert not isinstance(found, str)
    plan, leases = found
    assert [m.persona_id for m in plan.members] == ["tim", "chris"]
    assert len(leases) == 2
    for lease in leases:
        lease.release()
    ctx.job.metadata = '{"scenario": "no_such_scenario"}'
    refused = find_plan(ctx, settings, catalog)  # type: ignore[arg-type]  # a stand-in
    assert isinstance(refused, str) and refused.startswith("cannot cast: ")


async def test_the_job_runs_its_room_with_the_job_process_gc_policy(
    settings, catalog, scenarios_dir, monkeypatch
):
    """One room per job process: each turn freezes what is alive (workers/job/gc_policy.py)."""
    from workers.job import runner as job_room
    from workers.job.gc_policy import freeze_after_each_turn

    seen: dict[str, Any] = {}

    async def fake_run_room(**kwargs: object) -> object:
        seen.update(kwargs)
        return SimpleNamespace(reason="max_turns", detail="", turns=0, transcript_path="t")

    async def joined(**_: object) -> None:
        return None

    monkeypatch.setattr(job_room, "run_room", fake_run_room)
    # as in a job process livekit started (this test process is nobody's child)
    monkeypatch.setattr("multiprocessing.parent_process", lambda: SimpleNamespace(pid=1))
    _hand_plan(settings, catalog, scenarios_dir)
    ctx = JobCtx('{"persona": "tim"}', catalog, joined)
    ctx.room.local_participant = SimpleNamespace(identity="agent_tim_room-7_abc123")
    ctx.room.on = lambda *_a, **_k: None
    await run_job(ctx, settings, catalog)  # type: ignore[arg-type]  # JobCtx stands in for it
    assert freeze_after_each_turn in seen["listeners"]
    assert ctx.shutdowns == ["room ended: max_turns"]


class _Stage:
    def __init__(self) -> None:
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1


def _floor(scenarios_dir: Path) -> Floor:
    scenario = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    return Floor(scenario, emit=lambda *_, **__: None, humans=LocalStage(()).humans)


async def test_a_stop_signal_livekit_cancelled_ends_the_room_as_worker_lost(scenarios_dir):
    """21.5: livekit cancels the job's stop signal when it tears the job down because its
    channel to the worker closed: the room ends as `worker_lost`, not `shutdown`."""
    loop = asyncio.get_running_loop()
    stage, joining, stop = _Stage(), loop.create_future(), loop.create_future()
    ender = RoomEnder(stage, joining)  # type: ignore[arg-type]  # a stand-in stage
    floor = _floor(scenarios_dir)
    ender.seat(floor)
    stop.add_done_callback(ender.stop_signalled)
    stop.cancel()
    await asyncio.sleep(0)  # done callbacks run on the next loop pass
    assert floor.ending is not None and floor.ending.reason == EndReason.WORKER_LOST
    assert stage.stops == 1 and joining.cancelled() and ender.stopped


async def test_a_worker_lost_before_the_floor_exists_ends_it_as_soon_as_it_does(scenarios_dir):
    loop = asyncio.get_running_loop()
    ender = RoomEnder(_Stage(), loop.create_future())  # type: ignore[arg-type]  # a stand-in stage
    ender.worker_lost()
    floor = _floor(scenarios_dir)
    ender.seat(floor)
    assert floor.ending is not None and floor.ending.reason == EndReason.WORKER_LOST
