"""Rooms on the local stage whose personas run the real OpenAI plugins against this server,
each session's audio output captured (so a caller sees the frames a persona spoke): what the
benchmarks and the tests run, and `--write-catalog` writes for a developer's own runs."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice import io
from livekit.plugins import silero

from agents.endpoints import ModelClients
from agents.models import room_models
from agents.session_models import SessionModels
from config.catalog import Catalog, Persona, parse_catalog
from config.scenario import Scenario
from config.settings import Settings
from workers.capacity.selector import Selector
from workers.openai_server.server import OpenAIServer, scripted_brains
from workers.room.runner import RoomResult, run_room
from workers.room.seat import seats_for
from workers.room.stage import Stage, StageCast, StageEvents
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


def served_catalog_data(
    catalog_data: dict[str, Any],
    server: OpenAIServer,
    modes: Mapping[str, str],
    inactive: tuple[str, ...] = (),
    fallbacks: Mapping[str, str] = {},
    key_env: str = KEY_ENV,
) -> dict[str, Any]:
    """The catalog's JSON with the personas of `modes` (id -> "pipeline"/"realtime") on the
    server, each with its own base URL and the key in `key_env`; `inactive` never cast;
    `fallbacks`: persona id -> the server persona its fallback model is."""
    data = copy.deepcopy(catalog_data)
    for p in data["personas"]:
        if p["id"] in inactive:
            p["active"] = False
        if p["id"] in modes:
            p["model"] = {
                "mode": modes[p["id"]],
                "base_url": server.base_url(p["id"]),
                "api_key_env": key_env,
            }
            if p["id"] in fallbacks:
                p["model"]["fallback"] = {
                    "base_url": server.base_url(fallbacks[p["id"]]),
                    "api_key_env": key_env,
                }
    return data


def served_catalog(
    catalog_data: dict[str, Any],
    server: OpenAIServer,
    modes: Mapping[str, str],
    inactive: tuple[str, ...] = (),
    fallbacks: Mapping[str, str] = {},
) -> Catalog:
    """`served_catalog_data`, parsed."""
    data = served_catalog_data(catalog_data, server, modes, inactive, fallbacks)
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
    clients: ModelClients | None = None,
) -> tuple[RoomResult, Any, list[dict[str, Any]]]:
    """Cast and run the room as a job does (room_models per persona, the plugins' HTTP
    clients `clients` closed when it ends), leases released."""
    clients = clients if clients is not None else ModelClients()
    stage = stage or SpeakingStage(scenario.human_lines)
    cast = (selector or Selector(catalog)).cast(scenario)
    names = {m.slot.role: m.persona.name for m in cast.members}
    lead = scenario.lead_slot.role
    vad = silero.VAD.load()

    def models(p: Persona) -> SessionModels:
        return room_models(
            p,
            scenario,
            names,
            hears_humans=p.role == lead,
            vad=vad,
            settings=settings,
            clients=clients,
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
        await clients.aclose()
        cast.release()
    return result, stage, read_transcript(result.transcript_path)
