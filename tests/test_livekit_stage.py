"""LiveKit stage pieces that can be checked offline: tokens, RoomOptions, join teardown."""

from __future__ import annotations

import asyncio
import time
import typing
from types import SimpleNamespace

import pytest
from livekit import api, rtc
from livekit.agents.types import TOPIC_TRANSCRIPTION

from config.catalog import Catalog
from config.scenario import CastSlot
from workers.room.seat import Seat
from workers.room.stage import StageCast, StageError, StageEvents
from workers.room.stage.livekit import (
    SESSION_STREAM_TOPIC,
    LiveHumans,
    LiveKitStage,
    hear_humans_only,
    is_human,
    read_chat,
    room_options,
)
from workers.tokens import (
    check_human_identity,
    mint_human_token,
    mint_persona_token,
    persona_identity,
)

KEY, SECRET = "devkey", "devsecret-devsecret-devsecret-0123"


def test_persona_token_decodes_with_the_right_claims(catalog):
    tim = catalog.persona("tim")
    before = time.time()
    token = mint_persona_token(
        api_key=KEY, api_secret=SECRET, room="room-7", persona=tim, campaign="freight-dispatch"
    )
    claims = api.TokenVerifier(KEY, SECRET).verify(token)
    assert claims.identity == "agent_tim_room-7"
    assert claims.name == "Tim"
    assert claims.kind == "agent"
    assert claims.attributes == {
        "role": "dispatcher",
        "persona": "tim",
        "campaign": "freight-dispatch",
    }
    grants = claims.video
    assert grants is not None
    assert grants.room_join is True and grants.room == "room-7" and grants.agent
    assert not grants.room_admin and not grants.room_create and not grants.room_list
    raw = api.TokenVerifier(KEY, SECRET).verify(token, verify_signature=True)
    assert raw is not None
    import jwt

    exp = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_aud": False})["exp"]
    assert before + 60 < exp <= before + 15 * 60  # bounded TTL


def test_persona_identities_are_unique_per_persona_and_room():
    ids = {persona_identity(p, r) for p in ("tim", "chris") for r in ("a", "b", "a b", "a/b")}
    assert len(ids) == 8
    assert all(i.startswith("agent_") and len(i) <= 96 for i in ids)
    long = persona_identity("tim", "x" * 300)
    assert len(long) <= 96 and long != persona_identity("tim", "x" * 299)


def test_the_same_room_dispatched_twice_gets_distinct_persona_identities(catalog):
    """Two jobs in one room: one persona's two participants must not replace each other;
    with no job (the simulation) the identity stays `agent_<persona>_<room>`."""
    first, second = (persona_identity("tim", "room-1", job) for job in ("AJ_one", "AJ_two"))
    assert first != second and first.startswith("agent_tim_room-1_")
    assert persona_identity("tim", "room-1", "AJ_one") == first  # stable for a job
    assert persona_identity("tim", "room-1") == "agent_tim_room-1"
    # an extra persona's token carries its seat's identity, job part included
    token = mint_persona_token(
        api_key=KEY,
        api_secret=SECRET,
        room="room-1",
        persona=catalog.persona("chris"),
        campaign="freight-dispatch",
        identity=persona_identity("chris", "room-1", "AJ_two"),
    )
    claims = api.TokenVerifier(KEY, SECRET).verify(token)
    assert claims.identity == persona_identity("chris", "room-1", "AJ_two")


def test_human_tokens_refuse_the_persona_prefix():
    with pytest.raises(ValueError, match="reserved for personas"):
        mint_human_token(api_key=KEY, api_secret=SECRET, room="r", identity="agent_mallory")
    with pytest.raises(ValueError, match="required"):
        check_human_identity("   ")
    claims = api.TokenVerifier(KEY, SECRET).verify(
        mint_human_token(api_key=KEY, api_secret=SECRET, room="r", identity="caller-1")
    )
    assert claims.video is not None
    assert claims.identity == "caller-1" and claims.video.room == "r" and claims.kind != "agent"


