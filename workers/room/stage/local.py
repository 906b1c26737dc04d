"""The local stage: every persona's AgentSession in-process, with no room and no network
(text in, text out), and a scripted caller. Tests and `workers.simulate` run here."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from livekit.agents import AgentSession

from workers.room.human_line import HumanLine
from workers.room.seat import Seat
from workers.room.stage.base import (
    Humans,
    Stage,
    StageCast,
    StageError,
    StageEvents,
    close_sessions,
    make_session,
    started_or_raise,
)


class ScriptedHumans:
    """The local stage's caller: says its next line at each pause between rounds of persona
    turns and whenever the floor turns to it; hangs up when it has nothing left to say."""

    def __init__(self, lines: Sequence[str], identity: str = "caller") -> None:
        self._lines = [h for h in (HumanLine.of(identity, text) for text in lines) if h]
        self._here = bool(self._lines)

    def next_line(self, *, pause: bool) -> HumanLine | None:
        return self._lines.pop(0) if pause and self._lines else None

    async def wait_line(self) -> HumanLine | None:
        if self._lines:
            return self._lines.pop(0)
        self._here = False
        return None

    def present(self) -> bool:
        return self._here

    def left(self) -> bool:
        return False  # the floor learns it from wait_line(): a caller hangs up, never "leaves"

    async def arrival(self, timeout_s: float) -> bool:
        return self._here  # the scripted caller is there from the start, or never comes


class LocalStage(Stage):
    """Sessions with no room and no network: text in, text out."""

    def __init__(
        self,
        human_lines: Sequence[str] = (),
        *,
        human_identity: str = "caller",
        humans: Humans | None = None,  # another kind of humans (tests feed live-like lines)
    ) -> None:
        super().__init__()
        self.humans = humans if humans is not None else ScriptedHumans(human_lines, human_identity)
        self._sessions: list[AgentSession] = []

    async def _open(self, cast: StageCast, events: StageEvents) -> dict[str, AgentSession]:
        async def start(seat: Seat) -> AgentSession:
            session = make_session(cast.models_for(seat.persona))
            self._sessions.append(session)
            await session.start(cast.agents[seat.persona.id])
            return session

        results = await asyncio.gather(*(start(s) for s in cast.seats), return_exceptions=True)
        try:
            return started_or_raise(cast.seats, results)
        except StageError:
            await self.close()
            raise

    async def close(self) -> None:
        self._closing()
        sessions, self._sessions = self._sessions, []
        await close_sessions(sessions)
