"""Personas really speak: a room of personas alone, recorded by a hidden observer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pytest
from livekit import api, rtc

from agents.espeak_tts import espeak_voice_for, synthesize_pcm
from tests.conftest import SCENARIOS_DIR
from tests.live.harness import (
    WorkerProcess,
    current_events,
    dispatch,
    human_token,
    joined,
    now,
    observer_token,
    server_api,
    transcript_event,
    transcript_of,
    unique,
)

pytestmark = pytest.mark.live

FRAME_S = 0.01  # AudioStream's 10 ms frames
SPEECH_RMS = 300.0  # int16 RMS above which a 10 ms frame counts as speech (eSpeak peaks ~8000)
MAX_OVERLAP_S = 0.3


@dataclass
class Recording:
    """Every persona track's 10 ms frames as (arrival time, RMS), and every attribute change."""

    frames: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    states: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    tracks: dict[str, str] = field(default_factory=dict)  # identity -> track name

    def speaking(self, identity: str) -> np.ndarray:
        """Arrival times of this identity's speech frames."""
        return np.array([t for t, rms in self.frames[identity] if rms >= SPEECH_RMS])


def record(room: rtc.Room, rec: Recording, tasks: set[asyncio.Task]) -> None:
    async def read(track: rtc.Track, identity: str) -> None:
        async for ev in rtc.AudioStream(track, sample_rate=16000, num_channels=1):
            samples = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float64)
            rms = float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
            rec.frames[identity].append((now(), rms))

    @room.on("track_subscribed")
    def _(track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            rec.tracks[p.identity] = pub.name
            tasks.add(asyncio.ensure_future(read(track, p.identity)))

    def state_of(p: rtc.Participant) -> None:
        state = p.attributes.get("lk.agent.state")
        if state and (not rec.states[p.identity] or rec.states[p.identity][-1] != state):
            rec.states[p.identity].append(state)

    room.on("participant_attributes_changed", lambda _changed, p: state_of(p))
    room.on("participant_connected", state_of)


def longest_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Longest run of 10 ms slots in which both speak (seconds)."""
    if not a.size or not b.size:
        return 0.0
    slots_a = set(np.round(a / FRAME_S).astype(int))
    slots_b = set(np.round(b / FRAME_S).astype(int))
    both = sorted(slots_a & slots_b)
    best = run = 0
    for i, slot in enumerate(both):
        run = run + 1 if i and slot == both[i - 1] + 1 else 1
        best = max(best, run)
    return best * FRAME_S


async def test_a_room_of_personas_alone_talks(worker: WorkerProcess):
    """c: dispatch_checkin with no human: each persona's own track carries speech during its
    own turns, no two speak over each other for more than 300 ms, the transcript alternates
    and ends, and every persona's lk.agent.state goes listening -> thinking -> speaking."""
    room = unique("voices")
    rec = Recording()
    tasks: set[asyncio.Task] = set()
    async with server_api() as lk:
        await dispatch(lk, worker.agent_name, room, json.dumps({"scenario": "dispatch_checkin"}))
        async with joined(observer_token(room)) as observer:
            record(observer, rec, tasks)
            for p in observer.remote_participants.values():
                rec.states[p.identity].append(p.attributes.get("lk.agent.state", ""))
            events = await transcript_of(worker, room)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)

    assert events[-1]["event"] == "room_ended"
    utterances = [e for e in events if e["event"] == "utterance"]
    assert len(utterances) >= 4
    speakers = [u["identity"] for u in utterances]
    assert all(a != b for a, b in itertools.pairwise(speakers)), speakers
    cast = {c["identity"]: c["persona"] for c in events[0]["cast"]}
    assert rec.tracks == {i: f"voice_{p}" for i, p in cast.items()}

    for u in utterances:
        own = rec.speaking(u["identity"])
        during = own[(own >= u["started"]) & (own <= u["at"] + 0.5)]
        # eSpeak pauses between words: a third of the turn's 10 ms frames carrying speech is a
        # persona clearly talking (measured: about half)
        assert during.size * FRAME_S >= 0.3 * (u["at"] - u["started"]), (u["text"], during.size)
    identities = list(cast)
    for i, a in enumerate(identities):
        for b in identities[i + 1 :]:
            overlap = longest_overlap(rec.speaking(a), rec.speaking(b))
            assert overlap <= MAX_OVERLAP_S, (a, b, overlap)
    for identity in identities:
        seen = rec.states[identity]
        for state in ("listening", "thinking", "speaking"):
            assert state in seen, (identity, seen)