def test_room_options_for_the_listening_persona_and_the_others(catalog):
    tim = catalog.persona("tim")
    lead = room_options(tim, hears_humans=True)
    assert lead.close_on_disconnect is False
    # the voice track is the stage's own (published at join), not RoomIO's
    assert lead.get_audio_output_options() is None
    assert lead.get_audio_input_options() is not None
    # typed chat is read by the stage itself, from every human (RoomIO's only hears one)
    assert lead.get_text_input_options() is None
    # only humans are linked: personas hear each other through the floor's text relay
    assert rtc.ParticipantKind.PARTICIPANT_KIND_AGENT not in (lead.participant_kinds or [])
    other = room_options(catalog.persona("chris"), hears_humans=False)
    assert other.get_audio_input_options() is None
    assert other.get_text_input_options() is None
    assert other.get_audio_output_options() is None
    assert other.close_on_disconnect is False


class FakeRoom:
    """Stands in for rtc.Room: records connects and disconnects."""

    instances: list[FakeRoom] = []

    def __init__(self) -> None:
        self.connected = False
        self.disconnected = False
        self.name = "room-9"
        self.remote_participants: dict = {}
        self.stream_topics: list[str] = []
        FakeRoom.instances.append(self)

    def on(self, *_a, **_k):
        return None

    def register_byte_stream_handler(self, topic: str, handler) -> None:
        self.stream_topics.append(topic)

    def register_text_stream_handler(self, topic: str, handler) -> None:
        self.stream_topics.append(topic)

    async def disconnect(self) -> None:
        self.disconnected = True

    def isconnected(self) -> bool:
        return self.connected and not self.disconnected


class FakeCtx:
    def __init__(self) -> None:
        self.room = FakeRoom()
        self.job = SimpleNamespace(room=SimpleNamespace(name="room-9"))
        self.shutdown_callbacks: list = []

    def add_shutdown_callback(self, cb) -> None:
        self.shutdown_callbacks.append(cb)

    def make_session_report(self, session):
        raise AssertionError("no session was started")


def _stage_with(ctx: FakeCtx, connect) -> LiveKitStage:
    return LiveKitStage(
        ctx,  # type: ignore[arg-type]  # FakeCtx stands in for the JobContext
        url="ws://x",
        api_key=KEY,
        api_secret=SECRET,
        campaign="mixed-ops",
        connect=connect,
        room_factory=FakeRoom,  # type: ignore[arg-type]  # FakeRoom stands in for rtc.Room
    )


def _seat(catalog: Catalog, pid: str, role: str) -> Seat:
    return Seat(catalog.persona(pid), CastSlot(role=role), "test", persona_identity(pid, "room-9"))


def _cast(seats: list[Seat], listener: str = "tim") -> StageCast:
    return StageCast(
        seats=seats,
        agents={s.persona.id: None for s in seats},  # type: ignore[misc]  # never started
        models_for=lambda p: pytest.fail("no session expected"),
        own="tim",
        listener=listener,
    )


async def test_failed_join_tears_down_every_connection(catalog: Catalog) -> None:
    FakeRoom.instances.clear()
    ctx = FakeCtx()
    connected: list[str] = []

    async def connect(room, url, token):
        identity = api.TokenVerifier(KEY, SECRET).verify(token).identity
        if "maria" in identity:
            raise ConnectionError("server refused the join")
        await asyncio.sleep(0)
        room.connected = True
        connected.append(identity)

    stage = _stage_with(ctx, connect)
    assert ctx.shutdown_callbacks == [stage.close]  # extra rooms close when the job shuts down
    cast = _cast(
        [
            _seat(catalog, "tim", "dispatcher"),
            _seat(catalog, "alex", "support"),
            _seat(catalog, "maria", "driver"),
        ]
    )
    with pytest.raises(StageError, match="maria"):
        async with asyncio.timeout(5):
            await stage.open(cast, StageEvents.ignored())
    extra = FakeRoom.instances[1:]
    assert len(extra) == 2 and all(r.disconnected for r in extra)
    assert connected == ["agent_alex_room-9"]
    assert not ctx.room.disconnected  # the job's own room belongs to the framework


