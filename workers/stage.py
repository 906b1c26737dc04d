"""Where a cast's sessions run.

`LocalStage`: every persona's AgentSession in-process with no room (text in, text out): tests
and `workers.simulate`. `LiveKitStage`: every persona its own participant in a real room: the
first on the job's `ctx.room`, each other on its own `rtc.Room` joined with a token minted for
it. Everything above (floor, relay, hand-over, transcript) is the same code for both.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.llm import RealtimeModel
from livekit.agents.types import TOPIC_CHAT
from livekit.agents.voice import room_io
from livekit.agents.voice.turn import TurnHandlingOptions

from agents.models import SessionModels
from config.catalog import Persona
from config.logging import get_logger
from config.scenario import CastSlot
from workers.floor import Humans, LiveHumans, ScriptedHumans
from workers.persona_audio import persona_audio_output
from workers.tokens import AGENT_IDENTITY_PREFIX, mint_persona_token

log = get_logger("workers.stage")


class StageError(RuntimeError):
    """A required persona could not start or join; the whole cast was torn down."""


@dataclass(frozen=True)
class Seat:
    """One persona's place in a room: who, which slot, why it was chosen, its identity."""

    persona: Persona
    slot: CastSlot
    reason: str
    identity: str


@dataclass
class StageEntry:
    seat: Seat
    agent: Any  # agents.persona.PersonaAgent
    models: Callable[[], SessionModels]  # built inside the stage so a failure tears down cleanly
    hears_humans: bool = False


def make_session(models: SessionModels) -> AgentSession:
    """The AgentSession for one persona. `vad=None` is passed explicitly: left out, the
    framework would build its own VAD. With no VAD, turn detection is off: the floor decides
    who speaks, and only the persona that hears humans needs VAD.

    With a VAD, turn detection is the VAD's end of speech, chosen here: livekit's default would
    be its local end-of-turn model (~244 MB a process). The floor, not the framework, decides
    who answers a human, so no reply is generated ahead of it either (preemptive generation
    would also spend an offline persona's script lines)."""
    kwargs: dict[str, Any] = models.session_kwargs()
    if models.vad is None:
        kwargs["turn_handling"] = TurnHandlingOptions(turn_detection=None)
    else:
        kwargs["turn_handling"] = TurnHandlingOptions(
            turn_detection="vad", preemptive_generation={"enabled": False}
        )
        # At close, livekit waits for a half-heard human line (2 s by default): the floor has
        # ended by then and would never answer it, so the room need not wait for it.
        kwargs["session_close_transcript_timeout"] = 0.2
    return AgentSession(**kwargs)


class Stage(ABC):
    humans: Humans
    # Set by the room runner: called once when the stage starts closing, so a shutdown from
    # outside (the job draining) ends the floor as "shutdown" before the sessions go away.
    on_close: Callable[[], None] | None = None
    # Set by the room runner: a human started speaking (the LiveKit stage's listener calls it;
    # on the local stage humans only speak between turns).
    on_human_speaking: Callable[[], None] | None = None
    # Set by the room runner: a persona's connection was dropped (persona id, required seat).
    on_persona_lost: Callable[[str, bool], None] | None = None

    def stop(self) -> None:
        """Asked to stop from outside (the job's stop signal): the floor ends as `shutdown`;
        close() follows from the room runner."""
        self._closing()

    def _closing(self) -> None:
        callback, self.on_close = self.on_close, None
        if callback is not None:
            callback()

    @abstractmethod
    async def open(self, entries: Sequence[StageEntry]) -> list[AgentSession | None]:
        """Start every persona; all-or-nothing for required seats (optional ones that fail
        come back as None). On a required failure everything started is closed and
        StageError raised."""

    @abstractmethod
    async def close(self) -> None:
        """Close every session and connection. Idempotent."""