async def microphone(human: rtc.Room) -> rtc.AudioSource:
    """A microphone track the human publishes, and the source to speak into it."""
    source = rtc.AudioSource(22050, 1)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
    await human.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    return source


async def speak(
    source: rtc.AudioSource, text: str, voice: str = "fable", *, after_s: float = 0.0
) -> None:
    """Say `text` into the microphone track in real time (after `after_s` of silence), then a
    second of silence (the listener's VAD needs the end of speech)."""
    rate, pcm = synthesize_pcm(text, espeak_voice_for(voice, "caller"))
    samples = np.frombuffer(pcm, dtype=np.int16)
    before = np.zeros(int(rate * after_s), dtype=np.int16)
    samples = np.concatenate([before, samples, np.zeros(rate, dtype=np.int16)])
    step = rate // 100  # 10 ms frames; capture_frame paces them in real time
    for i in range(0, len(samples) - step + 1, step):
        frame = rtc.AudioFrame(samples[i : i + step].tobytes(), rate, 1, step)
        await source.capture_frame(frame)


async def test_a_spoken_human_line_is_heard_and_answered_once(worker: WorkerProcess):
    """d: in inbound_support the caller speaks (offline TTS audio on a microphone track): the
    lead hears it through its VAD and STT (a `human` event) and exactly one persona answers."""
    room = unique("speech")
    line = "Hi, my blender arrived with a cracked jar. Order 88123."
    async with server_api() as lk:
        await dispatch(lk, worker.agent_name, room, json.dumps({"scenario": "inbound_support"}))
        async with joined(human_token(room, "caller-voice")) as caller:
            source = await microphone(caller)
            greeting = await transcript_event(worker, room, "utterance", timeout=60)
            await speak(source, line)
            heard = await transcript_event(worker, room, "human", timeout=30)
            async with asyncio.timeout(60):
                while True:
                    events = current_events(worker, room)
                    replies = [
                        e for e in events if e["event"] == "utterance" and e["at"] > heard["at"]
                    ]
                    if replies:
                        break
                    await asyncio.sleep(0.1)
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    events = await transcript_of(worker, room)
    assert heard["identity"] == "caller-voice"
    words = set(heard["text"].lower().replace(".", "").split())
    assert {"blender", "cracked", "jar"} <= words, heard["text"]
    replies = [e for e in events if e["event"] == "utterance" and e["at"] > heard["at"]]
    humans = [e for e in events if e["event"] == "human"]
    assert len(humans) == 1
    assert len({r["persona"] for r in replies}) == 1, replies
    assert replies[0]["persona"] == greeting["persona"]  # the lead answers


async def test_the_caller_barging_in_cuts_the_persona_off(worker: WorkerProcess):
    """d: the caller speaking while a persona speaks interrupts it: `interrupted` in the
    transcript, and that persona's audio stops within 1 s."""
    room = unique("barge")
    rec = Recording()
    tasks: set[asyncio.Task] = set()
    async with server_api() as lk:
        await dispatch(lk, worker.agent_name, room, json.dumps({"scenario": "inbound_support"}))
        async with joined(human_token(room, "caller-barge")) as caller:
            record(caller, rec, tasks)
            source = await microphone(caller)
            async with asyncio.timeout(60):  # the opener's greeting is on the air
                while not any(rec.speaking(i).size > 50 for i in list(rec.frames)):
                    await asyncio.sleep(0.05)
            [speaker] = [i for i in list(rec.frames) if rec.speaking(i).size > 50]
            await speak(source, "Sorry to interrupt, my blender arrived with a cracked jar.")
            cut = await transcript_event(worker, room, "interrupted", timeout=30)
            await asyncio.sleep(0)  # let the recorder take the frames already received
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    events = await transcript_of(worker, room)
    assert cut["by"] == "human"
    assert f"agent_{cut['persona']}_" in speaker
    greeting = next(e for e in events if e["event"] == "utterance")
    assert greeting["interrupted"] is True
    after = rec.speaking(speaker)
    after = after[(after > cut["at"]) & (after < greeting["at"] + 0.5)]
    assert not after.size or after.max() - cut["at"] <= 1.0, after.max() - cut["at"]


