"""A persona's place in a room: who sits there, in which slot, why, and as whom.

Every caster (the selector's cast in `workers.simulate`, the job plan in the worker) makes its
seats here, so a persona's participant identity is chosen in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from config.catalog import Persona
from config.scenario import CastSlot
from workers.tokens import persona_identity

if TYPE_CHECKING:
    from workers.capacity.selector import CastMember


@dataclass(frozen=True)
class Seat:
    persona: Persona
    slot: CastSlot
    reason: str  # why the selector chose this persona ("primary", "backup: ...")
    identity: str  # its participant identity in the room

    @classmethod
    def in_room(
        cls,
        persona: Persona,
        slot: CastSlot,
        reason: str,
        room: str,
        *,
        job_id: str = "",
        identity: str = "",
    ) -> Seat:
        """The seat with the persona's identity for `room` and `job_id`, or `identity` when
        the participant already exists (the job's own, as livekit joined it)."""
        return cls(persona, slot, reason, identity or persona_identity(persona.id, room, job_id))

    @property
    def required(self) -> bool:
        return self.slot.required


def seats_for(cast_members: Sequence[CastMember], room: str) -> list[Seat]:
    """Seats from a selector Cast's members (persona, slot, reason), as `Seat.in_room` makes
    every seat."""
    return [Seat.in_room(m.persona, m.slot, m.reason, room) for m in cast_members]