async def test_a_persona_joined_early_is_taken_up_by_open_not_joined_again(
    catalog: Catalog,
) -> None:
    """join_early connects the other personas while the job's own connection is being made;
    open uses those connections (one connect each), and only joins the ones not started."""
    FakeRoom.instances.clear()
    ctx = FakeCtx()
    connects: list[str] = []
    listening: dict[str, bool] = {}
    first = asyncio.Event()

    async def connect(room, url, token):
        claims = api.TokenVerifier(KEY, SECRET).verify(token)
        connects.append(claims.identity)
        first.set()
        listening[claims.identity] = bool(claims.video and claims.video.can_subscribe)
        if "maria" in claims.identity:
            raise ConnectionError("server refused the join")  # ends open before any session
        room.connected = True

    stage = _stage_with(ctx, connect)
    tim, alex, maria = (
        _seat(catalog, "tim", "dispatcher"),
        _seat(catalog, "alex", "support"),
        _seat(catalog, "maria", "driver"),
    )
    stage.join_early([alex], listener="alex")
    async with asyncio.timeout(5):
        await first.wait()  # connecting before open is even called
    cast = _cast([tim, alex, maria], listener="alex")
    with pytest.raises(StageError, match="maria"):
        async with asyncio.timeout(5):
            await stage.open(cast, StageEvents.ignored())
    assert connects == ["agent_alex_room-9", "agent_maria_room-9"]  # alex once, early
    assert listening["agent_alex_room-9"] is True  # joined as the listener it is
    assert all(r.disconnected for r in FakeRoom.instances[1:])


async def test_an_early_join_the_room_never_takes_up_is_cancelled_and_disconnected(
    catalog: Catalog,
) -> None:
    FakeRoom.instances.clear()
    ctx = FakeCtx()
    started = asyncio.Event()

    async def connect(room, url, token):
        started.set()
        await asyncio.Event().wait()  # a server that never answers

    stage = _stage_with(ctx, connect)
    stage.join_early([_seat(catalog, "alex", "support")], listener="tim")
    async with asyncio.timeout(5):
        await started.wait()
        await stage.close()  # the job ended while still joining
    early = FakeRoom.instances[1]
    assert early.disconnected and not early.connected


async def test_a_persona_that_lost_its_early_connection_fails_the_open(catalog: Catalog) -> None:
    FakeRoom.instances.clear()
    ctx = FakeCtx()
    connected = asyncio.Event()

    async def connect(room, url, token):
        room.connected = True
        connected.set()

    stage = _stage_with(ctx, connect)
    alex = _seat(catalog, "alex", "support")
    stage.join_early([alex], listener="tim")
    async with asyncio.timeout(5):
        await connected.wait()
    FakeRoom.instances[1].connected = False  # the server dropped it before the room opened
    with pytest.raises(StageError, match="alex lost its connection"):
        async with asyncio.timeout(5):
            await stage.open(
                _cast([_seat(catalog, "tim", "dispatcher"), alex]), StageEvents.ignored()
            )


def test_is_human_skips_agents_and_persona_identities():
    def P(identity: str, kind: rtc.ParticipantKind.ValueType) -> rtc.RemoteParticipant:
        # is_human reads only these two fields
        return typing.cast(rtc.RemoteParticipant, SimpleNamespace(identity=identity, kind=kind))

    std = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
    assert is_human(P("caller-1", std))
    assert not is_human(P("agent_tim_r", std))
    assert not is_human(P("other-bot", rtc.ParticipantKind.PARTICIPANT_KIND_AGENT))
    # the kinds RoomIO links: people, phone callers, connectors; not egress or ingress streams
    assert is_human(P("+15550100", rtc.ParticipantKind.PARTICIPANT_KIND_SIP))
    assert is_human(P("bridge", rtc.ParticipantKind.PARTICIPANT_KIND_CONNECTOR))
    assert not is_human(P("recorder", rtc.ParticipantKind.PARTICIPANT_KIND_EGRESS))
    assert not is_human(P("rtmp-in", rtc.ParticipantKind.PARTICIPANT_KIND_INGRESS))


