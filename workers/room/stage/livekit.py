"""The LiveKit stage: every persona its own participant in a real LiveKit room.

The persona `own` takes the job's connection (`ctx.room`, joined as the identity on_request
accepted with); each other persona joins on its own `rtc.Room` with a token minted for it.
Each publishes its voice on its own track from the moment it joins. The persona that hears
the humans subscribes to their audio (and nothing else) and reads their typed chat.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from livekit import rtc
from livekit.agents import AgentSession, JobContext
from livekit.agents.llm import RealtimeModel
from livekit.agents.types import TOPIC_CHAT, TOPIC_TRANSCRIPTION
from livekit.agents.voice import room_io
from livekit.agents.voice.remote_session import TOPIC_SESSION_MESSAGES as SESSION_STREAM_TOPIC

from config.catalog import Persona
from config.humans import HUMAN_IDENTITY_PREFIX
from config.logging import get_logger
from workers.room.human_line import MAX_HUMAN_SCAN, HumanLine
from workers.room.seat import Seat
from workers.room.stage.base import (
    InterruptionMode,
    Stage,
    StageCast,
    StageError,
    StageEvents,
    close_sessions,
    make_session,
    started_or_raise,
)
from workers.room.stage.ears import Ears
from workers.room.stage.persona_audio import persona_audio_output
from workers.telephony.call import PhoneCalls
from workers.tokens import AGENT_IDENTITY_PREFIX, mint_persona_token

if TYPE_CHECKING:
    from workers.telephony.dial import Dialer

log = get_logger("workers.room.stage")


class LiveHumans:
    """Humans in a LiveKit room: lines arrive (speech-to-text, typed chat) as they are said,
    and the floor answers them before the next persona turn."""

    def __init__(self) -> None:
        self._lines: asyncio.Queue[HumanLine] = asyncio.Queue()
        self._here: set[str] = set()
        self._seen_any = False
        self._closed = False
        self._changed = asyncio.Event()

    def close(self) -> None:
        """The room is closing: nobody will speak again; wake the floor if it is listening."""
        self._closed = True
        self._changed.set()

    def joined(self, identity: str) -> None:
        self._here.add(identity)
        self._seen_any = True
        self._changed.set()

    def gone(self, identity: str) -> None:
        self._here.discard(identity)
        self._changed.set()

    def said(
        self,
        identity: str,
        text: str,
        *,
        heard_by: str = "",
        heard: Mapping[str, float] | None = None,
    ) -> None:
        """A human's finished turn, spoken or typed (an empty one is dropped). `heard_by`: the
        persona whose model took it in itself (a realtime model hearing the audio); `heard`:
        when an ear heard it (stage/ears.py)."""
        line = HumanLine.of(identity, text, heard_by=heard_by, heard=heard)
        if line is None:
            return
        self._lines.put_nowait(line)
        self._changed.set()

    def pressed(self, identity: str, key: str) -> None:
        """A caller pressed a key on the phone (DTMF): the floor applies the scenario's menu."""
        line = HumanLine.of(identity, f"(pressed {key} on the phone keypad)", key=key)
        if line is not None:
            self._lines.put_nowait(line)
            self._changed.set()

    def next_line(self, *, pause: bool) -> HumanLine | None:
        return None if self._lines.empty() else self._lines.get_nowait()

    async def wait_line(self) -> HumanLine | None:
        while True:
            if not self._lines.empty():
                return self._lines.get_nowait()
            # None once everyone who came has left; before anyone came, wait for them
            # (the room's time limit bounds the wait)
            if self._closed or self.left():
                return None
            self._changed.clear()
            await self._changed.wait()

    def present(self) -> bool:
        return bool(self._here)

    def left(self) -> bool:
        """Every caller who came has left. A person on the staff (`staff_<id>`, bridged in by
        a transfer) is heard like anyone, but a room does not go on for them alone."""
        return self._seen_any and not any(
            not identity.startswith(HUMAN_IDENTITY_PREFIX) for identity in self._here
        )

    async def arrival(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                while not self._here and not self._closed:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pass
        return bool(self._here)


Connect = Callable[[rtc.Room, str, str], Awaitable[None]]


async def _frames(track: rtc.Track) -> AsyncIterator[rtc.AudioFrame]:
    """A human's microphone as 16 kHz mono frames, what the VAD and the STT take."""
    stream = rtc.AudioStream(track, sample_rate=16000, num_channels=1)
    try:
        async for event in stream:
            yield event.frame
    finally:
        await stream.aclose()


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


def drop_unread_streams(room: rtc.Room, *, hosts_session: bool) -> None:
    """What reaches every persona connection and no persona reads, closed unread where it
    arrives (without a handler livekit logs a line for each one, on each connection):

    - every persona's transcription (`lk.transcription`, for the humans' clients);
    - on a connection that does not host the job's session, that session's stream
      (`lk.agent.session`, for remote clients that observe or drive it), which the opener's
      session (the job's primary) sends to everyone in the room.
    """

    def drop(reader: rtc.TextStreamReader | rtc.ByteStreamReader, sender: str) -> None:
        reader.close()

    room.register_text_stream_handler(TOPIC_TRANSCRIPTION, drop)
    if not hosts_session:
        room.register_byte_stream_handler(SESSION_STREAM_TOPIC, drop)


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
        # The voice track is the stage's own (stage/persona_audio.py): RoomIO's would wait for a
        # human to link and to subscribe before a persona could say a word.
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


async def read_chat(reader: rtc.TextStreamReader, limit: int = MAX_HUMAN_SCAN) -> str:
    """A typed message, read up to one character past `limit` (enough for the human line to
    be cut visibly) and no further: a huge or endless stream is never held whole. The reader
    is closed either way, so what the sender still sends is dropped, not queued."""
    parts: list[str] = []
    size = 0
    try:
        async for chunk in reader:
            parts.append(chunk[: limit + 1 - size])
            size += len(parts[-1])
            if size > limit:
                break
    finally:
        reader.close()
    return "".join(parts)


class LiveKitStage(Stage):
    """Every persona its own participant in a real LiveKit room."""

    humans: LiveHumans

    def __init__(
        self,
        ctx: JobContext,
        *,
        url: str,
        api_key: str,
        api_secret: str,
        campaign: str,
        hear_everyone: bool = True,
        connect: Connect = _connect,
        room_factory: Callable[[], rtc.Room] = rtc.Room,
        interruption: InterruptionMode = "vad",
        dialer: Dialer | None = None,  # the room phones someone once its cast has joined
    ) -> None:
        super().__init__()
        self._ctx = ctx
        self._interruption = interruption
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
        self._open_events: StageEvents | None = None  # kept after a close starts
        self._stopping = False
        self._outputs: list[Any] = []  # persona voice outputs, closed after their sessions
        self._voice_of: dict[str, Any] = {}  # persona id -> its voice output
        self._persona_rooms: dict[str, rtc.Room] = {}  # persona id -> its connection
        # persona id -> (seat, listens, its connection under way): joins started early
        self._early: dict[str, tuple[Seat, bool, asyncio.Task[rtc.Room]]] = {}
        self._listener_room: rtc.Room | None = None
        self._left: set[str] = set()  # personas that left the room (after a hand-over)
        self._reports: dict[str, dict[str, Any]] = {}  # persona id -> SessionReport.to_dict()
        self._calls: PhoneCalls | None = None  # the room's phone calls, once open
        # every human their own ear (stage/ears.py), or RoomIO's one linked human
        self._hear_everyone = hear_everyone
        self._ears: Ears | None = None
        self._dialer = dialer
        ctx.add_shutdown_callback(self.close)

    @property
    def room_name(self) -> str:
        """The server's name for the room (set on the job before any connection exists)."""
        return self._ctx.job.room.name or self._ctx.room.name

    async def _join(self, seat: Seat, *, listens: bool) -> rtc.Room:
        """A persona's own connection to the room, with a token minted for it alone."""
        room = self._room_factory()
        self._rooms.append(room)  # recorded first, so a half-made join is still disconnected
        drop_unread_streams(room, hosts_session=False)  # before it connects: none unhandled
        token = mint_persona_token(
            api_key=self._key,
            api_secret=self._secret,
            room=self.room_name,
            persona=seat.persona,
            campaign=self._campaign,
            identity=seat.identity,
            subscribe=listens,  # only the listener needs the humans' audio
        )
        await self._connect(room, self._url, token)
        log.info("persona_connected", persona=seat.persona.id)
        room.on("disconnected", lambda reason: self._persona_dropped(seat, reason))
        return room

    def join_early(self, seats: Sequence[Seat], *, listener: str) -> None:
        """Start these personas' own connections now, while the job's is still being made:
        `open` takes them up, so the room has its cast a connection's time sooner. Any it does
        not take up is disconnected by `close`."""
        loop = asyncio.get_running_loop()
        for seat in seats:
            listens = seat.persona.id == listener
            task = loop.create_task(self._join(seat, listens=listens))
            self._early[seat.persona.id] = (seat, listens, task)

    async def _joined(self, seat: Seat, *, listens: bool) -> rtc.Room:
        """The persona's connection: the one `join_early` started for this seat, else a new
        one."""
        early = self._early.get(seat.persona.id)
        if early is None or (early[0].identity, early[1]) != (seat.identity, listens):
            if early is not None:  # another seat now (not expected): start over
                del self._early[seat.persona.id]
                early[2].cancel()
            return await self._join(seat, listens=listens)
        room = await early[2]  # still in _early meanwhile: close cancels it
        del self._early[seat.persona.id]
        if not room.isconnected():  # dropped before the room opened: nobody was told
            raise StageError(f"{seat.persona.id} lost its connection before the room opened")
        return room

    def _persona_dropped(self, seat: Seat, reason: Any) -> None:
        """The server or the network dropped a persona's own connection (not our close)."""
        if self._stopping or self._open_events is None or seat.persona.id in self._left:
            return
        log.warning("persona_connection_lost", persona=seat.persona.id, reason=str(reason))
        self._open_events.persona_lost(seat.persona.id, seat.required)

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
            if self._ears is not None:
                self._ears.forget(participant.identity)
            if self.humans.left() and self._open_events is not None:
                self._open_events.humans_left()  # the floor stops now, even mid-turn
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

    async def _open(self, cast: StageCast, events: StageEvents) -> dict[str, AgentSession]:
        self._open_events = events
        own = next(s for s in cast.seats if s.persona.id == cast.own)
        rest = [s for s in cast.seats if s is not own]
        # The room deleted, the server gone, the job's connection dropped: livekit runs
        # shutdown callbacks only once the entrypoint returns, so the floor learns it here.
        self._ctx.room.on("disconnected", self._room_disconnected)
        self._watch_humans()  # before the other personas join: a caller may come meanwhile
        calls = self._calls = self._watch_calls(events)
        drop_unread_streams(self._ctx.room, hosts_session=True)
        try:
            joined = await asyncio.gather(
                *(self._joined(s, listens=s.persona.id == cast.listener) for s in rest),
                return_exceptions=True,
            )
            rooms = {own.persona.id: self._ctx.room, **started_or_raise(rest, joined)}
            self._persona_rooms = rooms
            listener_room = self._listener_room = rooms.get(cast.listener)
            if listener_room is not None:
                # at once, not after session start: a caller may type before the opener speaks
                listener_room.register_text_stream_handler(TOPIC_CHAT, self._on_chat)
                hear_humans_only(listener_room)

            own_starting = asyncio.Event()

            async def start(seat: Seat) -> AgentSession:
                try:
                    return await start_session(seat)
                finally:
                    if seat is own:
                        own_starting.set()  # also when it failed: the others go on

            async def start_session(seat: Seat) -> AgentSession:
                room = rooms.get(seat.persona.id)
                if room is None:
                    raise StageError(f"{seat.persona.id} did not join")
                listens = seat.persona.id == cast.listener
                agent = cast.agents[seat.persona.id]
                models = cast.models_for(seat.persona)
                session = make_session(models, self._interruption)
                self._sessions[seat.persona.id] = session
                ears = listens and self._hear_everyone and self._open_ears(models, events)
                if ears:
                    self._ears_hear(rooms[seat.persona.id])
                elif listens:
                    self._listen(session, seat, events)
                if models.speaks:
                    # published now, before the session starts: the persona is heard from
                    # its first word, in a room of personas alone too
                    output = persona_audio_output(room, voice_track(seat.persona))
                    self._outputs.append(output)
                    self._voice_of[seat.persona.id] = output
                    await output.start()
                    session.output.audio = output
                options = room_options(seat.persona, hears_humans=listens and not ears)
                if seat is own:
                    # livekit makes the first session to enter start() the job's primary, which
                    # alone hosts the session stream for remote clients (SESSION_STREAM_TOPIC):
                    # the others enter theirs only once this one has.
                    own_starting.set()
                    await session.start(agent, room=room, room_options=options)
                else:
                    await own_starting.wait()
                    await session.start(agent, room=room, room_options=options, session_host=False)
                return session

            seats = [own, *rest]
            started = await asyncio.gather(*(start(s) for s in seats), return_exceptions=True)
            sessions = started_or_raise(seats, started)
            if self._dialer is not None:  # raises NotAnswered: busy, declined, no answer
                await self._dialer.place(self.room_name, events.record)
            # a phone answers once it hears a track: the opener waits for the call to be
            # active rather than greet a ringing line
            await calls.answered()
            return sessions
        except BaseException:
            await self.close()
            raise

    async def personas_leave(self, personas: Sequence[str]) -> None:
        """After a hand-over to a person: each persona's session closes and its voice track
        is unpublished, and its connection leaves the room, except two that stay silent and
        publish nothing: the job's own (the job lives as long as the call it bridged) and
        the listener's, whose ears keep transcribing the caller and the person."""
        self._left.update(personas)
        leaving = {p: self._sessions.pop(p) for p in personas if p in self._sessions}
        self._report_on(leaving)  # their reports, as the room's end writes the others'
        await close_sessions(list(leaving.values()))
        for persona in personas:
            output = self._voice_of.pop(persona, None)
            if output is not None:
                self._outputs.remove(output)
                try:
                    await output.aclose()
                except Exception as e:
                    log.warning("voice_output_close_failed", error=repr(e))
            room = self._persona_rooms.get(persona)
            if room is None or room is self._ctx.room or room is self._listener_room:
                continue
            if room in self._rooms:
                self._rooms.remove(room)
            try:
                await room.disconnect()
            except Exception as e:
                log.warning("room_disconnect_failed", error=repr(e))
        log.info("personas_left", personas=list(personas))

    def _watch_calls(self, events: StageEvents) -> PhoneCalls:
        def key(identity: str, digit: str) -> None:
            events.human_speaking()  # a key press cuts the speaking persona off, like speech
            self.humans.pressed(identity, digit)

        calls = PhoneCalls(self._ctx.room, record=events.record, on_key=key)
        calls.watch()
        return calls

    def _open_ears(self, models: Any, events: StageEvents) -> bool:
        """Every human heard through their own ear, with the listening persona's own VAD and
        STT; False where that persona has none (a realtime model hears through its own
        input, one human at a time)."""
        if models.stt is None or models.vad is None:
            return False
        self._ears = Ears(
            models.stt,
            models.vad,
            on_line=self.humans.said,
            on_speaking=lambda _identity: events.human_speaking(),
        )
        log.info("hearing_everyone")
        return True

    def _ears_hear(self, room: rtc.Room) -> None:
        """Each human's microphone track goes to their own ear as it is subscribed (the
        listener subscribes to every human's audio: hear_humans_only), and leaves it when the
        track goes."""
        ears = self._ears
        assert ears is not None

        def subscribed(
            track: rtc.Track, _pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
        ) -> None:
            if track.kind == rtc.TrackKind.KIND_AUDIO and is_human(p):
                ears.hear(p.identity, _frames(track))

        def unsubscribed(
            track: rtc.Track, _pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
        ) -> None:
            if track.kind == rtc.TrackKind.KIND_AUDIO:
                ears.forget(p.identity)

        room.on("track_subscribed", subscribed)
        room.on("track_unsubscribed", unsubscribed)
        for participant in list(room.remote_participants.values()):
            for publication in list(participant.track_publications.values()):
                if publication.track is not None:
                    subscribed(publication.track, publication, participant)

    def _listen(self, session: AgentSession, seat: Seat, events: StageEvents) -> None:
        """The persona that hears humans: a pipeline persona's agent passes each finished
        human turn to `human_turn` (and stops the framework's own reply); its barge-ins are
        reported so the floor can interrupt whichever persona is speaking."""

        self._listener = session
        if isinstance(session.llm, RealtimeModel):
            # A realtime model transcribes the human itself and never ends a user turn in the
            # agent; the human's turn is already in its own context, so the floor relays it to
            # the others.
            def transcribed(ev: Any) -> None:
                if ev.is_final and ev.transcript.strip():
                    self.humans.said(
                        self._linked_human(session),
                        ev.transcript.strip(),
                        heard_by=seat.persona.id,
                    )

            session.on("user_input_transcribed", transcribed)

        def on_user_state(ev: Any) -> None:
            if ev.new_state == "speaking":
                events.human_speaking()

        session.on("user_state_changed", on_user_state)

    def human_turn(self, text: str) -> None:
        """A pipeline listener's agent heard a human finish a turn: from the human its
        session is linked to."""
        session = self._listener
        self.humans.said(self._linked_human(session) if session is not None else "human", text)

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
                text = await read_chat(reader)
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
        self._report_on(self._sessions)

    def _report_on(self, sessions: Mapping[str, AgentSession]) -> None:
        for persona_id, session in sessions.items():
            try:
                self._reports[persona_id] = self._ctx.make_session_report(session).to_dict()
            except Exception as e:  # a report must never block teardown
                log.warning("session_report_failed", error=repr(e))

    def session_reports(self) -> dict[str, dict[str, Any]]:
        return dict(self._reports)

    async def close(self, *_: Any) -> None:
        self._stopping = True  # the disconnects that follow are ours
        self._closing()
        joins, self._early = [e[2] for e in self._early.values()], {}
        for join in joins:  # joins started early that the room never took up
            join.cancel()
        await asyncio.gather(*joins, return_exceptions=True)
        self.humans.close()
        for task in self._chat_tasks:
            task.cancel()
        self._report()
        if self._calls is not None:
            self._calls.close()
        if self._ears is not None:
            await self._ears.aclose()
        sessions, self._sessions = list(self._sessions.values()), {}
        await close_sessions(sessions)
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