async def test_when_the_heard_caller_leaves_the_lead_hears_the_one_still_there(
    worker: WorkerProcess,
):
    """13.4, with `rules.hear: "first"`: RoomIO hears one human; when that one hangs up, the
    lead relinks to a human who is still in the room and hears them speak."""
    room = unique("relink")
    first_only = json.loads((SCENARIOS_DIR / "inbound_support.json").read_text())
    first_only["rules"]["hear"] = "first"
    async with server_api() as lk:
        await dispatch(lk, worker.agent_name, room, json.dumps(first_only))
        async with joined(human_token(room, "caller-first")) as first:
            await transcript_event(worker, room, "utterance", timeout=60)  # linked to the first
            async with joined(human_token(room, "caller-second")) as second:
                source = await microphone(second)
                await first.disconnect()
                await worker.wait_for("listening_to", identity="caller-second", timeout=10)
                await speak(source, "Hi, my blender arrived with a cracked jar. Order 88123.")
                heard = await transcript_event(worker, room, "human", timeout=30)
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    assert heard["identity"] == "caller-second"
    assert "blender" in heard["text"].lower()


LONG_LINE = (
    "Dispatch here with the whole weekly briefing: every load on the southern route, "
    "every driver on the night shift, every dock that closes early on Friday, and every "
    "customer who asked for a call back before noon, one by one, so listen closely."
)
# Tim alone, with one long line: the room is ended while he is still saying it.
LONG_TALK = json.dumps(
    {
        "name": "long_talk",
        "campaign": "freight-dispatch",
        "cast": [{"role": "dispatcher"}],
        # speaks at once to whoever listens (a hidden observer is nobody to wait for)
        "rules": {
            "turn_policy": "addressed",
            "max_turns": 20,
            "max_duration_s": 300,
            "wait_for_human_s": 0,
        },
        "script": {"dispatcher": [{"say": LONG_LINE}]},
    }
)


async def test_a_persona_cut_off_by_the_room_ending_is_in_the_transcript(worker: WorkerProcess):
    """21.5: the room ends (deleted) while a persona speaks: the listener heard it, so the
    transcript records that utterance, interrupted, with what was said."""
    room = unique("cut-off")
    rec = Recording()
    tasks: set[asyncio.Task] = set()
    async with server_api() as lk:
        await dispatch(lk, worker.agent_name, room, LONG_TALK)
        async with joined(observer_token(room)) as observer:
            record(observer, rec, tasks)
            async with asyncio.timeout(60):  # a second of the line is on the air
                while not any(rec.speaking(i).size > 100 for i in list(rec.frames)):
                    await asyncio.sleep(0.05)
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
            events = await transcript_of(worker, room, timeout=30)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert events[-1]["reason"] == "shutdown", events[-1]
    [said] = [e for e in events if e["event"] == "utterance"]
    assert said["persona"] == "tim" and said["interrupted"] is True, said
    assert said["text"] and LONG_LINE.startswith(said["text"].rstrip(".")), said["text"]


def words(text: str) -> list[str]:
    return text.lower().replace(".", "").replace(",", "").split()