async def test_a_session_without_vad_gets_none_not_the_frameworks_default():
    from agents.models import SessionModels
    from tests.fakes import FakeLLM
    from workers.room.stage import make_session

    session = make_session(SessionModels(llm=FakeLLM()))
    assert session.vad is None and session._using_default_vad is False


async def test_a_listening_session_ends_a_turn_after_the_workers_end_of_speech_silence():
    """The turn ends max(VAD silence, min_delay) after the speech: both are the tuned silence,
    not livekit's 0.55 s and 0.5 s."""
    from livekit.plugins import silero

    from agents.models import END_OF_SPEECH_SILENCE_S, SessionModels, load_vad
    from tests.fakes import FakeLLM
    from workers.room.stage import make_session

    vad = load_vad()
    session = make_session(SessionModels(llm=FakeLLM(), vad=vad))
    assert isinstance(vad, silero.VAD)
    assert vad._opts.min_silence_duration == END_OF_SPEECH_SILENCE_S < 0.55  # silero's options
    assert session.options.endpointing["min_delay"] == END_OF_SPEECH_SILENCE_S


async def test_the_listening_persona_hands_human_turns_to_the_floor(catalog, scenarios_dir):
    from livekit.agents import llm

    from agents.persona import RecordingFloor, build_agent
    from agents.room_data import RoomData
    from config.scenario import load_scenario

    scenario = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    cast = {"dispatcher": catalog.persona("tim"), "driver": catalog.persona("chris")}
    agent = build_agent(
        cast["dispatcher"],
        room_data=RoomData(scenario, catalog),
        cast=cast,
        floor=RecordingFloor(),
    )
    message = llm.ChatMessage(role="user", content=["Tim, is the load on time?"])
    # without a floor listening, the framework replies as usual (no StopResponse)
    await agent.on_user_turn_completed(llm.ChatContext(), message)
    heard: list[str] = []
    agent = build_agent(
        cast["dispatcher"],
        room_data=RoomData(scenario, catalog),
        cast=cast,
        floor=RecordingFloor(),
        on_human_turn=heard.append,
    )
    with pytest.raises(llm.StopResponse):
        await agent.on_user_turn_completed(llm.ChatContext(), message)
    assert heard == ["Tim, is the load on time?"]


async def test_live_humans_join_speak_and_leave():
    humans = LiveHumans()
    assert not humans.present() and not humans.left()  # nobody yet: not "everyone left"
    humans.joined("caller-1")
    humans.said("caller-1", "hello")
    # live humans speak whenever they like, not only at a pause between rounds
    line = humans.next_line(pause=False)
    assert humans.present() and line is not None and line.text == "hello"
    assert humans.next_line(pause=True) is None
    waiting = asyncio.ensure_future(humans.wait_line())
    await asyncio.sleep(0)
    humans.said("caller-1", "are you there?")
    heard = await asyncio.wait_for(waiting, 5)
    assert heard is not None and heard.text == "are you there?"
    waiting = asyncio.ensure_future(humans.wait_line())
    await asyncio.sleep(0)
    humans.gone("caller-1")
    assert await asyncio.wait_for(waiting, 5) is None
    assert humans.left()


async def test_the_linked_human_falls_back_when_there_is_no_room():
    from agents.models import SessionModels
    from tests.fakes import FakeLLM
    from workers.room.stage import make_session

    session = make_session(SessionModels(llm=FakeLLM()))
    assert LiveKitStage._linked_human(session) == "human"


