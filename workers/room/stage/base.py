"""The stage contract: where a cast's sessions run, and what the room runner hears back.

Two stages implement it: `workers.room.stage.local.LocalStage` (every session in-process with no
room: tests and `workers.simulate`) and `workers.room.stage.livekit.LiveKitStage` (every persona
its own participant in a real LiveKit room). Everything above (floor, relay, hand-over,
transcript) is the same code for both.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from livekit.agents import AgentSession
from livekit.agents.voice.turn import TurnHandlingOptions

from agents.models import END_OF_SPEECH_SILENCE_S, SessionModels
from agents.persona import PersonaAgent
from config.catalog import Persona
from config.logging import get_logger
from workers.room.human_line import HumanLine
from workers.room.seat import Seat

InterruptionMode = Literal["vad", "adaptive"]  # INTERRUPTION_MODE

log = get_logger("workers.room.stage")

ModelsFor = Callable[[Persona], SessionModels]


class StageError(RuntimeError):
    """A required persona could not start or join; the whole cast was torn down."""


class NotAnswered(StageError):
    """The room's outbound call was busy, declined or not answered in time (`no_answer`)."""


class Humans(Protocol):
    """The people in the room, as the floor sees them, whatever the stage."""

    def next_line(self, *, pause: bool) -> HumanLine | None:
        """A human line to answer before the next persona turn, without waiting. `pause` is
        True when a round of persona turns has just ended: a scripted caller speaks then;
        live humans speak whenever they like."""

    async def wait_line(self) -> HumanLine | None:
        """The floor turns to the humans: their next line, or None if none will speak."""

    def present(self) -> bool:
        """Whether anyone human can still speak."""

    def left(self) -> bool:
        """Every human who joined has left (ends the room)."""

    async def arrival(self, timeout_s: float) -> bool:
        """Wait, at most `timeout_s`, for a human to be in the room; whether one is."""


@dataclass(frozen=True)
class StageEvents:
    """What the stage tells the room runner, passed to `open()`."""

    # The stage is closing from outside (the job stopped, the room deleted): ends the floor.
    closing: Callable[[], None]
    # A human started speaking (barge-in): the persona speaking stops.
    human_speaking: Callable[[], None]
    # A persona's connection was dropped: (persona id, whether its seat is required).
    persona_lost: Callable[[str, bool], None]
    # The last human who joined has left.
    humans_left: Callable[[], None]
    # Writes an event into the room's transcript (phone calls: workers/telephony/call.py).
    record: Callable[..., object] = lambda event, **fields: None

    @classmethod
    def ignored(cls) -> StageEvents:
        """For a stage run with no floor listening (benchmarks, tests of the stage itself)."""
        return cls(
            closing=lambda: None,
            human_speaking=lambda: None,
            persona_lost=lambda persona, required: None,
            humans_left=lambda: None,
        )


@dataclass(frozen=True)
class StageCast:
    """Everything a stage needs to start a room's personas."""

    seats: Sequence[Seat]
    agents: Mapping[str, PersonaAgent]  # persona id -> its agent
    models_for: ModelsFor  # called inside the stage, so a failure tears down cleanly
    own: str  # the persona on the job's own connection (the LiveKit stage's ctx.room)
    listener: str  # the persona that hears the humans

    def __post_init__(self) -> None:
        seated = {s.persona.id for s in self.seats}
        unseated = ({self.own, self.listener} | set(self.agents)) - seated
        if unseated or seated - set(self.agents):
            raise ValueError(
                f"stage cast: no seat for {sorted(unseated)}, "
                f"no agent for {sorted(seated - set(self.agents))}"
            )


