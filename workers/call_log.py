"""Rooms as the transcripts record them: one `RoomSummary` per transcript file, for reports.

Reading never stops at a bad file. A file that cannot be read (missing, no permission, not
UTF-8) is a summary with `problem` set and nothing else; a file that is cut (a room still
running, a worker that died, a half-written last line) is read as far as it goes and marked
`partial` with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TRANSCRIPT_GLOB = "*.jsonl"


@dataclass
class PersonaUse:
    """One persona's part in a room: its usage record's cost (None: a paid model unpriced)."""

    persona: str
    role: str
    cost: float = 0.0
    priced: bool = True
    usage: dict[str, float] = field(default_factory=dict)  # "llm.output_tokens": 59, ...


@dataclass
class HumanPart:
    """One human agent's part in a room: how each ring leg to them ended (`ring_leg`
    statuses: answered, declined, timed_out, cancelled, ...), whether the caller was handed
    to them (`hand_over_human`), and how long they were on the line (`human_left`)."""

    human: str
    legs: dict[str, int] = field(default_factory=dict)
    handled: bool = False
    talk_s: float = 0.0


@dataclass
class RoomSummary:
    path: Path
    room: str = ""
    scenario: str = ""
    campaign: str = ""
    tenant: str = ""
    started_at: float | None = None
    duration_s: float | None = None
    turns: int = 0
    reason: str = ""  # how the room ended (room_ended's reason)
    currency: str = ""
    personas: dict[str, PersonaUse] = field(default_factory=dict)
    humans: dict[str, HumanPart] = field(default_factory=dict)  # human agents rung or reached
    partial: str = ""  # why the record is incomplete, if it is
    problem: str = ""  # why the file could not be read at all, if it could not

    @property
    def day(self) -> str:
        if self.started_at is None:
            return "unknown"
        return datetime.fromtimestamp(self.started_at, UTC).date().isoformat()

    @property
    def cost(self) -> float:
        return sum(p.cost for p in self.personas.values())

    @property
    def priced(self) -> bool:
        return all(p.priced for p in self.personas.values())


def transcript_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The transcript files named, a folder standing for its `*.jsonl` files (sorted)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(path.glob(TRANSCRIPT_GLOB))
        else:
            yield path


def read_room(path: Path) -> RoomSummary:
    summary = RoomSummary(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        summary.problem = getattr(e, "strerror", None) or str(e)
        return summary
    bad_lines = 0
    ended = False
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad_lines += 1
            continue
        if isinstance(record, dict):
            ended |= _take(summary, record)
    if not ended:
        summary.partial = "no room_ended record (still running, or its worker stopped)"
    elif bad_lines:
        summary.partial = f"{bad_lines} unreadable line(s)"
    if not summary.room and not summary.personas and not ended:
        summary.problem = "not a room transcript (no room_started record)"
    return summary


def _take(summary: RoomSummary, record: dict[str, Any]) -> bool:
    """Fold one record into the summary; True for the room's end."""
    event = record.get("event")
    if event == "room_started":
        summary.room = str(record.get("room", ""))
        summary.scenario = str(record.get("scenario", ""))
        summary.campaign = str(record.get("campaign", ""))
        summary.tenant = str(record.get("tenant", ""))
        summary.started_at = _number(record.get("at"))
        for member in record.get("cast") or ():
            if isinstance(member, dict) and member.get("persona"):
                pid = str(member["persona"])
                summary.personas[pid] = PersonaUse(pid, str(member.get("role", "")))
    elif event == "usage":
        pid = str(record.get("persona", ""))
        use = summary.personas.setdefault(pid, PersonaUse(pid, str(record.get("role", ""))))
        use.cost = _number(record.get("cost")) or 0.0
        use.priced = not record.get("unpriced")
        summary.currency = str(record.get("currency", summary.currency))
        summary.tenant = summary.tenant or str(record.get("tenant") or "")
        for model in record.get("models") or ():
            if isinstance(model, dict):
                for key, value in model.items():
                    amount = _number(value)
                    if amount and key.endswith(("_tokens", "_count", "_duration")):
                        name = f"{model.get('kind', '')}.{key}"
                        use.usage[name] = use.usage.get(name, 0.0) + amount
    elif event in HUMAN_EVENTS and record.get("human"):
        _take_human(
            summary.humans.setdefault(str(record["human"]), HumanPart(str(record["human"]))), record
        )
    elif event == "utterance":
        summary.turns = max(summary.turns, int(_number(record.get("turn")) or 0))
    elif event == "room_ended":
        summary.reason = str(record.get("reason", ""))
        summary.duration_s = _number(record.get("duration_s"))
        summary.turns = int(_number(record.get("turns")) or summary.turns)
        return True
    return False


HUMAN_EVENTS = frozenset({"ring_leg", "hand_over_human", "human_left"})


def _take_human(part: HumanPart, record: dict[str, Any]) -> None:
    event = record["event"]
    if event == "ring_leg":
        status = str(record.get("status", ""))
        if status and status != "ringing":  # a leg's outcome, not its start
            part.legs[status] = part.legs.get(status, 0) + 1
    elif event == "hand_over_human":
        part.handled = True
    else:
        part.talk_s += _number(record.get("talked_s")) or 0.0


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