async def test_live_humans_wait_for_a_caller_who_has_not_joined_yet():
    humans = LiveHumans()
    waiting = asyncio.ensure_future(humans.wait_line())
    await asyncio.sleep(0)
    assert not waiting.done()  # nobody has come yet: that is not "everyone left"
    humans.joined("caller-7")
    humans.said("caller-7", "hi, anyone there?")
    heard = await asyncio.wait_for(waiting, 5)
    assert heard is not None and heard.identity == "caller-7"
    # closing the room wakes a waiting floor
    waiting = asyncio.ensure_future(humans.wait_line())
    await asyncio.sleep(0)
    humans.close()
    assert await asyncio.wait_for(waiting, 5) is None


async def test_open_starts_each_persona_on_its_own_connection_and_reports_each(
    catalog, scenarios_dir
):
    """The LiveKit stage as far as it goes offline: real sessions started on unconnected
    rtc.Rooms inside livekit's fake job context (the network join is injected)."""
    from livekit.agents.testing import fake_job_context

    from agents.models import SessionModels
    from agents.persona import RecordingFloor, build_agent
    from agents.room_data import RoomData
    from config.scenario import load_scenario
    from tests.fakes import FakeLLM

    scenario = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    cast = {"dispatcher": catalog.persona("tim"), "driver": catalog.persona("chris")}
    room_data = RoomData(scenario, catalog)
    joined: list[tuple[rtc.Room, str]] = []

    async def connect(room, url, token):
        joined.append((room, api.TokenVerifier(KEY, SECRET).verify(token).identity))

    with fake_job_context(room=rtc.Room()) as ctx:
        stage = LiveKitStage(
            ctx,
            url="ws://x",
            api_key=KEY,
            api_secret=SECRET,
            campaign=scenario.campaign,
            connect=connect,
        )
        seats = [
            Seat(p, next(s for s in scenario.cast if s.role == role), "t", f"agent_{p.id}_r")
            for role, p in cast.items()
        ]
        stage_cast = StageCast(
            seats=seats,
            agents={
                p.id: build_agent(p, room_data=room_data, cast=cast, floor=RecordingFloor())
                for p in cast.values()
            },
            models_for=lambda p: SessionModels(llm=FakeLLM()),
            own="tim",
            listener="tim",
        )
        async with asyncio.timeout(20):
            sessions = await stage.open(stage_cast, StageEvents.ignored())
            assert sorted(sessions) == ["chris", "tim"]
            # the first persona uses the job's own room; the other joined with its own token
            assert [identity for _, identity in joined] == ["agent_chris_r"]  # its seat's
            assert joined[0][0] is not ctx.room
            # The opener's session is the job's primary: livekit reads the session stream on
            # its connection; every other persona's connection drops it where it arrives.
            assert ctx.primary_session is sessions["tim"]
            for room in (ctx.room, joined[0][0]):
                with pytest.raises(ValueError, match="already set"):
                    room.register_byte_stream_handler(SESSION_STREAM_TOPIC, lambda r, i: None)
                # nobody reads the personas' transcriptions: closed where they arrive
                with pytest.raises(ValueError, match="already set"):
                    room.register_text_stream_handler(TOPIC_TRANSCRIPTION, lambda r, i: None)
            await stage.close()
    reports = stage.session_reports()
    assert sorted(reports) == ["chris", "tim"]  # a report for every persona
    assert reports["tim"] and reports["chris"]


class _Publication:
    def __init__(self, kind: rtc.TrackKind.ValueType) -> None:
        self.kind = kind
        self.subscribed = False

    def set_subscribed(self, subscribed: bool) -> None:
        self.subscribed = subscribed


class _Participant:
    def __init__(self, identity: str, kind: rtc.ParticipantKind.ValueType, *pubs) -> None:
        self.identity = identity
        self.kind = kind
        self.track_publications = {str(i): p for i, p in enumerate(pubs)}


class _ListeningRoom:
    def __init__(self, *participants: _Participant) -> None:
        self.remote_participants = {p.identity: p for p in participants}
        self.handlers: dict = {}

    def on(self, event, handler):
        self.handlers[event] = handler


