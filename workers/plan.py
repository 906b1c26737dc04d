"""`python -m workers.plan SCENARIO [--load PERSONA_ID=N ...] [--strategy S] [--json]`

Shows the cast the selector would choose now, with the reason for each choice. `--load`
simulates rooms already in use. With CAPACITY_URL set it starts from every worker's rooms in
the shared store (read once, never claimed). Exit 0 with a cast, 3 when no cast is possible,
2 on bad input (a store that cannot answer included).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from config.catalog import Catalog, Strategy
from config.scenario import Scenario
from config.settings import Settings
from workers.capacity.open_store import open_capacity_store
from workers.capacity.selector import Cast, NoCapacity, Selector
from workers.capacity.store import CapacityStoreUnavailable
from workers.cli_input import (
    EXIT_BAD_INPUT,
    EXIT_NO_CAST,
    EXIT_OK,
    SCENARIO_HELP,
    BadInput,
    load_scenario_input,
    read_settings,
)


@dataclass(frozen=True)
class Plan:
    """What was asked: the scenario, the effective strategy and the simulated loads."""

    scenario: Scenario
    strategy: Strategy
    loads: dict[str, int]
    # With CAPACITY_URL: every worker's rooms now, per persona (read, never claimed)
    live: dict[str, int] | None = None

    def header(self) -> dict[str, Any]:
        head = {
            "scenario": self.scenario.name,
            "campaign": self.scenario.campaign,
            "strategy": self.strategy.value,
            "loads": self.loads,
        }
        if self.live is not None:
            head["live_rooms"] = self.live
        return head


def _load_arg(text: str) -> tuple[str, int]:
    """argparse type for `--load PERSONA_ID=N` (syntax only; the catalog checks the rest)."""
    persona_id, sep, count = text.partition("=")
    persona_id, count = persona_id.strip(), count.strip()
    if not sep or not persona_id or not count.isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not PERSONA_ID=N with N a whole number >= 0 (e.g. tim=2)"
        )
    return persona_id, int(count)


class _Parser(argparse.ArgumentParser):
    """Usage errors also come out as one JSON object when `--json` was asked for."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if self.json_errors:
            print(json.dumps({"error": f"{self.prog}: {message}"}, indent=2))
        super().error(message)


def build_parser(json_errors: bool = False) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m workers.plan",
        description="Show the cast the selector would choose now for SCENARIO, with reasons.",
        epilog="Exit status: 0 a cast, 3 no cast possible, 2 bad input.",
    )
    parser.add_argument("scenario", help=SCENARIO_HELP)
    parser.add_argument(
        "--load",
        action="append",
        default=[],
        type=_load_arg,
        metavar="PERSONA_ID=N",
        help="pretend PERSONA_ID already holds N rooms (repeatable)",
    )
    parser.add_argument(
        "--strategy",
        choices=[s.value for s in Strategy],
        help="override the campaign's selection strategy",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.json_errors = json_errors
    return parser


def _loads(pairs: list[tuple[str, int]], catalog: Catalog) -> dict[str, int]:
    loads: dict[str, int] = {}
    for persona_id, count in pairs:
        where = f"--load {persona_id}={count}"
        persona = catalog.persona_by_id.get(persona_id)
        if persona is None:
            known = ", ".join(sorted(catalog.persona_by_id))
            raise BadInput(f"{where}: unknown persona {persona_id!r} (known: {known})")
        if persona_id in loads:
            raise BadInput(f"{where}: {persona_id} is given twice; give it once")
        if count and not persona.active:
            raise BadInput(f"{where}: {persona_id} is inactive, so it holds no rooms")
        if count > persona.max_concurrent:
            raise BadInput(f"{where}: {persona_id} can hold at most {persona.max_concurrent} rooms")
        loads[persona_id] = count
    return loads


def _prepare(args: argparse.Namespace, settings: Settings) -> tuple[Selector, Plan]:
    """Load and check everything; raises BadInput (or NoCapacity from a --load)."""
    loaded = load_scenario_input(args.scenario, settings)
    catalog, scenario = loaded.catalog, loaded.scenario
    loads = _loads(args.load, catalog)
    live = _live_rooms(settings, catalog)
    selector = Selector(catalog)  # in memory: planning never claims in a shared store
    for persona_id, count in (live or {}).items():
        for _ in range(count):
            selector.acquire_persona(persona_id, reason="live rooms (CAPACITY_URL)")
    for persona_id, count in loads.items():
        for _ in range(count):
            selector.acquire_persona(persona_id, reason="simulated load (--load)")
    strategy = Strategy(args.strategy or catalog.campaign(scenario.campaign).strategy)
    return selector, Plan(scenario, strategy, loads, live)


def _live_rooms(settings: Settings, catalog: Catalog) -> dict[str, int] | None:
    """Every worker's rooms per persona in the shared store, or None without one. Read once,
    nothing claimed; a store that cannot answer is bad input here (exit 2)."""
    if settings.capacity_url is None:
        return None
    store = open_capacity_store(settings)
    try:
        counts = store.snapshot([p.id for p in catalog.personas], ()).counts
    except CapacityStoreUnavailable as e:
        raise BadInput(f"the capacity store cannot answer: {e}") from None
    finally:
        store.close()
    return {pid: n for pid, n in counts.items() if n}


def _rows(cast: Cast) -> list[dict[str, Any]]:
    return cast.to_dict()["members"]


def _table(plan: Plan, cast: Cast) -> str:
    head = plan.header()
    lines = [f"scenario {head['scenario']} · campaign {head['campaign']} · {head['strategy']}"]
    if plan.live is not None:
        shown = ", ".join(f"{pid}={n}" for pid, n in plan.live.items()) or "none"
        lines.append(f"live rooms (every worker, CAPACITY_URL): {shown}")
    if plan.loads:
        lines.append("loads: " + ", ".join(f"{pid}={n}" for pid, n in plan.loads.items()))
    rows = [("ROLE", "PERSONA", "NAME", "REASON", "REQUIRED")]
    rows += [
        (m["role"], m["persona"], m["name"], m["reason"], "yes" if m["required"] else "no")
        for m in _rows(cast)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    # Reasons for empty optional slots are long; they go under the table, not in it.
    lines += [f"not filled (optional) {role}: {why}" for role, why in cast.missing]
    return "\n".join(lines)


def _emit_error(message: str, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    if as_json:
        print(json.dumps({**(extra or {}), "error": message}, indent=2))
    print(message, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(json_errors="--json" in argv).parse_args(argv)
    try:
        selector, plan = _prepare(args, read_settings())
    except (BadInput, NoCapacity) as exc:
        _emit_error(str(exc), args.json)
        return EXIT_BAD_INPUT
    try:
        cast = selector.cast(plan.scenario, plan.strategy)
    except NoCapacity as exc:
        message = f"no cast: {exc}"
        if args.json:
            print(json.dumps({**plan.header(), "error": message, "role": exc.role}, indent=2))
        else:
            print(message)
        return EXIT_NO_CAST
    if args.json:
        missing = [{"role": role, "reason": why} for role, why in cast.missing]
        print(json.dumps({**plan.header(), "cast": _rows(cast), "missing": missing}, indent=2))
    else:
        print(_table(plan, cast))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
