"""A room's way to a person: what the floor calls when a persona uses `transfer_to_human`.

It ties the room-independent `Transfer` (ring, claim, bridge: workers/humans/transfer.py) to
this room: the scenario's transfer settings and contact, the briefing built from the room's
transcript (workers/humans/briefing.py), and the stage's way of letting the personas leave."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.espeak_tts import EspeakTTS
from config.catalog import Catalog, Persona
from config.humans import HumanAgent
from config.logging import get_logger
from config.scenario import Scenario
from workers.humans.briefing import RoomNotes, briefing_text
from workers.humans.desk import HumanDesk
from workers.humans.policy import assigned_agents
from workers.humans.ring import Ringer
from workers.humans.transfer import Connected, Failed, HumanOnLine, Record, Transfer
from workers.room.transcript import Transcript

log = get_logger("workers.humans.room_transfer")

Leave = Callable[[Sequence[str]], Awaitable[None]]  # the personas (ids) leave the caller's room


@dataclass
class RoomTransfer:
    transfer: Transfer
    scenario: Scenario
    notes: RoomNotes
    leave_room: Leave
    record: Callable[..., Any]
    personas_left: bool = False
    _connected: Connected | None = field(default=None, repr=False)

    def winner_name(self) -> str | None:
        winner = self.transfer.winner
        return winner.name if winner is not None else None

    def _briefing(self, persona: Persona, reason: str, summary: str) -> Callable[[HumanAgent], str]:
        context = self.scenario.context

        def brief(human: HumanAgent) -> str:
            return briefing_text(
                human_name=human.name,
                persona_name=persona.name,
                company=str(context.get("company") or ""),
                context=context,
                reason=reason,
                summary=summary,
                notes=self.notes,
            )

        return brief

    async def run(
        self, persona: Persona, reason: str, summary: str, session: Any
    ) -> Connected | Failed:
        """Ring, claim, brief (in `persona`'s voice: its session's TTS) and bridge."""
        skill = self.scenario.transfer.skill or persona.role
        result = await self.transfer.run(
            persona=persona.id,
            skill=skill,
            briefing=self._briefing(persona, reason, summary),
            # a realtime persona speaks through its model: the briefing has the offline voice
            tts=getattr(session, "tts", None) or EspeakTTS(voice=persona.voice, key=persona.id),
        )
        if isinstance(result, Connected):
            self._connected = result
        return result

    async def wait_gone(self) -> str:
        """Until the person's call ends (they hung up, or the bridge closed); their seat is
        then released."""
        connected = self._connected
        if connected is None:
            return "not_connected"
        try:
            return await connected.line.wait_gone()
        finally:
            await self.transfer.aclose()

    async def leave(self, personas: Sequence[str]) -> None:
        """The personas leave the caller with the person (after the take-back window)."""
        if self.personas_left:
            return
        self.personas_left = True
        self.record("personas_left", personas=list(personas))
        await self.leave_room(personas)

    async def aclose(self) -> None:
        await self.transfer.aclose()


class Bridge(Protocol):
    """workers/humans/bridge.py's warm_hand_over with this room's server and rooms bound."""

    def __call__(
        self, *, human: HumanAgent, leg_identity: str, briefing: str, tts: Any, record: Record
    ) -> Awaitable[HumanOnLine]: ...


def transfer_for_room(
    *,
    room: str,
    scenario: Scenario,
    catalog: Catalog,
    desk: HumanDesk,
    ringer: Ringer,
    bridge: Bridge,
    leave: Leave,
) -> Callable[[Transcript], RoomTransfer]:
    """What run_room calls with the room's transcript once it has one: the room's transfer,
    recording into that transcript and briefing from it."""

    def build(transcript: Transcript) -> RoomTransfer:
        notes = RoomNotes()
        transcript.subscribe(notes)

        def hand_over(
            *, human: HumanAgent, leg_identity: str, briefing: str, tts: Any
        ) -> Awaitable[HumanOnLine]:
            return bridge(
                human=human,
                leg_identity=leg_identity,
                briefing=briefing,
                tts=tts,
                record=transcript.write,
            )

        tenant = catalog.tenant_of(scenario.campaign).id
        transfer = Transfer(
            call=room,
            tenant=tenant,
            desk=desk,
            ringer=ringer,
            hand_over=hand_over,
            record=transcript.write,
            ring_timeout_s=scenario.transfer.ring_timeout_s,
            assigned=assigned_agents(catalog, tenant, scenario.context),
        )
        return RoomTransfer(transfer, scenario, notes, leave, transcript.write)

    return build
