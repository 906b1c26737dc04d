"""A persona's `transfer_to_human`: ring every person the desk says may take the call, in
parallel; the first to answer claims the call through the desk (one winner, across workers);
every other leg is hung up at once, ringing or answered; the winner is briefed and bridged
into the caller's room (workers/humans/bridge.py). What happens to the room meanwhile (the
hold line, the persona leaving, voicemail) is the floor's (workers/room/floor.py).

TaskRouter's words for the same steps: a reservation per person rung (`ring_leg` ringing),
accepted (`answered` + `call_claimed`), rescinded (`cancelled`, `claim_lost`), timed out.

Transcript events: `transfer_requested`, `ring_leg` (one per leg and status), `call_claimed`,
`claim_lost`, `hand_over_human`, `transfer_failed` (`then` is the floor's: voicemail or
carry_on); the bridge records `briefing`, `human_joined` and `human_left`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from config.humans import HumanAgent
from config.logging import get_logger
from workers.humans.desk import HumanDesk
from workers.humans.ring import LegEnd, Ringer

log = get_logger("workers.humans.transfer")

Record = Callable[..., Any]  # record(event, **fields): the room's transcript
CLEANUP_S = 5.0  # hanging up every leg when a transfer ends, at most
DECLINES = frozenset({"busy", "declined"})


class HumanOnLine(Protocol):
    """The person bridged into the caller's room (workers/humans/bridge.py)."""

    async def wait_gone(self) -> str: ...

    async def close(self) -> None: ...


class HandOver(Protocol):
    """Brief the winner in the consult room, then bridge them into the caller's room."""

    def __call__(
        self, *, human: HumanAgent, leg_identity: str, briefing: str, tts: Any
    ) -> Awaitable[HumanOnLine]: ...


@dataclass(frozen=True)
class Connected:
    human: HumanAgent
    line: HumanOnLine
    answered_s: float  # from the first ring to the answer


@dataclass(frozen=True)
class Failed:
    reason: str  # no_one_free | no_answer | all_declined | hung_up_at_once


@dataclass
class _Leg:
    human: HumanAgent
    task: asyncio.Task[LegEnd]
    cancelled_at: float | None = None
    up: bool = False  # answered, and not hung up by us yet


