"""One worker, a real livekit-server: what the server and the people in the room see."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import time
from pathlib import Path

import pytest
from livekit import api

from config.settings import PROJECT_ROOT
from tests.live.harness import (
    PYTHON,
    WorkerProcess,
    active_personas,
    agents_of,
    dispatch,
    human_token,
    joined,
    participants,
    server_api,
    transcript_event,
    transcript_of,
    unique,
    wait_participants,
    worker_env,
)
from workers.tokens import persona_identity

pytestmark = pytest.mark.live

AGENT = api.ParticipantInfo.Kind.AGENT


def dispatch_cli(worker: WorkerProcess, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m workers.dispatch ...` as a user runs it (outside the project, no .env)."""
    env = worker_env(worker.agent_name, tmp, PYTHONPATH=str(PROJECT_ROOT))
    return subprocess.run(
        [PYTHON, "-m", "workers.dispatch", *args, "--json"],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_dispatched_room_holds_exactly_the_cast(worker: WorkerProcess, tmp_path: Path):
    """a + b + e: `workers.dispatch` lands on the registered worker; the human joins with the
    printed token; the server shows one agent participant per persona with its identity, name,
    attributes and one voice track; when the caller leaves, every persona leaves and the
    worker's /stats shows nobody busy within 5 s."""
    room = unique("cast")
    done = dispatch_cli(
        worker, tmp_path, "inbound_support", "--identity", "caller-1", "--room", room
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    accepted = await worker.wait_for("job_accepted", room=room)
    cast: dict[str, str] = accepted["cast"]  # role -> persona id

    async with server_api() as lk:
        async with joined(printed["token"]) as human:
            people = await wait_participants(
                lk,
                room,
                lambda ps: (
                    len(agents_of(ps)) == len(cast)
                    and all(len(p.tracks) == 1 for p in agents_of(ps))
                ),
            )
            agents = {p.identity: p for p in agents_of(people)}
            assert human.local_participant.identity == "caller-1"
            job_id = accepted["job_id"]
            for role, persona_id in cast.items():
                identity = persona_identity(persona_id, room, job_id)  # unique to this job
                assert identity in agents, f"{identity} not in {sorted(agents)}"
                p = agents[identity]
                assert p.kind == AGENT
                assert p.attributes["role"] == role
                assert p.attributes["persona"] == persona_id
                assert p.attributes["campaign"] == "inbound-support"
                [track] = p.tracks
                assert track.type == api.TrackType.AUDIO
                assert track.name == f"voice_{persona_id}"
            assert len(agents) == len(cast)
            assert {p.identity for p in people} == {*agents, "caller-1"}
            # the plan is not public: no scenario context, script or selector reason
            for p in people:
                seen = p.metadata + json.dumps(dict(p.attributes))
                for secret in ("Jamie Rivera", "BC-55102", "Thanks for calling", "least loaded"):
                    assert secret not in seen, (p.identity, secret)
            names = {p.identity: p.name for p in people}
            assert all(names[persona_identity(pid, room, job_id)] for pid in cast.values())
            # the caller hears the greeting before hanging up (one who leaves before the job
            # has seen them is never known to it; the server closes the empty room later)
            await transcript_event(worker, room, "utterance")
        # the caller hung up
        left_at = time.monotonic()
        await wait_participants(lk, room, lambda ps: not agents_of(ps), timeout=5)
        async with asyncio.timeout(5):
            while await active_personas(worker):
                await asyncio.sleep(0.1)
        assert time.monotonic() - left_at <= 5
    events = await transcript_of(worker, room)
    assert events[-1]["reason"] == "humans_left"


async def test_deleting_the_room_ends_it_as_shutdown(worker: WorkerProcess):
    """e: the server deleting the room reaches the floor within 2 s, as `shutdown`."""
    room = unique("delete")
    async with server_api() as lk:
        await dispatch(lk, worker.agent_name, room, json.dumps({"scenario": "inbound_support"}))
        async with joined(human_token(room, "caller-2")):
            await transcript_event(worker, room, "utterance")  # the floor is running
            deleted_at = time.time()
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
            events = await transcript_of(worker, room, timeout=10)
    ended = events[-1]
    assert ended["reason"] == "shutdown", ended
    assert ended["at"] - deleted_at <= 2.0, f"ended {ended['at'] - deleted_at:.2f} s after"


async def test_every_human_is_heard_in_chat(worker: WorkerProcess):
    """e + issue 13.4: typed chat from two humans both reaches the floor."""
    room = unique("two")
    async with server_api() as lk:
        await dispatch(lk, worker.agent_name, room, json.dumps({"scenario": "inbound_support"}))
        async with (
            joined(human_token(room, "caller-a")) as a,
            joined(human_token(room, "caller-b")) as b,
        ):
            await transcript_event(worker, room, "utterance")  # the floor is running
            # the persona that hears the humans: the scenario's lead (support), whatever the
            # order the server lists its participants in
            lead = next(
                p
                for p in agents_of(await participants(lk, room))
                if p.attributes.get("role") == "support"
            )
            # each waits until its message is delivered to the lead persona's connection
            await a.local_participant.send_text(
                "Hi, my blender arrived with a cracked jar.",
                topic="lk.chat",
                destination_identities=[lead.identity],
            )
            await b.local_participant.send_text(
                "I am on the same account, and my order is late too.",
                topic="lk.chat",
                destination_identities=[lead.identity],
            )
            async with asyncio.timeout(15):
                while True:
                    heard = {
                        e["identity"]
                        for path in worker.transcripts_of(room)
                        for e in map(json.loads, path.read_text().splitlines())
                        if e["event"] == "human"
                    }
                    if {"caller-a", "caller-b"} <= heard:
                        break
                    await asyncio.sleep(0.1)


async def test_a_chat_message_past_the_limit_is_heard_cut_before_it_ends(worker: WorkerProcess):
    """21.5: typed chat is read up to the human-line limit and no further: a message still
    streaming (its sender has not closed it, and may never) reaches the floor cut, at once."""
    room = unique("long-chat")
    async with server_api() as lk:
        await dispatch(lk, worker.agent_name, room, json.dumps({"scenario": "inbound_support"}))
        async with joined(human_token(room, "caller-long")) as caller:
            # the floor is running (a module's first room waits for a cold job process too)
            await transcript_event(worker, room, "utterance", timeout=60)
            writer = await caller.local_participant.stream_text(topic="lk.chat")
            try:
                for _ in range(12):  # 12,000 characters, past the 8,000 the stage reads
                    await writer.write("my order is late " * 58 + "and ")
                heard = await transcript_event(worker, room, "human", timeout=15)
            finally:
                await writer.aclose()
    assert heard["identity"] == "caller-long"
    assert heard["text"].startswith("my order is late") and heard["text"].endswith("[cut]")


BAD_METADATA = {
    "not_json": "this is not json",
    "unknown_scenario": json.dumps({"scenario": "no_such_scenario"}),
    "bad_scenario_name": json.dumps({"scenario": "../config/catalog"}),
    "too_large": json.dumps({"scenario": "dispatch_checkin", "pad": "x" * 70_000}),
}


async def test_bad_metadata_is_rejected_and_the_worker_serves_on(worker: WorkerProcess):
    """f: no agent joins a room dispatched with bad metadata, `job_rejected` names the problem,
    and the same worker then serves a good dispatch."""
    async with server_api() as lk:
        for problem, metadata in BAD_METADATA.items():
            room = unique(f"bad-{problem}".replace("_", "-"))
            await lk.room.create_room(api.CreateRoomRequest(name=room))
            await dispatch(lk, worker.agent_name, room, metadata)
            rejected = await worker.wait_for("job_rejected", room=room)
            assert rejected["problem"] == problem
            assert rejected["bad_metadata"] is True
            assert agents_of(await participants(lk, room)) == []
        room = unique("good")
        await dispatch(lk, worker.agent_name, room, json.dumps({"scenario": "dispatch_checkin"}))
        await transcript_event(worker, room, "utterance")
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))


