"""The warm hand-over: brief the human who answered in the consult room, then put them on the
line with the caller.

The human's phone leg (a SIP participant livekit-sip made in `<caller room>-consult`) is never
in the caller's room: the open-source server cannot move a participant between rooms, and in
the caller's room the caller could subscribe to the human before the briefing ends. So:

1. The bridge joins the consult room as the persona's side (`agent_brief_<room>`, kind agent),
   waits for the leg to be `active`, publishes one track only the leg may subscribe to
   (subscription permissions), waits until the phone has subscribed (audio spoken before that
   is lost), and speaks the briefing there. The caller hears the hold line meanwhile.
2. Then it joins the caller's room as the human (`staff_<id>`, a standard participant named
   like them, attributes role=human_agent and human_agent=<id>) and relays audio both ways:
   the leg's audio into the caller's room, and the caller room's voices (every remote audio
   track but the agents': see `hears`) mixed into the consult-room track for the phone.
3. It ends when the human hangs up (the leg leaves the consult room: `hung_up`), the callers
   all leave (`caller_left`: the human's phone is hung up), either room goes away
   (`room_ended`), or on close() (`closed`). Ending leaves both rooms, hangs up a leg still
   up, stops every task and records `human_left`.

Transcript events: `briefing` (human, chars, seconds, completed), `human_joined` (human,
identity), `human_left` (human, reason, talked_s, frames_to_caller, frames_to_human,
frames_dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from livekit import api, rtc
from livekit.agents import tts as lk_tts
from livekit.rtc.room import EventTypes

from config.humans import HumanAgent
from config.logging import get_logger
from workers.humans import relay
from workers.main.livekit_check import http_url
from workers.telephony.call import ACTIVE, STATUS, Record
from workers.tokens import PERSONA_TOKEN_TTL, persona_grants, persona_identity

log = get_logger("workers.humans.bridge")

BRIEFER = "brief"  # the consult room's persona-side participant: agent_brief_<consult room>
CONNECT_TIMEOUT_S = 15.0
LEG_ACTIVE_TIMEOUT_S = 15.0  # the ring part calls once the leg answered: this is a safety bound
LISTENING_TIMEOUT_S = 10.0  # the phone subscribing to the briefing track
BRIEFING_TIMEOUT_S = 120.0  # synthesis and playout of the longest briefing
HANG_UP_TIMEOUT_S = 5.0
STAFF_TOKEN_TTL = timedelta(minutes=10)  # only used to join


class HandOverFailed(Exception):
    """The hand-over stopped before the human joined the caller's room. `reason`:
    `unreachable` (a room could not be joined), `not_active` (the leg was not active in
    time), `hung_up` (the human hung up before or during the briefing), `not_listening` (the
    phone never subscribed to the briefing), `tts_failed`, `not_briefed` (no end in time)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"warm hand-over failed ({reason}): {detail}")
        self.reason = reason


async def _connect(room: rtc.Room, url: str, token: str) -> None:
    """Join `room` (subscribing only to what we ask for), bounded."""
    try:
        await asyncio.wait_for(
            room.connect(url, token, rtc.RoomOptions(auto_subscribe=False)), CONNECT_TIMEOUT_S
        )
    except (rtc.ConnectError, TimeoutError) as e:
        raise HandOverFailed("unreachable", f"could not join a room at {url}: {e!r}") from e


def briefer_token(*, api_key: str, api_secret: str, room: str, human: HumanAgent) -> str:
    """The persona side in the consult room: an agent participant with a persona's grants
    (publish its voice, subscribe to hear the leg)."""
    return (
        api.AccessToken(api_key, api_secret)
        .with_identity(persona_identity(BRIEFER, room))
        .with_name("briefing")
        .with_kind("agent")
        .with_attributes({"role": "briefing", "human_agent": human.id})
        .with_grants(persona_grants(room, subscribe=True))
        .with_ttl(PERSONA_TOKEN_TTL)
        .to_jwt()
    )


def staff_token(*, api_key: str, api_secret: str, room: str, human: HumanAgent) -> str:
    """The human in the caller's room: a standard participant (what the room's ears hear and
    its transcript attributes to `staff_<id>`), voice only."""
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=True,
        can_publish_sources=["microphone"],
        can_subscribe=True,
        can_publish_data=False,
    )
    return (
        api.AccessToken(api_key, api_secret)
        .with_identity(human.identity)
        .with_name(human.name)
        .with_attributes({"role": "human_agent", "human_agent": human.id})
        .with_grants(grants)
        .with_ttl(STAFF_TOKEN_TTL)
        .to_jwt()
    )


