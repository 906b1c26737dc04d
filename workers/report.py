"""`python -m workers.report [TRANSCRIPTS...] [--by persona|tenant|campaign|human_agent|day]
[--json]`: what the rooms were, who handled them, how they ended and what they cost.

Reads room transcripts (files, or folders of `*.jsonl`; default `TRANSCRIPTS_DIR`) and sums
them per persona, tenant, campaign, human agent or UTC day: rooms, how they ended, turns, time
and cost in the catalog's currency, with the usage behind it in `--json`. A room counts once
for each of its personas under `--by persona`, with that persona's own cost; under
`--by human_agent`, once for each human agent a transfer rang in it: the calls they took, how
their ring legs ended and their time on the line (the per-agent call log). Files that cannot
be read, or that are cut (a room still running, a worker that died), are listed below the
table and never stop the report. Exit 0 with a report, 2 on bad arguments (a path that does
not exist).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.call_log import RoomSummary, read_room, transcript_files
from workers.cli_input import EXIT_BAD_INPUT, EXIT_OK, BadInput, read_settings

GROUPINGS = ("persona", "tenant", "campaign", "human_agent", "day")


@dataclass
class Group:
    key: str
    rooms: int = 0
    partial: int = 0
    turns: int = 0
    duration_s: float = 0.0
    cost: float = 0.0
    unpriced: int = 0  # rooms whose cost leaves out a paid model with no price
    endings: Counter[str] = field(default_factory=Counter)
    usage: dict[str, float] = field(default_factory=dict)
    currencies: set[str] = field(default_factory=set)
    # human agents only: calls taken, ring legs by outcome, time on the line
    handled: int = 0
    legs: Counter[str] = field(default_factory=Counter)
    talk_s: float = 0.0

    def add_human(self, room: RoomSummary, human: str) -> None:
        part = room.humans[human]
        self.handled += part.handled
        self.legs.update(part.legs)
        self.talk_s += part.talk_s
        self.add(room)

    def add(self, room: RoomSummary, *, persona: str | None = None) -> None:
        self.rooms += 1
        self.partial += bool(room.partial)
        self.turns += room.turns
        self.duration_s += room.duration_s or 0.0
        self.endings[room.reason or "unfinished"] += 1
        uses = [room.personas[persona]] if persona else list(room.personas.values())
        for use in uses:
            self.cost += use.cost
            for name, amount in use.usage.items():
                self.usage[name] = self.usage.get(name, 0.0) + amount
        if not all(use.priced for use in uses):
            self.unpriced += 1
        if room.currency:
            self.currencies.add(room.currency)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "rooms": self.rooms,
            "partial_rooms": self.partial,
            "turns": self.turns,
            "duration_s": round(self.duration_s, 3),
            "endings": dict(sorted(self.endings.items())),
            "cost": round(self.cost, 6),
            "currency": ",".join(sorted(self.currencies)),
            "rooms_with_unpriced_models": self.unpriced,
            "usage": {k: round(v, 3) for k, v in sorted(self.usage.items())},
            "calls_handled": self.handled,
            "ring_legs": dict(sorted(self.legs.items())),
            "talk_s": round(self.talk_s, 3),
        }


def group_rooms(rooms: Iterable[RoomSummary], by: str) -> list[Group]:
    groups: dict[str, Group] = {}

    def group(key: str) -> Group:
        return groups.setdefault(key or "unknown", Group(key or "unknown"))

    for room in rooms:
        if by == "persona":
            for pid in room.personas:
                group(pid).add(room, persona=pid)
        elif by == "human_agent":
            for human in room.humans:
                group(human).add_human(room, human)
        else:
            group({"tenant": room.tenant, "campaign": room.campaign, "day": room.day}[by]).add(room)
    return sorted(groups.values(), key=lambda g: (-g.rooms, g.key))


def render_table(groups: Sequence[Group], by: str) -> str:
    if by == "human_agent":
        header: tuple[str, ...] = (by, "rooms", "calls", "talk min", "ring legs", "ended by")
        rows = [
            (
                g.key,
                str(g.rooms) + (f" ({g.partial} partial)" if g.partial else ""),
                str(g.handled),
                f"{g.talk_s / 60:.1f}",
                ", ".join(f"{status} {n}" for status, n in g.legs.most_common()),
                _endings(g),
            )
            for g in groups
        ]
    else:
        header = (by, "rooms", "turns", "minutes", "cost", "ended by")
        rows = [
            (
                g.key,
                str(g.rooms) + (f" ({g.partial} partial)" if g.partial else ""),
                str(g.turns),
                f"{g.duration_s / 60:.1f}",
                f"{g.cost:.4f} {','.join(sorted(g.currencies))}".rstrip()
                + (" +unpriced" if g.unpriced else ""),
                _endings(g),
            )
            for g in groups
        ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    head = "  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True))
    return "\n".join([head.rstrip(), *(line.rstrip() for line in lines)])


def _endings(g: Group) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in g.endings.most_common())


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="workers.report", description=__doc__.split("\n")[2])
    parser.add_argument(
        "paths", nargs="*", type=Path, help="transcript files or folders (default TRANSCRIPTS_DIR)"
    )
    parser.add_argument("--by", choices=GROUPINGS, default="persona")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    return parser.parse_args(argv)


@dataclass
class Report:
    by: str
    rooms: list[RoomSummary]  # read, whole or partial
    unreadable: list[RoomSummary]

    @property
    def groups(self) -> list[Group]:
        return group_rooms(self.rooms, self.by)

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "rooms": len(self.rooms),
            "groups": [g.to_dict() for g in self.groups],
            "partial": [{"file": str(s.path), "why": s.partial} for s in self.rooms if s.partial],
            "unreadable": [{"file": str(s.path), "why": s.problem} for s in self.unreadable],
        }


def build_report(paths: Sequence[Path], by: str) -> Report:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise BadInput(f"no such file or folder: {', '.join(missing)}")
    summaries = [read_room(path) for path in transcript_files(paths)]
    return Report(
        by,
        rooms=[s for s in summaries if not s.problem],
        unreadable=[s for s in summaries if s.problem],
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        paths = args.paths or [read_settings().transcripts_dir]
        report = build_report(paths, args.by)
    except BadInput as e:
        print(f"workers.report: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return EXIT_OK
    groups = report.groups
    print(
        render_table(groups, args.by)
        if groups
        else f"no room transcripts in {', '.join(map(str, paths))}"
    )
    for room in report.rooms:
        if room.partial:
            print(f"partial: {room.path}: {room.partial}")
    for room in report.unreadable:
        print(f"unreadable: {room.path}: {room.problem}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