async def test_the_readme_dispatch_recipe_casts_the_room(worker: WorkerProcess):
    """i: the README's `lk dispatch create --agent-name ... --metadata '{"scenario": ...}'`:
    a dispatch to a room nobody created, with the name form of the metadata. (The same
    CreateAgentDispatch request `lk` sends; see tests/live/README.md for why `lk` itself is not
    built here.)"""
    room = unique("recipe")
    async with server_api() as lk:
        await dispatch(lk, worker.agent_name, room, '{"scenario": "dispatch_checkin"}')
        first = await transcript_event(worker, room, "utterance")
        people = await participants(lk, room)
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    started = await transcript_event(worker, room, "room_started")
    assert {c["role"] for c in started["cast"]} == {"dispatcher", "driver"}
    assert {p.identity for p in agents_of(people)} == {c["identity"] for c in started["cast"]}
    assert first["role"] == "dispatcher" and "HDX-2478" in first["text"]


async def test_a_required_persona_dropped_by_the_server_ends_the_room(worker: WorkerProcess):
    """13.12: the server removing a required persona's own connection is reported and ends
    the room (persona_error), rather than the floor waiting on a persona that is gone."""
    room = unique("dropped")
    async with server_api() as lk:
        await dispatch(lk, worker.agent_name, room, json.dumps({"scenario": "dispatch_checkin"}))
        started = await transcript_event(worker, room, "room_started")
        await transcript_event(worker, room, "utterance")
        driver = next(c for c in started["cast"] if c["role"] == "driver")
        await lk.room.remove_participant(
            api.RoomParticipantIdentity(room=room, identity=driver["identity"])
        )
        events = await transcript_of(worker, room, timeout=20)
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    lost = [e for e in events if e["event"] == "persona_lost"]
    assert lost and lost[0]["persona"] == driver["persona"] and lost[0]["required"] is True
    assert events[-1]["reason"] == "persona_error"
    assert "left the room" in events[-1]["detail"]


