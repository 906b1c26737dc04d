"""`python -m workers.humans list [--json]` and `python -m workers.humans set ID STATE`

An operator's view and switch of the human agents while workers run: `list` shows each one
(id, tenant, name, skills, capacity, state, busy seats); `set` makes one available, busy or
offline, at once for every worker (in Redis with CAPACITY_URL, else in HUMANS_STATE_PATH,
which the worker reads at each transfer). Exit 0 done, 2 bad id, state, catalog or settings
(one line naming the fix), 1 the capacity store's Redis did not answer.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from config.catalog import Catalog, load_catalog
from config.errors import ConfigError
from config.humans import AVAILABILITY
from config.settings import Settings
from workers.capacity.open_store import open_capacity_store
from workers.capacity.store import CapacityStoreUnavailable
from workers.cli_input import EXIT_BAD_INPUT, EXIT_OK, BadInput, read_settings
from workers.humans.availability import AvailabilityBook, check_state, open_availability
from workers.humans.claims import HumanClaims
from workers.humans.core import DeskCore

PROG = "workers.humans"
EXIT_STORE = 1
COLUMNS = ("id", "tenant", "name", "skills", "capacity", "state", "busy seats")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
        description="Show human agents, or set one available, busy or offline for every worker.",
        epilog="Exit status: 0 done, 2 bad id, state, catalog or settings, 1 Redis did not answer.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every human agent, their state and busy seats")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    setting = commands.add_parser("set", help="set one human agent's state")
    setting.add_argument("id", help="the human agent's id (catalog human_agents[].id)")
    setting.add_argument("state", help=f"one of: {', '.join(AVAILABILITY)}")
    return parser


def _catalog(settings: Settings) -> Catalog:
    try:
        return load_catalog(settings.catalog_path)
    except ConfigError as e:
        raise BadInput(str(e)) from None


def _set(
    catalog: Catalog, book: AvailabilityBook, settings: Settings, args: argparse.Namespace
) -> str:
    human = catalog.human_by_id.get(args.id)
    if human is None:
        known = ", ".join(sorted(catalog.human_by_id)) or "none"
        raise BadInput(
            f"no human agent {args.id!r} in {settings.catalog_path} (known: {known}; "
            "add it to human_agents there)"
        )
    try:
        state = check_state(args.state)
    except ValueError as e:
        raise BadInput(str(e)) from None
    was = book.states([human])[human.id]
    try:
        book.set(human, state)
    except OSError as e:
        raise BadInput(
            f"cannot write {settings.humans_state_path} ({e.strerror or type(e).__name__}): "
            "fix its folder's permissions or set HUMANS_STATE_PATH"
        ) from None
    return f"{human.id}: {state} (was {was}), for every worker ({book.describe()})"


def _list(catalog: Catalog, book: AvailabilityBook, settings: Settings, as_json: bool) -> str:
    shared = settings.capacity_url is not None
    store = open_capacity_store(settings)
    try:
        rows = DeskCore(catalog, HumanClaims(store), book).overview()
    finally:
        store.close()
    agents = [row.to_dict() for row in rows]
    if not shared:  # the seats are counted in the worker's own memory, not here
        for agent in agents:
            agent["busy_seats"] = None
            del agent["status"]
    if as_json:
        return json.dumps({"states": book.describe(), "agents": agents})
    table = [COLUMNS] + [
        (
            a["id"],
            a["tenant"],
            a["name"],
            ",".join(a["skills"]) or "-",
            str(a["capacity"]),
            a["state"],
            "-" if a["busy_seats"] is None else str(a["busy_seats"]),
        )
        for a in agents
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    if not agents:
        lines.append(f"(no human_agents in {settings.catalog_path})")
    lines.append(f"states: {book.describe()}")
    if not shared:
        lines.append(
            "busy seats: counted in each worker's memory (no CAPACITY_URL): see its /stats"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = read_settings()
        catalog = _catalog(settings)
        book = open_availability(settings)
        try:
            if args.command == "set":
                print(_set(catalog, book, settings, args))
            else:
                print(_list(catalog, book, settings, args.json))
        finally:
            book.close()
    except BadInput as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except CapacityStoreUnavailable as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_STORE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
