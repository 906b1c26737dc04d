"""Several workers, signals and the CLI's `connect`: the worker as an operator runs it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from livekit import api

from config.settings import PROJECT_ROOT
from tests.catalogs import tim_alone_once
from tests.live.harness import (
    SHORT_CHECKIN,
    WorkerProcess,
    current_events,
    dispatch,
    server_api,
    transcript_event,
    transcript_of,
    unique,
)
from tests.redis_server import RedisServer, start_redis_server

pytestmark = pytest.mark.live


def one_room_catalog(tmp: Path) -> Path:
    """The shipped catalog with freight-dispatch staffed by tim alone, one room at a time
    (dana, its backup and the tenant's default, inactive)."""
    data = tim_alone_once(json.loads((PROJECT_ROOT / "config" / "catalog.json").read_text()))
    path = tmp / "catalog.json"
    path.write_text(json.dumps(data))
    return path


# Tim alone, waiting for a caller who never comes: the room holds its lease until deleted.
HOLD = json.dumps(
    {
        "name": "hold",
        "campaign": "freight-dispatch",
        "cast": [{"role": "dispatcher"}],
        # greets at once and holds its room: nobody is awaited before the greeting
        "rules": {
            "turn_policy": "addressed",
            "max_turns": 20,
            "max_duration_s": 300,
            "wait_for_human_s": 0,
        },
        "script": {"dispatcher": [{"say": "Dispatch here, waiting for the driver."}]},
    }
)


async def signal_a_held_room(
    lk: api.LiveKitAPI, proc: WorkerProcess, sig: int
) -> tuple[str, float]:
    """Dispatch a HOLD room, and once its persona has spoken, send `sig` to the worker's
    main process alone: the room's name, and when the signal went."""
    room = unique("held")
    await dispatch(lk, proc.agent_name, room, HOLD)  # waits for a caller who never comes
    await transcript_event(proc, room, "utterance")
    sent_at = time.time()
    proc.signal(sig)
    return room, sent_at


async def first_of(*waits: Any, within_s: float = 30) -> tuple[int, Any]:
    """The index and result of whichever wait finishes first; the others are cancelled."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _ = await asyncio.wait(tasks, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
        assert done, f"neither happened within {within_s} s"
        task = done.pop()
        return tasks.index(task), task.result()
    finally:
        for t in tasks:
            t.cancel()


async def test_a_full_worker_rejects_and_livekit_offers_the_room_to_another(
    tmp_path: Path, workers: list[WorkerProcess]
):
    """g: two workers under one AGENT_NAME, tim at most one room: while the first worker's room
    holds tim, a second room offered to it is refused (no_cast, terminate=False) and LiveKit
    offers it to the other worker, which serves it. LiveKit picks workers at random weighted
    by load, so the case dispatches until an offer reaches the full worker first."""
    agent = unique("pair")
    catalog = str(one_room_catalog(tmp_path))
    first = WorkerProcess.start(tmp_path, agent_name=agent, name="first", CATALOG_PATH=catalog)
    workers.append(first)
    await first.ready()
    async with server_api() as lk:
        held = unique("held")
        await dispatch(lk, agent, held, HOLD)
        await first.wait_for("job_accepted", room=held)
        second = WorkerProcess.start(
            tmp_path, agent_name=agent, name="second", CATALOG_PATH=catalog
        )
        workers.append(second)
        await second.ready()
        for _ in range(10):
            room = unique("offer")
            await dispatch(lk, agent, room, HOLD)
            which, _ev = await first_of(
                first.wait_for("job_rejected", room=room, timeout=30),
                second.wait_for("job_accepted", room=room, timeout=30),
            )
            if which == 0:  # refused by the full worker: the other must get it
                assert first.named("job_rejected", room=room)[-1]["problem"] == "no_cast"
                accepted = await second.wait_for("job_accepted", room=room, timeout=30)
                assert accepted["cast"] == {"dispatcher": "tim"}
                assert not first.named("job_accepted", room=room)
                break
            # LiveKit chose the free worker directly: once that room runs, free tim there and
            # try again (a room deleted while its job still connects ends only when the
            # connection attempt gives up)
            await transcript_event(second, room, "utterance", timeout=60)
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
            await second.wait_for("job_leases_released", timeout=30)
            second.forget("job_leases_released")
        else:
            pytest.fail("in 10 dispatches LiveKit never offered a room to the full worker")
        for name in (held, room):
            await lk.room.delete_room(api.DeleteRoomRequest(room=name))


@pytest.mark.parametrize("whole_group", [False, True], ids=["pid", "process-group"])
async def test_sigterm_drains_a_running_room(
    tmp_path: Path, workers: list[WorkerProcess], whole_group: bool
):
    """h: SIGTERM to the worker (its PID, or its whole process group as systemd and container
    runtimes send it): no new room is taken, the running room ends by its own rules, its
    transcript ends, its leases are released and the worker exits 0."""
    proc = WorkerProcess.start(tmp_path, agent_name=unique("drain"), name="drain")
    workers.append(proc)
    await proc.ready()
    async with server_api() as lk:
        room = unique("running")
        await dispatch(lk, proc.agent_name, room, SHORT_CHECKIN)
        await transcript_event(proc, room, "utterance")
        proc.signal(signal.SIGTERM, group=whole_group)
        late = unique("late")
        await dispatch(lk, proc.agent_name, late, SHORT_CHECKIN)
        events = await transcript_of(proc, room, timeout=120)
        assert await proc.exited(timeout=60) == 0, proc.tail()
    assert events[-1]["reason"] == "end_conversation"
    assert not proc.named("job_accepted", room=late)
    assert proc.named("job_leases_released")
    assert proc.named("worker_closed")[-1]["released_jobs"] == []


async def test_connect_runs_a_room_the_job_casts_itself(
    tmp_path: Path, workers: list[WorkerProcess]
):
    """h: `python -m workers.multi connect --room R` (livekit's CLI builds that job itself, with
    no on_request): the job casts from the room's metadata and the room runs."""
    room = unique("connect")
    async with server_api() as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=room, metadata=SHORT_CHECKIN))
        proc = WorkerProcess.start(
            tmp_path, agent_name=unique("connect"), command=("connect", "--room", room)
        )
        workers.append(proc)
        events = await transcript_of(proc, room, timeout=120)
    assert proc.named("job_casts_itself")
    assert {c["role"] for c in events[0]["cast"]} == {"dispatcher", "driver"}
    assert events[-1]["reason"] == "end_conversation"


