"""The room's outcome: every state-changing tool result, with the persona that produced it.

One Outcome per room. Tools record into it the moment they succeed, and the transcript writer
subscribes to it, so nothing a tool did is lost when the room ends, however it ends.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from config.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class OutcomeEntry:
    persona: str
    tool: str
    args: dict[str, Any]
    result: dict[str, Any]
    at: float  # unix time

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Outcome:
    """Append-only record of what the personas of one room changed."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.entries: list[OutcomeEntry] = []
        self._clock = clock
        self._subscribers: list[Callable[[OutcomeEntry], object]] = []

    def record(
        self, persona_id: str, tool: str, args: dict[str, Any], result: dict[str, Any]
    ) -> OutcomeEntry:
        # copies: later changes to the room's data must not rewrite what was recorded
        entry = OutcomeEntry(
            persona=persona_id,
            tool=tool,
            args=copy.deepcopy(args),
            result=copy.deepcopy(result),
            at=self._clock(),
        )
        self.entries.append(entry)
        for fn in list(self._subscribers):
            try:
                fn(entry)
            except Exception:
                # a broken subscriber must not fail the tool: the entry is already kept here
                log.exception("outcome_subscriber_failed", tool=tool, persona=persona_id)
        return entry

    def subscribe(self, fn: Callable[[OutcomeEntry], object]) -> None:
        """Call `fn` with each entry recorded from now on (the transcript writer streams them)."""
        self._subscribers.append(fn)

    def by_tool(self, tool: str) -> list[OutcomeEntry]:
        return [e for e in self.entries if e.tool == tool]

    def to_dict(self) -> dict[str, Any]:
        return {"entries": [e.to_dict() for e in self.entries]}
