"""A room whose lead hears a human's real audio, with no network and no keys: the lead's
session has the offline voice (eSpeak NG TTS), silero VAD and the offline STT (pocketsphinx);
the human's line is spoken by eSpeak in a voice of its own and fed to the session as its audio
input. The floor gets the line from the session's own end of turn, exactly as on the LiveKit
stage, and exactly one persona answers it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from livekit import rtc
from livekit.agents.voice import io
from livekit.plugins import silero

from agents.espeak_tts import espeak_voice_for, synthesize_pcm
from agents.offline import offline_models
from config.catalog import Catalog
from config.scenario import load_scenario
from workers.capacity.selector import Selector
from workers.room.runner import run_room
from workers.room.seat import seats_for
from workers.room.stage import StageCast, StageEvents
from workers.room.stage.livekit import LiveHumans
from workers.room.stage.local import LocalStage
from workers.room.transcript import read_transcript

pytestmark = pytest.mark.integration
FRAME_MS = 10


def spoken(text: str) -> list[rtc.AudioFrame]:
    """`text` in a human's own eSpeak voice, in 10 ms frames, then 1.5 s of silence (so the
    VAD hears the end of the turn)."""
    rate, pcm = synthesize_pcm(text, espeak_voice_for("caller", key="caller"))
    pcm += b"\x00\x00" * int(rate * 1.5)
    step = rate * FRAME_MS // 1000 * 2
    return [
        rtc.AudioFrame(pcm[i : i + step], rate, 1, len(pcm[i : i + step]) // 2)
        for i in range(0, len(pcm) - step + 1, step)
    ]


class HumanAudio(io.AudioInput):
    """The human's microphone track, as the lead's RoomIO would hand it to its session."""

    def __init__(self, frames: list[rtc.AudioFrame]) -> None:
        super().__init__(label="caller-mic")
        self._frames: Iterator[rtc.AudioFrame] = iter(frames)

    async def __anext__(self) -> rtc.AudioFrame:
        await asyncio.sleep(0)  # let the VAD and STT tasks run between frames
        try:
            return next(self._frames)
        except StopIteration:
            raise StopAsyncIteration from None


class HearingStage(LocalStage):
    """The local stage whose listening persona hears `frames`. The room runner builds that
    persona's agent with this stage's `human_turn`, as for the LiveKit stage: its end of a human
    turn goes to the humans the floor reads."""

    humans: LiveHumans

    def __init__(self, frames: list[rtc.AudioFrame]) -> None:
        super().__init__(humans=LiveHumans())
        self.humans.joined("caller")
        self._frames = frames
        self.events: StageEvents | None = None

    async def _open(self, cast: StageCast, events: StageEvents) -> dict[str, Any]:
        self.events = events
        sessions = await super()._open(cast, events)
        sessions[cast.listener].input.audio = HumanAudio(self._frames)
        return sessions

    def human_turn(self, text: str) -> None:
        self.humans.said("caller", text)

    def hang_up(self) -> None:
        self.humans.gone("caller")
        assert self.events is not None
        self.events.humans_left()


async def test_a_spoken_human_line_reaches_the_floor_and_gets_exactly_one_answer(
    catalog: Catalog, scenarios_dir: Any, tmp_path: Any
) -> None:
    scenario = load_scenario("inbound_support", scenarios_dir=scenarios_dir)
    said = scenario.human_lines[0]
    stage = HearingStage(spoken(said))
    cast = Selector(catalog).cast(scenario)
    names = {m.slot.role: m.persona.name for m in cast.members}
    lead = scenario.lead_slot.role
    vad = silero.VAD.load()
    utterances: list[dict[str, Any]] = []

    def listen(event: dict[str, Any]) -> None:
        if event["event"] == "utterance":
            utterances.append(event)
            if len(utterances) == 2:  # the greeting, then the answer to the human
                stage.hang_up()

    try:
        async with asyncio.timeout(60):
            result = await run_room(
                room="hears-audio",
                scenario=scenario,
                catalog=catalog,
                seats=seats_for(cast.members, "hears-audio"),
                stage=stage,
                models_for=lambda p: offline_models(
                    p, scenario, names, voice=True, hears_humans=p.role == lead, vad=vad
                ),
                transcripts_dir=tmp_path,
                listeners=[listen],
            )
    finally:
        cast.release()
    events = read_transcript(result.transcript_path)
    humans = [e for e in events if e["event"] == "human"]
    assert [h["text"] for h in humans] == [said]
    assert humans[0]["identity"] == "caller"
    after = events[events.index(humans[0]) + 1 :]
    answers = [e for e in after if e["event"] == "utterance"]
    assert len(answers) == 1 and answers[0]["role"] == lead
    assert "replacement" in answers[0]["text"]  # the script's answer to a damaged item
    assert result.reason == "humans_left"