@dataclass
class Transfer:
    """One room's transfers to people. `call` is the claim's key (the caller's room)."""

    call: str
    tenant: str
    desk: HumanDesk
    ringer: Ringer
    hand_over: HandOver
    record: Record
    ring_timeout_s: float
    assigned: Sequence[str] = ()
    winner: HumanAgent | None = None  # the person who claimed the call, once one has
    _legs: dict[str, _Leg] = field(default_factory=dict)
    _claimed: HumanAgent | None = None  # held in the desk until released
    _line: HumanOnLine | None = None
    _hang_ups: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(
        self, *, persona: str, skill: str | None, briefing: Callable[[HumanAgent], str], tts: Any
    ) -> Connected | Failed:
        """Ring, claim, brief and bridge. Cancelled (the caller hung up, the room ended):
        every leg is hung up and any claim released before the cancellation goes on."""
        try:
            return await self._run(persona, skill, briefing, tts)
        except BaseException:
            await asyncio.shield(self.aclose())
            raise

    async def _run(
        self, persona: str, skill: str | None, briefing: Callable[[HumanAgent], str], tts: Any
    ) -> Connected | Failed:
        self._legs, self.winner = {}, None  # a room may transfer again after a take-back
        humans = await self.desk.ringable(self.tenant, assigned=self.assigned, skill=skill)
        self.record(
            "transfer_requested",
            persona=persona,
            skill=skill,
            assigned=list(self.assigned),
            rung=[h.id for h in humans],
        )
        if not humans:
            return Failed("no_one_free")
        started = time.monotonic()
        winner = await self._ring_all(humans)
        if winner is None:
            ends = [leg.task.result() for leg in self._legs.values() if not leg.task.cancelled()]
            declined = bool(ends) and all(e.status in DECLINES for e in ends)
            answered = any(e.status == "answered" for e in ends)
            return Failed(
                "all_declined" if declined else "no_one_free" if answered else "no_answer"
            )
        answered_s = round(time.monotonic() - started, 3)
        try:
            line = await self.hand_over(
                human=winner, leg_identity=winner.identity, briefing=briefing(winner), tts=tts
            )
        except Exception as e:  # the person hung up during the briefing, or the bridge failed
            log.warning("hand_over_failed", human=winner.id, error=repr(e))
            await self.aclose()
            return Failed("hung_up_at_once")
        self._line = line
        self.record("hand_over_human", from_persona=persona, human=winner.id)
        return Connected(winner, line, answered_s)

    async def _ring_all(self, humans: Sequence[HumanAgent]) -> HumanAgent | None:
        """Every leg at once; the first answered leg whose claim the desk grants wins."""
        loop = asyncio.get_running_loop()
        for human in humans:
            task = loop.create_task(self.ringer.ring(human, self.ring_timeout_s))
            self._legs[human.id] = _Leg(human, task)
            self.record("ring_leg", human=human.id, status="ringing", sip_status_code=None)
        pending = {leg.task: leg for leg in self._legs.values()}
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                await self._leg_ended(pending.pop(task))
        return self.winner

    async def _leg_ended(self, leg: _Leg) -> None:
        end = leg.task.result()
        human = leg.human
        if end.status != "answered":
            status = "cancelled" if leg.cancelled_at is not None else end.status
            self._leg_record(leg, status, end)
            return
        leg.up = True
        self._leg_record(leg, "answered", end)
        if self.winner is not None or not await self.desk.claim(self.call, human):
            self.record("claim_lost", human=human.id)
            self._hang_up(leg)
            return
        self.winner = self._claimed = human
        leg.up = False  # the winner's leg is the call now, hung up only when it ends
        self.record("call_claimed", human=human.id, winner=human.identity)
        log.info("call_claimed", human=human.id)
        for other in self._legs.values():
            if other is not leg and (other.up or not other.task.done()):
                self._hang_up(other)

    def _leg_record(self, leg: _Leg, status: str, end: LegEnd) -> None:
        fields: dict[str, Any] = {"sip_status_code": end.sip_status_code}
        if leg.cancelled_at is not None:
            fields["after_win_s"] = round(time.monotonic() - leg.cancelled_at, 3)
        if end.reason and status not in ("answered", "cancelled"):
            fields["reason"] = end.reason
        self.record("ring_leg", human=leg.human.id, status=status, **fields)

    def _hang_up(self, leg: _Leg) -> None:
        """Hang `leg` up now (in the background: the other legs do not wait for it)."""
        if leg.cancelled_at is None:
            leg.cancelled_at = time.monotonic()
        answered = leg.up
        leg.up = False

        async def hang_up() -> None:
            await self.ringer.hang_up(leg.human)
            if answered:  # a ringing leg records its cancel when its ring returns
                self.record(
                    "ring_leg",
                    human=leg.human.id,
                    status="cancelled",
                    sip_status_code=None,
                    after_win_s=round(time.monotonic() - (leg.cancelled_at or 0.0), 3),
                )

        task = asyncio.get_running_loop().create_task(hang_up())
        self._hang_ups.add(task)
        task.add_done_callback(self._hang_ups.discard)

    async def release(self) -> None:
        """The person's call is over: their seat goes back to the desk (once)."""
        human, self._claimed = self._claimed, None
        if human is not None:
            try:
                await self.desk.release(self.call, human)
            except Exception as e:  # the main process gives it back when the job ends
                log.warning("human_release_failed", human=human.id, error=repr(e))

    async def aclose(self) -> None:
        """Hang up every leg (the winner's too), close the bridge, release the claim.
        Idempotent; bounded by CLEANUP_S."""
        line, self._line = self._line, None
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(CLEANUP_S):
                if line is not None:
                    await line.close()
                for leg in self._legs.values():
                    if not leg.task.done():
                        self._hang_up(leg)
                        leg.task.cancel()
                    elif leg.up:
                        self._hang_up(leg)
                if self.winner is not None:
                    await self.ringer.hang_up(self.winner)
                await asyncio.gather(*self._hang_ups, return_exceptions=True)
                await asyncio.gather(
                    *(leg.task for leg in self._legs.values()), return_exceptions=True
                )
        await self.release()