async def test_two_people_speaking_a_second_apart_are_both_heard_and_answered_in_order(
    worker: WorkerProcess,
):
    """25: two humans with their own microphones speak different lines, the second starting a
    second after the first while the first still speaks: each is heard by an ear of their own
    (both transcribed, each attributed to its speaker) and each line is answered once, in the
    order they finished (ana's short line ends first)."""
    room = unique("two-voices")
    lines = {
        "caller-ana": "Yes please, I have photos of it.",
        "caller-ben": "Hi, my blender arrived with a cracked jar. Order 88123.",
    }
    async with server_api() as lk:
        await dispatch(lk, worker.agent_name, room, json.dumps({"scenario": "inbound_support"}))
        async with (
            joined(human_token(room, "caller-ana")) as ana,
            joined(human_token(room, "caller-ben")) as ben,
        ):
            sources = {"caller-ana": await microphone(ana), "caller-ben": await microphone(ben)}
            await transcript_event(worker, room, "utterance", timeout=60)  # the greeting
            await asyncio.gather(  # both microphones live at once; ben starts a second later
                speak(sources["caller-ana"], lines["caller-ana"]),
                speak(sources["caller-ben"], lines["caller-ben"], voice="onyx", after_s=1.0),
            )
            async with asyncio.timeout(90):
                while True:
                    events = current_events(worker, room)
                    heard = [e for e in events if e["event"] == "human"]
                    if len(heard) == 2 and events[-1]["event"] == "utterance":
                        break
                    await asyncio.sleep(0.1)
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    events = await transcript_of(worker, room)
    talk = [e for e in events if e["event"] in ("human", "utterance")][1:]  # after the greeting
    heard = [e for e in talk if e["event"] == "human"]
    assert [h["identity"] for h in heard] == ["caller-ana", "caller-ben"], heard
    for h in heard:
        words = set(h["text"].lower().replace(".", "").replace(",", "").split())
        assert words >= set(
            lines[h["identity"]].lower().replace(".", "").replace(",", "").split()[-3:]
        ), h
    # each line answered once, in order: human, answer, human, answer
    kinds = [e["event"] for e in talk[:4]]
    assert kinds == ["human", "utterance", "human", "utterance"], talk
    assert len(heard) == 2


async def test_a_second_person_barging_in_cuts_off_the_answer_to_the_first(
    worker: WorkerProcess,
):
    """25: ana speaks and the lead answers her; while it speaks, ben (another person with his
    own microphone) speaks over it: the answer is cut off by a human, ben's line is heard,
    attributed to him, and answered."""
    room = unique("barge-two")
    async with server_api() as lk:
        await dispatch(lk, worker.agent_name, room, json.dumps({"scenario": "inbound_support"}))
        async with (
            joined(human_token(room, "caller-ana")) as ana,
            joined(human_token(room, "caller-ben")) as ben,
        ):
            ana_mic, ben_mic = await microphone(ana), await microphone(ben)
            await transcript_event(worker, room, "utterance", timeout=60)  # the greeting
            await speak(ana_mic, "Hi, my blender arrived with a cracked jar. Order 88123.")
            await transcript_event(worker, room, "human", timeout=30)
            async with asyncio.timeout(60):  # the lead is answering ana, out loud
                while not any(
                    p.attributes.get("lk.agent.state") == "speaking"
                    for p in ana.remote_participants.values()
                ):
                    await asyncio.sleep(0.05)
            await speak(ben_mic, "Yes please, I have photos of it.", voice="onyx")
            cut = await transcript_event(worker, room, "interrupted", timeout=30)
            async with asyncio.timeout(60):
                while True:
                    events = current_events(worker, room)
                    bens = [
                        e for e in events if e["event"] == "human" and e["identity"] == "caller-ben"
                    ]
                    if bens and any(
                        e["event"] == "utterance" and e["at"] > bens[0]["at"] for e in events
                    ):
                        break
                    await asyncio.sleep(0.1)
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    events = await transcript_of(worker, room)
    assert cut["by"] == "human"
    heard = [e for e in events if e["event"] == "human"]
    assert [h["identity"] for h in heard] == ["caller-ana", "caller-ben"], heard
    answers = [e for e in events if e["event"] == "utterance"]
    assert any(a.get("interrupted") for a in answers[1:]), answers  # the answer to ana, cut
    assert answers[-1]["at"] > heard[-1]["at"]  # ben is answered
