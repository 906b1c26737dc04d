"""People's phones for the transfer tests, LiveKit-free: a Ringer (workers/humans/ring.py, the
boundary to LiveKit's SIP service) whose legs the test answers, declines or lets ring, and a
bridge whose person the test hangs up. The desk, the transfer and the floor are the real ones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from config.humans import HumanAgent
from workers.humans.ring import LegEnd


@dataclass
class Phone:
    """One person's phone: rings until the test answers or declines it, or it is hung up."""

    behaviour: str = "answer"  # answer (at once) | held (until answer()) | decline | busy | never
    rang: asyncio.Event = field(default_factory=asyncio.Event)
    _end: asyncio.Future[LegEnd] | None = None
    hung_up_at: float | None = None

    def answer(self) -> None:
        if self._end is not None and not self._end.done():
            self._end.set_result(LegEnd("answered"))


class Phones:
    """The Ringer: each human's leg follows its Phone's behaviour."""

    def __init__(self, behaviours: dict[str, str], consult_room: str = "r-consult") -> None:
        self.consult_room = consult_room
        self.phones = {h: Phone(b) for h, b in behaviours.items()}
        self.hung_up: list[str] = []
        self.legs_up: set[str] = set()

    async def ring(self, human: HumanAgent, timeout_s: float) -> LegEnd:
        phone = self.phones[human.id]
        phone._end = asyncio.get_running_loop().create_future()
        phone.rang.set()
        if phone.behaviour == "answer":
            phone.answer()
        elif phone.behaviour == "decline":
            phone._end.set_result(LegEnd("declined", 603, "Decline"))
        elif phone.behaviour == "busy":
            phone._end.set_result(LegEnd("busy", 486, "Busy Here"))
        try:
            async with asyncio.timeout(timeout_s):
                end = await phone._end
        except TimeoutError:
            return LegEnd("timed_out", None, "sip request timed out")
        if end.status == "answered":
            self.legs_up.add(human.id)
        return end

    async def hang_up(self, human: HumanAgent) -> None:
        phone = self.phones[human.id]
        phone.hung_up_at = time.monotonic()
        self.hung_up.append(human.id)
        self.legs_up.discard(human.id)
        if phone._end is not None and not phone._end.done():  # livekit-sip's CANCEL
            phone._end.set_result(LegEnd("timed_out", None, "canceled: sip request timed out"))


class PersonOnLine:
    """The bridged person (workers/humans/bridge.py's HumanOnLine): `hang_up()` ends them."""

    def __init__(self, human: HumanAgent, briefing: str, record: Any) -> None:
        self.human = human
        self.briefing = briefing
        self._gone: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._record = record
        self.closed = False

    def hang_up(self, why: str = "hung_up") -> None:
        if not self._gone.done():
            self._gone.set_result(why)
            self._record("human_left", human=self.human.id, reason=why)

    async def wait_gone(self) -> str:
        return await asyncio.shield(self._gone)

    async def close(self) -> None:
        self.closed = True
        self.hang_up("closed")


@dataclass
class Bridges:
    """The bridge: puts the winner on the line (or fails, as a person who hung up at once)."""

    fail: bool = False
    hang_up_at_once: bool = False
    lines: list[PersonOnLine] = field(default_factory=list)
    ttses: list[Any] = field(default_factory=list)

    async def __call__(
        self, *, human: HumanAgent, leg_identity: str, briefing: str, tts: Any, record: Any
    ) -> PersonOnLine:
        if self.fail:
            raise RuntimeError(f"{leg_identity} left the consult room during the briefing")
        record("briefing", human=human.id, text_length=len(briefing), seconds=0.0)
        record("human_joined", human=human.id, identity=human.identity)
        line = PersonOnLine(human, briefing, record)
        self.lines.append(line)
        self.ttses.append(tts)
        if self.hang_up_at_once:
            line.hang_up()
        return line


def named(events: Sequence[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == name]


class Events(list[dict[str, Any]]):
    """A transcript's `record(event, **fields)` kept in memory; `until` waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Event()

    def __call__(self, event: str, **fields: Any) -> None:
        self.append({"event": event, **fields})
        self._changed.set()

    async def until(self, holds: Any, bound_s: float = 10.0) -> None:
        async with asyncio.timeout(bound_s):
            while not holds(self):
                self._changed.clear()
                await self._changed.wait()


class StayingCaller:
    """The room's caller (the floor's Humans) for a call that outlasts its script: says its
    `lines` one at a time when the floor turns to it, then stays on the line until `leave()`.
    `say()` is a line said at any moment (heard before the next persona turn)."""

    def __init__(self, lines: Sequence[str], identity: str = "caller") -> None:
        from workers.room.human_line import HumanLine

        self._line_of = HumanLine.of
        self._identity = identity
        self._script = [text for text in lines]
        self._said: list[Any] = []
        self._gone = False
        self._changed = asyncio.Event()

    def say(self, text: str, identity: str = "") -> None:
        line = self._line_of(identity or self._identity, text)
        if line is not None:
            self._said.append(line)
            self._changed.set()

    def leave(self) -> None:
        self._gone = True
        self._changed.set()

    def leave_after(self, first: str, then: str) -> Any:
        """A transcript listener: the caller hangs up at the first `then` after a `first`."""
        seen: list[str] = []

        def listen(record: dict[str, Any]) -> None:
            if record["event"] == first:
                seen.append(first)
            elif record["event"] == then and seen:
                self.leave()

        return listen

    def next_line(self, *, pause: bool) -> Any:
        return self._said.pop(0) if self._said else None

    async def wait_line(self) -> Any:
        if self._script:
            return self._line_of(self._identity, self._script.pop(0))
        while not self._said and not self._gone:
            self._changed.clear()
            await self._changed.wait()
        return self._said.pop(0) if self._said else None

    def present(self) -> bool:
        return not self._gone

    def left(self) -> bool:
        return self._gone

    async def arrival(self, timeout_s: float) -> bool:
        return True