def hears(participant: rtc.RemoteParticipant) -> bool:
    """Whose voice the human hears in the caller's room: everyone's but the agents'. They
    were briefed already; what a persona still says there (the hold line, its goodbye) is for
    the caller, and a note-taking persona must stay out of their ear. Not decoding the
    personas' tracks also keeps the relay's CPU to the callers' voices."""
    return participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


def is_caller(participant: rtc.RemoteParticipant) -> bool:
    return hears(participant)


class HumanOnLine:
    """A human agent on the line with the caller, relayed between the consult room and the
    caller's room. `wait_gone()` says why it ended; `close()` ends it (idempotent)."""

    def __init__(
        self,
        *,
        human: HumanAgent,
        leg_identity: str,
        consult_room: str,
        record: Record,
        hang_up: Callable[[], Any],
    ) -> None:
        self.human = human
        self.leg_identity = leg_identity
        self.consult_room = consult_room
        self.frames_to_caller = 0
        self.frames_to_human = 0
        self.frames_dropped = 0  # either way, to keep the delay down (relay.MAX_BACKLOG_S)
        self._record = record
        self._hang_up = hang_up
        self.consult = rtc.Room()
        self.caller: rtc.Room | None = None
        self._clock = relay.Clock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._streams: dict[str, relay.TrackFrames] = {}
        self._sources: list[rtc.AudioSource] = []
        self._mix: relay.Mix | None = None
        self._to_human: rtc.AudioSource | None = None
        self._to_caller: rtc.AudioSource | None = None
        self._reason: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._ended: asyncio.Task[str] | None = None
        self._joined = False
        self.consult.on("participant_disconnected", self._consult_left)
        self.consult.on("disconnected", lambda *_: self._end("room_ended"))

    # -- what the ring part reads ------------------------------------------------------------

    @property
    def talked_s(self) -> float:
        return self._clock.seconds

    @property
    def reason(self) -> str | None:
        return self._reason.result() if self._reason.done() else None

    async def wait_gone(self) -> str:
        """Wait until the call with the human is over; why: hung_up, caller_left,
        room_ended or closed. `human_left` is recorded by then."""
        reason = await asyncio.shield(self._reason)
        await self._shut_down()
        return reason

    async def close(self) -> None:
        """Leave both rooms, hang the human's phone up if it is still up, stop every task."""
        self._end("closed")
        await self._shut_down()

    # -- steps -----------------------------------------------------------------------------

    def _end(self, reason: str) -> None:
        if not self._reason.done():
            self._reason.set_result(reason)
            log.info("human_line_ending", human=self.human.id, reason=reason)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"bridge:{self.human.id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("bridge_task_failed", task=task.get_name(), error=repr(task.exception()))

    def _consult_left(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity == self.leg_identity:
            self._end("hung_up")

    async def brief(self, *, url: str, token: str, briefing: str, engine: lk_tts.TTS) -> None:
        room = self.consult
        await _connect(room, url, token)
        await self._until(self._leg_active, LEG_ACTIVE_TIMEOUT_S, "not_active")
        source = relay.relay_source()
        self._sources.append(source)
        self._to_human = source
        track = rtc.LocalAudioTrack.create_audio_track("briefing", source)
        # only the human's phone may subscribe: no other leg still ringing in this room hears it
        room.local_participant.set_track_subscription_permissions(
            allow_all_participants=False,
            participant_permissions=[
                rtc.ParticipantTrackPermission(
                    participant_identity=self.leg_identity, allow_all=True
                )
            ],
        )
        listening = asyncio.Event()
        room.on("local_track_subscribed", lambda _track: listening.set())
        await room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        await self._until(listening.is_set, LISTENING_TIMEOUT_S, "not_listening")
        speaking = asyncio.ensure_future(relay.speak(engine, briefing, source))
        seconds = 0.0
        done: set[asyncio.Future[Any]] = set()
        try:
            racing: set[asyncio.Future[Any]] = {speaking, self._reason}
            done, _ = await asyncio.wait(
                racing, timeout=BRIEFING_TIMEOUT_S,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
        finally:
            if not speaking.done():
                speaking.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await speaking
        error = speaking.exception() if speaking in done else None
        if speaking in done and error is None:
            seconds = speaking.result()
        completed = speaking in done and error is None and self.reason is None
        self._write(
            "briefing",
            human=self.human.id,
            chars=len(briefing),
            seconds=round(seconds, 3),
            completed=completed,
        )
        if self.reason is not None:
            raise HandOverFailed(self.reason, "the human left during the briefing")
        if error is not None:
            raise HandOverFailed("tts_failed", repr(error))
        if not completed:
            raise HandOverFailed("not_briefed", f"no end in {BRIEFING_TIMEOUT_S:.0f} s")

    async def join(self, *, url: str, token: str) -> None:
        """Into the caller's room as the human, and the relay both ways."""
        room = rtc.Room()
        self.caller = room
        room.on("disconnected", lambda *_: self._end("room_ended"))
        room.on("participant_disconnected", lambda _p: self._check_callers())
        room.on("track_published", self._caller_track_published)
        room.on("track_subscribed", self._caller_track_subscribed)
        room.on("track_unsubscribed", self._caller_track_unsubscribed)
        self.consult.on("track_published", self._leg_track_published)
        self.consult.on("track_subscribed", self._leg_track_subscribed)
        await _connect(room, url, token)
        to_caller = relay.relay_source()
        self._sources.append(to_caller)
        self._to_caller = to_caller
        track = rtc.LocalAudioTrack.create_audio_track("human", to_caller)
        await room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        self._mix = relay.Mix()
        assert self._to_human is not None
        self._spawn(
            relay.pump(aiter(self._mix), self._to_human, self._counted_to_human, self._dropped),
            "mix",
        )
        self._joined = True
        self._clock.start()
        self._write("human_joined", human=self.human.id, identity=self.human.identity)
        log.info("human_joined", human=self.human.id, room=room.name)
        for participant in list(self.consult.remote_participants.values()):
            for publication in participant.track_publications.values():
                self._leg_track_published(publication, participant)
        for participant in list(room.remote_participants.values()):
            for publication in participant.track_publications.values():
                self._caller_track_published(publication, participant)
        self._check_callers()

    # -- the leg (consult room) -> the caller's room -------------------------------------------

    def _leg_active(self) -> bool:
        leg = self.consult.remote_participants.get(self.leg_identity)
        return leg is not None and leg.attributes.get(STATUS) == ACTIVE

    async def _until(self, holds: Callable[[], bool], bound_s: float, reason: str) -> None:
        """Wait for `holds()` (re-checked on room events), bounded; the leg leaving ends it."""
        changed = asyncio.Event()
        room = self.consult

        def poke(*_: Any) -> None:
            changed.set()

        names: tuple[EventTypes, ...] = (
            "participant_connected",
            "participant_attributes_changed",
            "local_track_subscribed",
        )
        for name in names:
            room.on(name, poke)
        try:
            async with asyncio.timeout(bound_s):
                while not holds():
                    if self._reason.done():
                        raise HandOverFailed(self.reason or "ended", "the leg left")
                    changed.clear()
                    wake: asyncio.Future[Any] = asyncio.ensure_future(changed.wait())
                    try:
                        await asyncio.wait(
                            {wake, self._reason}, return_when=asyncio.FIRST_COMPLETED
                        )
                    finally:
                        wake.cancel()
        except TimeoutError:
            raise HandOverFailed(
                reason, f"waited {bound_s:.0f} s for {self.leg_identity}"
            ) from None
        finally:
            for name in names:
                room.off(name, poke)

    def _leg_track_published(
        self, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if (
            participant.identity == self.leg_identity
            and publication.kind == rtc.TrackKind.KIND_AUDIO
        ):
            publication.set_subscribed(True)

    def _leg_track_subscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if participant.identity != self.leg_identity or self._to_caller is None:
            return
        stream = self._open(f"leg:{publication.sid}", track)
        self._spawn(
            relay.pump(stream, self._to_caller, self._counted_to_caller, self._dropped), "leg"
        )

    # -- the caller's room -> the leg ----------------------------------------------------------

    def _caller_track_published(
        self, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if publication.kind == rtc.TrackKind.KIND_AUDIO and hears(participant):
            publication.set_subscribed(True)

    def _caller_track_subscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if self._mix is None or track.kind != rtc.TrackKind.KIND_AUDIO or not hears(participant):
            return
        self._mix.add(publication.sid, self._open(f"caller:{publication.sid}", track))

    def _caller_track_unsubscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if self._mix is not None:
            self._mix.remove(publication.sid)
        self._close_stream(f"caller:{publication.sid}")

    def _check_callers(self) -> None:
        room = self.caller
        if room is not None and not any(is_caller(p) for p in room.remote_participants.values()):
            self._end("caller_left")

    # -- plumbing ------------------------------------------------------------------------------

    def _open(self, key: str, track: rtc.Track) -> relay.TrackFrames:
        self._close_stream(key)
        stream = relay.TrackFrames(track)
        self._streams[key] = stream
        return stream

    def _close_stream(self, key: str) -> None:
        stream = self._streams.pop(key, None)
        if stream is not None:
            self._spawn(stream.aclose(), "close-stream")

    def _counted_to_caller(self) -> None:
        self.frames_to_caller += 1

    def _counted_to_human(self) -> None:
        self.frames_to_human += 1

    def _dropped(self) -> None:
        self.frames_dropped += 1

    async def _shut_down(self) -> None:
        if self._ended is None:
            self._ended = asyncio.create_task(self._release(), name=f"bridge:{self.human.id}:end")
        await asyncio.shield(self._ended)

    async def _release(self) -> str:
        """Everything the line holds, released in order; `human_left` recorded once."""
        self._end("closed")
        reason = self._reason.result()
        self._clock.stop()
        # no new relay from here: a track event arriving while the rooms close starts nothing
        mix, self._mix, self._to_caller = self._mix, None, None
        await relay.cancel_all(self._tasks)
        if mix is not None:
            await mix.aclose()
        for stream in self._streams.values():
            with contextlib.suppress(Exception):
                await stream.aclose()
        self._streams.clear()
        if reason != "hung_up" and self.leg_identity in self.consult.remote_participants:
            try:
                await asyncio.wait_for(self._hang_up(), HANG_UP_TIMEOUT_S)
            except Exception as e:  # the phone may be gone already: never fail the close
                log.warning("hang_up_failed", human=self.human.id, error=repr(e))
        for room in (self.caller, self.consult):
            if room is not None:
                with contextlib.suppress(Exception):
                    await room.disconnect()
        for source in self._sources:
            await source.aclose()
        self._sources.clear()
        # streams the rooms' last events closed meanwhile finish closing before we return
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._joined:
            self._write(
                "human_left",
                human=self.human.id,
                reason=reason,
                talked_s=self.talked_s,
                frames_to_caller=self.frames_to_caller,
                frames_to_human=self.frames_to_human,
                frames_dropped=self.frames_dropped,
            )
        log.info("human_line_ended", human=self.human.id, reason=reason, talked_s=self.talked_s)
        return reason

    def _write(self, event: str, **fields: Any) -> None:
        try:
            self._record(event, **fields)
        except Exception as e:  # the transcript never takes the line down
            log.warning("bridge_record_failed", event_name=event, error=repr(e))


async def warm_hand_over(
    *,
    url: str,
    api_key: str,
    api_secret: str,
    caller_room: str,
    consult_room: str,
    human: HumanAgent,
    leg_identity: str,
    briefing: str,
    tts: lk_tts.TTS,
    record: Record,
) -> HumanOnLine:
    """Brief the human on `leg_identity` in `consult_room` (only they hear it), then put them
    on the line in `caller_room`. Records `briefing` and `human_joined`. Raises
    HandOverFailed (both rooms left, nothing running) when it stops before the human joined."""

    async def hang_up() -> None:
        async with api.LiveKitAPI(http_url(url), api_key, api_secret) as lk:
            await lk.room.remove_participant(
                api.RoomParticipantIdentity(room=consult_room, identity=leg_identity)
            )

    line = HumanOnLine(
        human=human,
        leg_identity=leg_identity,
        consult_room=consult_room,
        record=record,
        hang_up=hang_up,
    )
    try:
        await line.brief(
            url=url,
            token=briefer_token(
                api_key=api_key, api_secret=api_secret, room=consult_room, human=human
            ),
            briefing=briefing,
            engine=tts,
        )
        await line.join(
            url=url,
            token=staff_token(
                api_key=api_key, api_secret=api_secret, room=caller_room, human=human
            ),
        )
    except BaseException:
        await line.close()
        raise
    return line
