"""Rooms whose personas run the real OpenAI plugins against tests/openai_server, on the local
stage, each session's audio output captured (so a test sees the frames a persona spoke)."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.llm import RealtimeModel
from livekit.agents.voice import io
from livekit.plugins import silero

from agents.models import room_models
from agents.session_models import SessionModels
from config.catalog import Catalog, Persona, parse_catalog
from config.scenario import Scenario
from config.settings import Settings
from tests.openai_server import OpenAIServer, scripted_brains
from tests.test_session_hears_audio import HumanAudio
from workers.capacity.selector import Selector
from workers.room.runner import RoomResult, run_room
from workers.room.seat import seats_for
from workers.room.stage import Stage, StageCast, StageEvents
from workers.room.stage.livekit import LiveHumans
from workers.room.stage.local import LocalStage
from workers.room.transcript import Listener, read_transcript

KEY_ENV = "LOCAL_OPENAI_KEY"


class CapturedAudio(io.AudioOutput):
    """A session's speaker: keeps every frame, and plays each segment out at once."""

    def __init__(self) -> None:
        super().__init__(label="captured", capabilities=io.AudioOutputCapabilities(pause=False))
        self.frames: list[rtc.AudioFrame] = []
        self._pushed: float | None = None  # seconds of the segment being captured

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self.frames.append(frame)
        self._pushed = (self._pushed or 0.0) + frame.duration

    def _finish(self, *, interrupted: bool) -> None:
        played, self._pushed = self._pushed, None
        if played is not None:
            self.on_playback_finished(playback_position=played, interrupted=interrupted)

    def flush(self) -> None:
        super().flush()
        self._finish(interrupted=False)

    def clear_buffer(self) -> None:
        self._finish(interrupted=True)

    @property
    def seconds(self) -> float:
        return sum(f.duration for f in self.frames)


class SpeakingStage(LocalStage):
    """The local stage, each persona's session with an audio output to speak into."""

    def __init__(self, human_lines: tuple[str, ...] = ()) -> None:
        super().__init__(human_lines)
        self.audio: dict[str, CapturedAudio] = {}

    async def _open(self, cast: StageCast, events: StageEvents) -> dict[str, AgentSession]:
        sessions = await super()._open(cast, events)
        for persona_id, session in sessions.items():
            self.audio[persona_id] = CapturedAudio()
            session.output.audio = self.audio[persona_id]
        return sessions


class HearingStage(SpeakingStage):
    """SpeakingStage whose listening persona hears `frames` (a human's audio), wired as the
    LiveKit stage wires it (workers.room.stage.livekit.LiveKitStage._listen): a pipeline agent's
    end of turn, or a realtime model's final transcript, goes to the humans the floor reads."""

    humans: LiveHumans

    def __init__(self, frames: list[rtc.AudioFrame]) -> None:
        super().__init__()
        self.humans = LiveHumans()
        self.humans.joined("caller")
        self._frames = frames
        self.events: StageEvents | None = None

    def human_turn(self, text: str) -> None:
        """The listening pipeline persona's end of a human turn (the room runner passes this
        to its agent, as for the LiveKit stage)."""
        self.humans.said("caller", text)

    async def _open(self, cast: StageCast, events: StageEvents) -> dict[str, AgentSession]:
        self.events = events
        sessions = await super()._open(cast, events)
        listener = sessions[cast.listener]
        if isinstance(listener.llm, RealtimeModel):

            def transcribed(ev: Any) -> None:
                if ev.is_final and ev.transcript.strip():
                    self.humans.said("caller", ev.transcript.strip(), heard_by=cast.listener)

            listener.on("user_input_transcribed", transcribed)
        listener.input.audio = HumanAudio(self._frames)
        return sessions

    def hang_up(self) -> None:
        self.humans.gone("caller")
        assert self.events is not None
        self.events.humans_left()


def served_catalog(
    catalog_data: dict[str, Any],
    server: OpenAIServer,
    modes: Mapping[str, str],
    inactive: tuple[str, ...] = (),
    fallbacks: Mapping[str, str] = {},
) -> Catalog:
    """The shipped catalog with the personas of `modes` (id -> "pipeline"/"realtime") on the
    server, each with its own base URL and the key in KEY_ENV; `inactive` never cast;
    `fallbacks`: persona id -> the server persona its fallback model is."""
    data = copy.deepcopy(catalog_data)
    for p in data["personas"]:
        if p["id"] in inactive:
            p["active"] = False
        if p["id"] in modes:
            p["model"] = {
                "mode": modes[p["id"]],
                "base_url": server.base_url(p["id"]),
                "api_key_env": KEY_ENV,
            }
            if p["id"] in fallbacks:
                p["model"]["fallback"] = {
                    "base_url": server.base_url(fallbacks[p["id"]]),
                    "api_key_env": KEY_ENV,
                }
    return parse_catalog(json.dumps(data), "served-catalog")


def brains_for(catalog: Catalog, scenario: Scenario, *persona_ids: str) -> dict[str, Any]:
    cast = {catalog.persona(pid).role: catalog.persona(pid) for pid in persona_ids}
    return scripted_brains(scenario, cast)


async def run_served_room(
    catalog: Catalog,
    scenario: Scenario,
    settings: Settings,
    transcripts: Path,
    stage: Stage | None = None,
    models_for: Any = None,
    listeners: Sequence[Listener] = (),
    selector: Selector | None = None,
) -> tuple[RoomResult, Any, list[dict[str, Any]]]:
    """Cast and run the room as a job does (room_models per persona), leases released."""
    stage = stage or SpeakingStage(scenario.human_lines)
    cast = (selector or Selector(catalog)).cast(scenario)
    names = {m.slot.role: m.persona.name for m in cast.members}
    lead = scenario.lead_slot.role
    vad = silero.VAD.load()

    def models(p: Persona) -> SessionModels:
        return room_models(
            p, scenario, names, hears_humans=p.role == lead, vad=vad, settings=settings
        )

    try:
        result = await run_room(
            room=f"served-{scenario.name}",
            scenario=scenario,
            catalog=catalog,
            seats=seats_for(cast.members, f"served-{scenario.name}"),
            stage=stage,
            models_for=models_for or models,
            transcripts_dir=transcripts,
            listeners=listeners,
        )
    finally:
        cast.release()
    return result, stage, read_transcript(result.transcript_path)