async def _close_sessions(sessions: Sequence[AgentSession]) -> None:
    results = await asyncio.gather(*(s.aclose() for s in sessions), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            log.warning("session_close_failed", error=repr(r))


def _raise_if_required_failed(entries: Sequence[StageEntry], results: Sequence[Any]) -> None:
    for entry, result in zip(entries, results, strict=True):
        if isinstance(result, BaseException):
            log.error(
                "persona_start_failed",
                persona=entry.seat.persona.id,
                required=entry.seat.slot.required,
                error=repr(result),
            )
    failed = [
        (e, r)
        for e, r in zip(entries, results, strict=True)
        if isinstance(r, BaseException) and e.seat.slot.required
    ]
    if failed:
        entry, error = failed[0]
        raise StageError(
            f"{entry.seat.persona.id} ({entry.seat.slot.role}) failed to start: {error!r}"
        )


class LocalStage(Stage):
    """Sessions with no room and no network: text in, text out."""

    def __init__(self, human_lines: Sequence[str] = (), *, human_identity: str = "caller") -> None:
        self.humans = ScriptedHumans(human_lines, human_identity)
        self._sessions: list[AgentSession] = []

    async def open(self, entries: Sequence[StageEntry]) -> list[AgentSession | None]:
        async def start(entry: StageEntry) -> AgentSession:
            session = make_session(entry.models())
            self._sessions.append(session)
            await session.start(entry.agent)
            return session

        results = await asyncio.gather(*(start(e) for e in entries), return_exceptions=True)
        try:
            _raise_if_required_failed(entries, results)
        except StageError:
            await self.close()
            raise
        return [None if isinstance(r, BaseException) else r for r in results]

    async def close(self) -> None:
        self._closing()
        sessions, self._sessions = self._sessions, []
        await _close_sessions(sessions)


Connect = Callable[[rtc.Room, str, str], Awaitable[None]]


async def _connect(room: rtc.Room, url: str, token: str) -> None:
    # Nothing is subscribed by itself: only the persona that hears humans subscribes, and only
    # to their audio (hear_humans_only); personas hear each other through the floor's relay.
    await room.connect(url, token, rtc.RoomOptions(auto_subscribe=False))


def hear_humans_only(room: rtc.Room) -> None:
    """Subscribe `room` (the listening persona's connection, joined without auto-subscribe) to
    every human's audio track, now and as they publish; never to another persona's."""

    def consider(publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant):
        if is_human(participant) and publication.kind == rtc.TrackKind.KIND_AUDIO:
            publication.set_subscribed(True)

    room.on("track_published", consider)
    for participant in list(room.remote_participants.values()):
        for publication in list(participant.track_publications.values()):
            consider(publication, participant)


def room_options(persona: Persona, *, hears_humans: bool) -> room_io.RoomOptions:
    """RoomIO for one persona's participant.

    - Each persona publishes its voice on its own named track, `voice_<persona>`, so listeners
      can tell them apart (see `voice_track`).
    - Only the persona that hears the humans takes audio input, and only from humans
      (standard, SIP, connector participants): personas hear each other through the floor's
      exact text relay, so listening to each other's audio would only add STT cost and echo.
    - Typed chat is not RoomIO's: RoomIO takes `lk.chat` from its one linked participant only,
      so the stage reads the topic itself, from every human (LiveKitStage._on_chat).
    - The linked human leaving must not close the session: the floor ends the room when every
      human has left, and closes all personas together.
    """
    return room_io.RoomOptions(
        audio_input=hears_humans,
        text_input=False,
        # The voice track is the stage's own (workers/persona_audio.py): RoomIO's would wait
        # for a human to link and to subscribe before a persona could say a word.
        audio_output=False,
        text_output=True,
        close_on_disconnect=False,
    )


def voice_track(persona: Persona) -> str:
    return f"voice_{persona.id}"


# The kinds RoomIO links by default: people, phone callers, connectors (not egress recorders,
# ingress streams or agents).
HUMAN_KINDS = frozenset(
    {
        rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
        rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
        rtc.ParticipantKind.PARTICIPANT_KIND_CONNECTOR,
    }
)


def is_human(participant: rtc.RemoteParticipant) -> bool:
    return participant.kind in HUMAN_KINDS and not (
        participant.identity.startswith(AGENT_IDENTITY_PREFIX)
    )


class LiveKitStage(Stage):
    """Every persona its own participant in a real LiveKit room."""

    def __init__(
        self,
        ctx: Any,  # livekit.agents.JobContext
        *,
        url: str,
        api_key: str,
        api_secret: str,
        campaign: str,
        connect: Connect = _connect,
        room_factory: Callable[[], rtc.Room] = rtc.Room,
    ) -> None:
        self._ctx = ctx
        self._url, self._key, self._secret = url, api_key, api_secret
        self._campaign = campaign
        self._connect = connect
        self._room_factory = room_factory
        self.humans = LiveHumans()
        self._rooms: list[rtc.Room] = []
        self._sessions: dict[str, AgentSession] = {}  # persona id -> session
        self._reported = False
        self._chat_tasks: set[asyncio.Task[None]] = set()
        self._listener: AgentSession | None = None  # the session that hears humans
        self._stopping = False
        self._outputs: list[Any] = []  # persona voice outputs, closed after their sessions
        self.reports: dict[str, dict] = {}  # persona id -> livekit SessionReport.to_dict()
        ctx.add_shutdown_callback(self.close)

    @property
    def room_name(self) -> str:
        """The server's name for the room (set on the job before any connection exists)."""
        return self._ctx.job.room.name or self._ctx.room.name

    async def _join(self, entry: StageEntry) -> rtc.Room:
        """A persona's own connection to the room, with a token minted for it alone."""
        room = self._room_factory()
        self._rooms.append(room)  # recorded first, so a half-made join is still disconnected
        token = mint_persona_token(
            api_key=self._key,
            api_secret=self._secret,
            room=self.room_name,
            persona=entry.seat.persona,
            campaign=self._campaign,
            subscribe=entry.hears_humans,  # only the listener needs the humans' audio
        )
        await self._connect(room, self._url, token)
        room.on("disconnected", lambda reason: self._persona_dropped(entry, reason))
        return room

    def _persona_dropped(self, entry: StageEntry, reason: Any) -> None:
        """The server or the network dropped a persona's own connection (not our close)."""
        if self._stopping:
            return
        persona = entry.seat.persona.id
        log.warning("persona_connection_lost", persona=persona, reason=str(reason))
        if self.on_persona_lost is not None:
            self.on_persona_lost(persona, entry.seat.slot.required)

    def _watch_humans(self) -> None:
        room: rtc.Room = self._ctx.room
        room.on("participant_connected", self._human_joined)
        room.on("participant_disconnected", self._human_left)
        for p in list(room.remote_participants.values()):
            self._human_joined(p)

    def _human_joined(self, participant: rtc.RemoteParticipant) -> None:
        if is_human(participant):
            log.info("human_joined", identity=participant.identity)
            self.humans.joined(participant.identity)

    def _human_left(self, participant: rtc.RemoteParticipant) -> None:
        if is_human(participant):
            log.info("human_left", identity=participant.identity)
            self.humans.gone(participant.identity)
            self._relink(participant.identity)

    def _relink(self, gone: str) -> None:
        """RoomIO hears one human; when that one leaves it waits for them to come back. Move it
        to a human who is still in the room."""
        if self._listener is None or self._linked_human(self._listener) not in (gone, "human"):
            return
        others = [
            p.identity
            for p in self._ctx.room.remote_participants.values()
            if is_human(p) and p.identity != gone
        ]
        if others:
            self._listener.room_io.set_participant(others[0])
            log.info("listening_to", identity=others[0], after=gone)

    async def open(self, entries: Sequence[StageEntry]) -> list[AgentSession | None]:
        first, rest = entries[0], list(entries[1:])
        # The room deleted, the server gone, the job's connection dropped: livekit runs
        # shutdown callbacks only once the entrypoint returns, so the floor learns it here.
        self._ctx.room.on("disconnected", self._room_disconnected)
        self._watch_humans()  # before the other personas join: a caller may come meanwhile
        try:
            joined = await asyncio.gather(*(self._join(e) for e in rest), return_exceptions=True)
            _raise_if_required_failed(rest, joined)
            rooms: list[rtc.Room | None] = [self._ctx.room] + [
                None if isinstance(r, BaseException) else r for r in joined
            ]
            for entry, room in zip([first, *rest], rooms, strict=True):
                if entry.hears_humans and room is not None:
                    # at once, not after session start: a caller may type before the opener speaks
                    room.register_text_stream_handler(TOPIC_CHAT, self._on_chat)
                    hear_humans_only(room)

            async def start(entry: StageEntry, room: rtc.Room | None) -> AgentSession:
                if room is None:
                    raise StageError(f"{entry.seat.persona.id} did not join")
                models = entry.models()
                session = make_session(models)
                self._sessions[entry.seat.persona.id] = session
                if entry.hears_humans:
                    self._listen(session, entry)
                if models.speaks:
                    # published now, before the session starts: the persona is heard from
                    # its first word, in a room of personas alone too
                    output = persona_audio_output(room, voice_track(entry.seat.persona))
                    self._outputs.append(output)
                    await output.start()
                    session.output.audio = output
                await session.start(
                    entry.agent,
                    room=room,
                    room_options=room_options(entry.seat.persona, hears_humans=entry.hears_humans),
                )
                return session

            started = await asyncio.gather(
                *(start(e, r) for e, r in zip([first, *rest], rooms, strict=True)),
                return_exceptions=True,
            )
            _raise_if_required_failed([first, *rest], started)
        except BaseException:
            await self.close()
            raise
        return [None if isinstance(r, BaseException) else r for r in started]

    def _listen(self, session: AgentSession, entry: StageEntry) -> None:
        """The persona that hears humans passes each finished human turn to the floor (its
        agent stops the framework's own reply) and reports barge-ins so the floor can
        interrupt whichever persona is speaking."""

        self._listener = session

        def heard(text: str) -> None:
            self.humans.said(self._linked_human(session), text)

        entry.agent.on_human_turn = heard  # pipeline: the agent's on_user_turn_completed
        if isinstance(session.llm, RealtimeModel):
            # a realtime model transcribes the human itself and never calls that hook
            session.on(
                "user_input_transcribed",
                lambda ev: ev.is_final and ev.transcript.strip() and heard(ev.transcript.strip()),
            )

        def on_user_state(ev: Any) -> None:
            if ev.new_state == "speaking" and self.on_human_speaking is not None:
                self.on_human_speaking()

        session.on("user_state_changed", on_user_state)

    @staticmethod
    def _linked_human(session: AgentSession) -> str:
        """The identity of the human the listening session is linked to."""
        try:
            participant = session.room_io.linked_participant
        except RuntimeError:  # not started with a room
            participant = None
        return participant.identity if participant is not None else "human"

    def _room_disconnected(self, reason: Any = None) -> None:
        log.info("job_room_disconnected", reason=str(reason))
        self._closing()

    def _on_chat(self, reader: rtc.TextStreamReader, participant_identity: str) -> None:
        """Typed chat (`lk.chat`) from any human in the room goes through the floor like
        speech; other personas' and unknown senders' streams are ignored."""
        sender = self._ctx.room.remote_participants.get(participant_identity)
        if sender is None or not is_human(sender):
            return

        async def read() -> None:
            try:
                text = await reader.read_all()
            except Exception as e:  # a broken stream loses that line, not the room
                log.warning("chat_read_failed", identity=participant_identity, error=repr(e))
                return
            self.humans.said(participant_identity, text)

        task = asyncio.get_running_loop().create_task(read())
        self._chat_tasks.add(task)
        task.add_done_callback(self._chat_tasks.discard)

    def _report(self) -> None:
        """A session report for every persona, not only the job's primary session."""
        if self._reported:
            return
        self._reported = True
        for persona_id, session in self._sessions.items():
            try:
                self.reports[persona_id] = self._ctx.make_session_report(session).to_dict()
            except Exception as e:  # a report must never block teardown
                log.warning("session_report_failed", error=repr(e))

    async def close(self, *_: Any) -> None:
        self._stopping = True  # the disconnects that follow are ours
        self._closing()
        self.humans.close()
        for task in self._chat_tasks:
            task.cancel()
        self._report()
        sessions, self._sessions = list(self._sessions.values()), {}
        await _close_sessions(sessions)
        outputs, self._outputs = self._outputs, []
        for output in outputs:
            try:
                await output.aclose()
            except Exception as e:
                log.warning("voice_output_close_failed", error=repr(e))
        rooms, self._rooms = self._rooms, []
        for room in rooms:
            try:
                await room.disconnect()
            except Exception as e:
                log.warning("room_disconnect_failed", error=repr(e))