def make_session(models: SessionModels, interruption: InterruptionMode = "vad") -> AgentSession:
    """The AgentSession for one persona. `vad=None` is passed explicitly: left out, the
    framework would build its own VAD. With no VAD, turn detection is off: the floor decides
    who speaks, and only the persona that hears humans needs VAD.

    With a VAD, turn detection is the VAD's end of speech, chosen here: livekit's default would
    be its local end-of-turn model (~244 MB a process). The floor, not the framework, decides
    who answers a human, so no reply is generated ahead of it either (preemptive generation
    would also spend an offline persona's script lines). `interruption`: how that persona
    notices a human talking over it (INTERRUPTION_MODE)."""
    kwargs: dict[str, Any] = models.session_kwargs()
    if models.vad is None:
        kwargs["turn_handling"] = TurnHandlingOptions(turn_detection=None)
    else:
        # the turn ends max(VAD silence, min_delay) after the speech: the VAD's silence alone
        kwargs["turn_handling"] = TurnHandlingOptions(
            turn_detection="vad",
            preemptive_generation={"enabled": False},
            endpointing={"min_delay": END_OF_SPEECH_SILENCE_S},
        )
        # Chosen, never left to livekit: unset, it picks its hosted adaptive detector in `dev`
        # (a connection to LiveKit's inference gateway; INTERRUPTION_MODE=adaptive opts in).
        kwargs["turn_handling"]["interruption"] = {"mode": interruption}
        # At close, livekit waits for a half-heard human line (2 s by default): the floor has
        # ended by then and would never answer it, so the room need not wait for it.
        kwargs["session_close_transcript_timeout"] = 0.2
    return AgentSession(**kwargs)


class Stage(ABC):
    """Starts a cast's sessions, reports what happens to them, closes them."""

    humans: Humans

    def __init__(self) -> None:
        self._events: StageEvents | None = None
        self._stop_requested = False

    def stop(self) -> None:
        """Asked to stop from outside (the job's stop signal): the floor ends as `shutdown`;
        close() follows from the room runner. Also before open(): the room then ends at once."""
        self._stop_requested = True
        self._closing()

    def _closing(self) -> None:
        events, self._events = self._events, None  # said once
        if events is not None:
            events.closing()

    async def open(self, cast: StageCast, events: StageEvents) -> dict[str, AgentSession]:
        """Start every persona: persona id -> its session. All-or-nothing for required
        seats; optional ones that fail are left out. On a required failure everything started
        is closed and StageError raised."""
        self._events = events
        if self._stop_requested:
            self._closing()
        return await self._open(cast, events)

    @abstractmethod
    async def _open(self, cast: StageCast, events: StageEvents) -> dict[str, AgentSession]: ...

    @abstractmethod
    async def close(self) -> None:
        """Close every session and connection. Idempotent."""

    def human_turn(self, text: str) -> None:
        """What a human said, as the listening persona's session heard it (its agent is built
        with this as `on_human_turn`): the stage knows who said it and tells its humans. A
        stage with no human audio never hears one."""
        raise NotImplementedError(f"{type(self).__name__} has no human audio")

    def session_reports(self) -> dict[str, dict[str, Any]]:
        """Persona id -> livekit's session report, once closed (stages that have them)."""
        return {}


async def close_sessions(sessions: Sequence[AgentSession]) -> None:
    results = await asyncio.gather(*(s.aclose() for s in sessions), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            log.warning("session_close_failed", error=repr(r))


def started_or_raise(seats: Sequence[Seat], results: Sequence[Any]) -> dict[str, Any]:
    """Persona id -> result for the seats that started; StageError if a required one failed
    (every failure is logged)."""
    for seat, result in zip(seats, results, strict=True):
        if isinstance(result, BaseException):
            log.error(
                "persona_start_failed",
                persona=seat.persona.id,
                required=seat.required,
                error=repr(result),
            )
    failed = [
        (s, r)
        for s, r in zip(seats, results, strict=True)
        if isinstance(r, BaseException) and s.required
    ]
    if failed:
        seat, error = failed[0]
        raise StageError(f"{seat.persona.id} ({seat.slot.role}) failed to start: {error!r}")
    return {
        s.persona.id: r
        for s, r in zip(seats, results, strict=True)
        if not isinstance(r, BaseException)
    }