async def test_the_same_room_dispatched_twice_keeps_every_persona(worker: WorkerProcess):
    """13.12: two jobs in one room cast Tim and Chris twice (max_concurrent 3): each job's
    personas join with identities of their own, so none replaces the other job's, and all four
    participants are in the room together."""
    room = unique("twice")
    async with server_api() as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=room))
        scenario = json.dumps({"scenario": "dispatch_checkin"})
        await dispatch(lk, worker.agent_name, room, scenario)
        await dispatch(lk, worker.agent_name, room, scenario)
        async with asyncio.timeout(30):
            while len(worker.named("job_accepted", room=room)) < 2:
                await asyncio.sleep(0.05)
        jobs = {e["job_id"] for e in worker.named("job_accepted", room=room)}
        expected = {persona_identity(p, room, j) for p in ("tim", "chris") for j in jobs}
        people = await wait_participants(
            lk, room, lambda ps: {p.identity for p in agents_of(ps)} >= expected
        )
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    assert len(jobs) == 2 and len(expected) == 4
    assert {p.identity for p in agents_of(people)} == expected


async def test_a_rooms_worker_log_has_no_line_repeated_per_persona_per_event(
    workers: list[WorkerProcess], tmp_path: Path
):
    """Four personas talk for eight turns on a worker of its own: its log has no line that
    comes once for each persona for each thing said (another persona's session or
    transcription stream, unread), no warning printed by every job process, and no PyJWT
    warning about the dev key's short secret."""
    worker = WorkerProcess.start(tmp_path, agent_name=unique("quiet"), name="quiet")
    workers.append(worker)
    await worker.ready()
    room = unique("quiet")
    async with server_api() as lk:
        await dispatch(lk, worker.agent_name, room, json.dumps({"scenario": "all_four"}))
        events = await transcript_of(worker, room, timeout=200)
    await worker.wait_for("job_room_ended", room=room)
    said = sum(e["event"] == "utterance" for e in events)
    personas = len(events[0]["cast"])
    assert personas == 4 and said >= 6

    lines = worker.log_path.read_text(errors="replace").splitlines()
    raw = [line for line in lines if not line.startswith("{")]
    assert not [line for line in raw if "Warning" in line], "\n".join(raw)
    # structlog's lines carry `event`, livekit's own JSON lines `message`
    logged = collections.Counter(e.get("event") or e.get("message") for e in worker.events())
    assert not [text for text in logged if str(text).startswith("ignoring")], logged
    # a line per persona per line said would come (personas - 1) * said times at least
    repeated = {text: n for text, n in logged.items() if n >= said}
    assert repeated == {}, repeated