def test_the_listening_persona_subscribes_to_human_audio_only():
    audio, video = rtc.TrackKind.KIND_AUDIO, rtc.TrackKind.KIND_VIDEO
    standard, agent = (
        rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
        rtc.ParticipantKind.PARTICIPANT_KIND_AGENT,
    )
    caller_voice, caller_camera = _Publication(audio), _Publication(video)
    persona_voice = _Publication(audio)
    room = _ListeningRoom(
        _Participant("caller-1", standard, caller_voice, caller_camera),
        _Participant("agent_chris_r", agent, persona_voice),
    )
    hear_humans_only(room)  # type: ignore[arg-type]  # _ListeningRoom stands in for rtc.Room
    assert caller_voice.subscribed and not caller_camera.subscribed
    assert not persona_voice.subscribed
    # and as tracks are published later
    late_human, late_persona = _Publication(audio), _Publication(audio)
    room.handlers["track_published"](late_human, _Participant("caller-2", standard))
    room.handlers["track_published"](late_persona, _Participant("agent_sam_r", agent))
    assert late_human.subscribed and not late_persona.subscribed


async def test_a_realtime_leads_own_transcript_is_marked_as_heard_by_it(catalog, scenarios_dir):
    """A realtime model hears the human itself: the stage marks the line as heard by that
    persona, so the floor does not add it to the lead's context a second time. (The model is
    constructed only, never connected: no key is used.)"""
    from livekit.agents import AgentSession
    from livekit.agents.voice.events import UserInputTranscribedEvent
    from livekit.plugins import openai

    stage = LiveKitStage(
        FakeCtx(),  # type: ignore[arg-type]  # FakeCtx stands in for the JobContext
        url="ws://x",
        api_key=KEY,
        api_secret=SECRET,
        campaign="freight-dispatch",
    )
    session: AgentSession = AgentSession(llm=openai.realtime.RealtimeModel(api_key="sk-not-used"))
    tim = catalog.persona("tim")
    seat = Seat(tim, CastSlot(role="dispatcher"), "test", "agent_tim_r")
    stage._listen(session, seat, StageEvents.ignored())
    session.emit(
        "user_input_transcribed", UserInputTranscribedEvent(transcript="x", is_final=False)
    )
    session.emit(
        "user_input_transcribed", UserInputTranscribedEvent(transcript=" On time? ", is_final=True)
    )
    line = stage.humans.next_line(pause=False)
    assert line is not None and (line.text, line.heard_by) == ("On time?", "tim")
    assert stage.humans.next_line(pause=False) is None  # the interim transcript was not a line


class _EndlessChat:
    """A typed message whose sender never stops: counts the chunks taken, and the close."""

    def __init__(self, chunk: str) -> None:
        self.chunk, self.taken, self.closed = chunk, 0, False

    def __aiter__(self) -> _EndlessChat:
        return self

    async def __anext__(self) -> str:
        if self.closed:
            raise StopAsyncIteration
        self.taken += 1
        return self.chunk

    def close(self) -> None:
        self.closed = True


async def test_chat_is_read_up_to_the_limit_and_no_further():
    """21.5: reading stops one character past the limit, and the reader is closed, however
    much the sender still sends."""
    reader = _EndlessChat("x" * 300)
    text = await asyncio.wait_for(read_chat(reader, limit=1000), 5)  # type: ignore[arg-type]  # a stand-in reader
    assert len(text) == 1001 and reader.taken == 4 and reader.closed


async def test_a_short_chat_message_is_read_whole():
    async def two_chunks():
        yield "hello "
        yield "there"

    class Two:
        def __init__(self) -> None:
            self.closed = False
            self._it = two_chunks()

        def __aiter__(self):
            return self._it

        def close(self) -> None:
            self.closed = True

    two = Two()
    assert await read_chat(two) == "hello there"  # type: ignore[arg-type]  # a stand-in reader
    assert two.closed
