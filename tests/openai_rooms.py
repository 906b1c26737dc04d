"""A room whose lead hears a human's audio, through the real OpenAI plugins against
workers/openai_server (the room harness itself is workers.openai_server.rooms)."""

from __future__ import annotations

from typing import Any

from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.llm import RealtimeModel

from tests.test_session_hears_audio import HumanAudio
from workers.openai_server.rooms import SpeakingStage
from workers.room.stage import StageCast, StageEvents
from workers.room.stage.livekit import LiveHumans


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
