"""`python -m workers.simulate SCENARIO [--json] [--human TEXT ...] [--max-turns N]`

Casts the scenario with the selector and runs it on the local stage (no LiveKit, no audio):
real AgentSessions, the real floor, tools and transcript. With OPENAI_API_KEY set the personas
use their OpenAI models in text mode; without it, the offline model speaks each persona's
script lines from the scenario. Exit 0 when the room ran, 2 on bad input, 3 when no cast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from agents.models import build_text_models
from agents.offline import offline_models
from config.catalog import Catalog, load_catalog
from config.errors import ConfigError
from config.logging import configure_logging
from config.scenario import Scenario, check_scenario, load_scenario
from config.settings import Settings, get_settings
from workers.floor import Floor
from workers.room import ModelsFor, RoomResult, run_room, seats_for
from workers.selector import NoCapacity, Selector
from workers.stage import LocalStage
from workers.tokens import persona_identity


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m workers.simulate", description=__doc__.split("\n\n")[1]
    )
    p.add_argument("scenario", help="scenario name in SCENARIOS_DIR, a JSON file, or inline JSON")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the live lines"
    )
    p.add_argument(
        "--human",
        action="append",
        default=None,
        metavar="TEXT",
        help="a caller line (repeatable); replaces the scenario's human_lines",
    )
    p.add_argument("--max-turns", type=int, default=None, help="override the scenario's turn limit")
    p.add_argument("--room", default=None, help="room name (default: sim-<scenario>)")
    return p.parse_args(argv)


class Printer:
    """Prints the conversation as it happens, one readable line per event."""

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, ev: dict[str, Any]) -> None:
        kind = ev["event"]
        line = None
        if kind == "room_started":
            cast = ", ".join(f"{c['name']} ({c['role']}: {c['reason']})" for c in ev["cast"])
            line = f"room {ev['room']}: {ev['scenario']} with {cast}"
        elif kind == "utterance":
            line = f"{ev['name']} ({ev['role']}): {ev['text']}"
        elif kind == "human":
            line = f"{ev['identity']} (human): {ev['text']}"
        elif kind == "tool_call":
            mark = "error" if ev["is_error"] else "->"
            line = f"    [tool] {ev['tool']}({ev['args'] or ''}) {mark} {ev['output']}"
        elif kind == "hand_over":
            line = f"    [hand-over] {ev['from_persona']} -> {ev['to']}: {ev['summary']}"
        elif kind == "error":
            line = f"    [error] {ev.get('persona', '')} {ev['error']}"
        elif kind == "room_ended":
            line = f"ended: {ev['reason']} ({ev['detail']}) after {ev['turns']} turns"
        if line is not None:
            print(line, file=self.out, flush=True)


def _with_overrides(scenario: Scenario, max_turns: int | None) -> Scenario:
    if max_turns is None:
        return scenario
    rules = scenario.rules.model_copy(update={"max_turns": max_turns})
    return scenario.model_copy(update={"rules": rules})


async def simulate(
    scenario: Scenario,
    catalog: Catalog,
    settings: Settings,
    *,
    human_lines: list[str] | None = None,
    room: str | None = None,
    listeners: list[Any] = (),  # type: ignore[assignment]
    selector: Selector | None = None,
    models_for: ModelsFor | None = None,
    on_floor: Callable[[Floor], None] | None = None,
) -> RoomResult:
    """Cast and run one room on the local stage; the cast's leases are released at the end,
    whatever ends the room. `models_for` overrides the model choice (tests)."""
    selector = selector or Selector(catalog)
    cast = selector.cast(scenario)
    room = room or f"sim-{scenario.name}"
    try:
        names = {m.slot.role: m.persona.name for m in cast.members}
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        if models_for is None and key:
            models_for = lambda persona: build_text_models(persona, openai_api_key=key)  # noqa: E731
        elif models_for is None:
            models_for = lambda persona: offline_models(persona, scenario, names)  # noqa: E731
        lines = scenario.human_lines if human_lines is None else tuple(human_lines)
        return await run_room(
            room=room,
            scenario=scenario,
            catalog=catalog,
            seats=seats_for(cast.members, room, persona_identity),
            stage=LocalStage(lines),
            models_for=models_for,
            transcripts_dir=settings.transcripts_dir,
            listeners=listeners,
            on_floor=on_floor,
        )
    finally:
        cast.release()


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    settings = get_settings()
    configure_logging(settings.log_format, "ERROR")  # the conversation is the output
    try:
        catalog = load_catalog(settings.catalog_path)
        scenario = load_scenario(
            args.scenario, scenarios_dir=settings.scenarios_dir, allow_outside=True
        )
        check_scenario(scenario, catalog, args.scenario)
    except ConfigError as e:
        print(f"workers.simulate: {e}", file=sys.stderr)
        return 2
    if args.max_turns is not None and args.max_turns < 1:
        print("workers.simulate: --max-turns must be at least 1", file=sys.stderr)
        return 2
    scenario = _with_overrides(scenario, args.max_turns)
    offline = settings.openai_api_key is None
    events: list[dict[str, Any]] = []
    listeners: list[Any] = [events.append]
    if not args.json:
        print(
            "model: offline (no OPENAI_API_KEY set): personas speak their scenario script lines"
            if offline
            else "model: OpenAI, text mode (OPENAI_API_KEY is set)",
            flush=True,
        )
        listeners.append(Printer())
    try:
        result = asyncio.run(
            simulate(
                scenario,
                catalog,
                settings,
                human_lines=args.human,
                room=args.room,
                listeners=listeners,
            )
        )
    except NoCapacity as e:
        print(f"workers.simulate: no cast: {e}", file=sys.stderr)
        return 3
    if args.json:
        print(
            json.dumps(
                {
                    "model": "offline" if offline else "openai",
                    "scenario": scenario.name,
                    "ended": {
                        "reason": result.reason,
                        "detail": result.detail,
                        "turns": result.turns,
                    },
                    "events": events,
                    "outcome": result.outcome,
                    "transcript": str(result.transcript_path),
                },
                default=str,
            )
        )
    else:
        print("outcome:")
        for entry in result.outcome.get("entries", []):
            result_text = json.dumps(entry["result"], default=str)
            print(f"  {entry['persona']}: {entry['tool']} -> {result_text}")
        print(f"transcript: {result.transcript_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
