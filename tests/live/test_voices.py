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
from livekit import rtc

from tests.live.harness import (
    WorkerProcess,
    dispatch,
    joined,
    now,
    observer_token,
    server_api,
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