async def test_wrong_credentials_end_the_worker_at_once_with_one_line(tmp_path: Path):
    """13.9: a secret the server refuses is one clear line and a non-zero exit in seconds (not
    livekit's 16 retries and exit 0), and the secret is not printed."""
    wrong = "not-the-secret-XYZZY"
    proc = WorkerProcess.start(
        tmp_path, agent_name=unique("wrong"), name="wrong", LIVEKIT_API_SECRET=wrong
    )
    try:
        code = await proc.exited(timeout=30)
    finally:
        proc.kill()
    output = proc.log_path.read_text()
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.startswith("workers.multi:")]
    assert len(lines) == 1 and "LIVEKIT_API_SECRET" in lines[0], output
    assert wrong not in output


async def test_a_room_still_running_at_the_drain_timeout_ends_as_shutdown_at_once(
    tmp_path: Path, workers: list[WorkerProcess]
):
    """13.2: when the drain timeout runs out, livekit asks the job to stop and would cancel it
    15 s later; the floor ends at once instead, as `shutdown`, and the worker exits 0."""
    drain_s = 3
    proc = WorkerProcess.start(
        tmp_path,
        agent_name=unique("timeout"),
        name="timeout",
        command=("start", "--drain-timeout", str(drain_s)),
        CATALOG_PATH=str(one_room_catalog(tmp_path)),
    )
    workers.append(proc)
    await proc.ready()
    async with server_api() as lk:
        room, stopped_at = await signal_a_held_room(lk, proc, signal.SIGTERM)
        events = await transcript_of(proc, room, timeout=30)
        assert await proc.exited(timeout=30) == 0, proc.tail()
    ended = events[-1]
    assert ended["reason"] == "shutdown", ended
    assert ended["at"] - stopped_at <= drain_s + 2.0, ended["at"] - stopped_at


@contextlib.asynccontextmanager
async def workers_on_one_redis(
    tmp: Path, workers: list[WorkerProcess], prefix: str
) -> AsyncIterator[tuple[RedisServer, str]]:
    """Two ready workers (tim at most one room) on a redis-server of the test's own inside the
    private network; stopped at the end."""
    redis = start_redis_server()
    try:
        agent = unique(prefix)
        env = {"CATALOG_PATH": str(one_room_catalog(tmp)), "CAPACITY_URL": redis.url}
        for name in ("one", "two"):
            workers.append(WorkerProcess.start(tmp, agent_name=agent, name=name, **env))
        for w in workers:
            await w.ready()
        yield redis, agent
    finally:
        redis.stop()


async def test_two_workers_on_one_redis_never_put_a_persona_in_two_rooms(
    tmp_path: Path, workers: list[WorkerProcess]
):
    """16: two workers share one capacity in Redis (a redis-server of the test's own inside the
    private network). Tim may hold one room: while he holds it, a second room is refused by
    BOTH workers (each alone would have cast him), and once that room ends the next room is
    cast again."""
    async with workers_on_one_redis(tmp_path, workers, "redis") as (_, agent):
        async with server_api() as lk:
            held = unique("held")
            await dispatch(lk, agent, held, HOLD)
            holder = (await first_of(*(w.wait_for("job_accepted", room=held) for w in workers)))[0]
            refused = unique("refused")
            await dispatch(lk, agent, refused, HOLD)
            for w in workers:  # LiveKit offers the room to each worker in turn
                rejected = await w.wait_for("job_rejected", room=refused, timeout=30)
                assert rejected["problem"] == "no_cast"
            assert not any(w.named("job_accepted", room=refused) for w in workers)
            # the room runs (a room deleted while its job still connects ends only when the
            # connection attempt gives up: on a loaded host, past the wait below)
            await transcript_event(workers[holder], held, "utterance", timeout=60)
            await lk.room.delete_room(api.DeleteRoomRequest(room=held))
            await workers[holder].wait_for("job_leases_released", timeout=30)
            again = unique("again")
            await dispatch(lk, agent, again, HOLD)
            await first_of(*(w.wait_for("job_accepted", room=again) for w in workers))
            for name in (refused, again):
                await lk.room.delete_room(api.DeleteRoomRequest(room=name))


async def test_a_redis_restart_or_outage_neither_overbooks_nor_loses_a_room(
    tmp_path: Path, workers: list[WorkerProcess]
):
    """21.1 and 21.2, live: two workers on one Redis, tim at most one room. While a room
    holds tim, Redis restarts empty: a room dispatched at once is refused by both workers
    (no_cast: the holder put its lease back before any cast), never cast onto tim a second
    time. Then, tim free, Redis stops answering and a room is dispatched: it waits for Redis
    and is cast when Redis answers again (within CAPACITY_WAIT_S), not lost."""
    async with workers_on_one_redis(tmp_path, workers, "restart") as (redis, agent):
        async with server_api() as lk:
            held = unique("held")
            await dispatch(lk, agent, held, HOLD)
            accepted = (w.wait_for("job_accepted", room=held, timeout=60) for w in workers)
            holder = (await first_of(*accepted, within_s=60))[0]
            # the room runs (a room deleted while its job still connects ends only when the
            # connection attempt gives up)
            await transcript_event(workers[holder], held, "utterance", timeout=60)
            redis.stop()
            redis.start()  # empty: no persistence
            after = unique("after")
            await dispatch(lk, agent, after, HOLD)
            for w in workers:  # LiveKit offers the room to each worker in turn
                rejected = await w.wait_for("job_rejected", room=after, timeout=40)
                assert rejected["problem"] == "no_cast", rejected
            assert not any(w.named("job_accepted", room=after) for w in workers)
            await lk.room.delete_room(api.DeleteRoomRequest(room=held))
            await workers[holder].wait_for("job_leases_released", timeout=30)
            redis.pause()  # stops answering, loses nothing (a blip, a slow network)
            during = unique("during")
            await dispatch(lk, agent, during, HOLD)
            await first_of(*(w.wait_for("capacity_store_unavailable") for w in workers))
            redis.resume()
            cast = (w.wait_for("job_accepted", room=during, timeout=60) for w in workers)
            await first_of(*cast, within_s=60)
            for name in (after, during):
                await lk.room.delete_room(api.DeleteRoomRequest(room=name))


async def test_a_room_whose_worker_dies_ends_as_worker_lost(
    tmp_path: Path, workers: list[WorkerProcess]
):
    """21.5: the worker's main process killed outright (SIGKILL to its PID alone, as the OOM
    killer does): the job process notices at once, ends its room by its rules and writes the
    end, `outcome` and `room_ended` with reason `worker_lost`."""
    proc = WorkerProcess.start(tmp_path, agent_name=unique("lost"), name="lost")
    workers.append(proc)
    await proc.ready()
    async with server_api() as lk:
        room, killed_at = await signal_a_held_room(lk, proc, signal.SIGKILL)
        try:
            events = await transcript_of(proc, room, timeout=30)
        except TimeoutError:
            raise AssertionError(
                f"no room_ended; transcript so far: {current_events(proc, room)[-3:]}\n"
                + proc.tail()
            ) from None
        finally:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    assert [e["event"] for e in events[-2:]] == ["outcome", "room_ended"], events[-3:]
    ended = events[-1]
    assert ended["reason"] == "worker_lost", (ended, proc.tail())
    assert ended["at"] - killed_at <= 5.0, ended["at"] - killed_at
