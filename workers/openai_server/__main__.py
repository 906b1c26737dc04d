"""`python -m workers.openai_server [SCENARIO] [--port N] [--mode pipeline|realtime]
[--write-catalog FILE]`: serve the scenario's personas as a local OpenAI-compatible server
(chat, speech, transcriptions, realtime), for running the real OpenAI plugins with no paid key.

Each persona of the scenario's roles is served at http://HOST:PORT/<persona id>/v1 and speaks
its role's script once, in order (restart the server for another room). `--write-catalog`
writes the catalog with the personas the selector would cast now pointed at the server, their
key in LOCAL_OPENAI_KEY.
Exit 0 on SIGINT/SIGTERM, 2 on bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from agents.offline import OfflineLLM
from config.catalog import Catalog
from config.models import REALTIME_VOICES
from config.scenario import Scenario
from workers.capacity.selector import Selector
from workers.cli_input import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    SCENARIO_HELP,
    BadInput,
    load_scenario_input,
    read_settings,
)
from workers.openai_server.rooms import KEY_ENV, served_catalog_data
from workers.openai_server.server import KEY, OpenAIServer

PROG = "workers.openai_server"


def scenario_brains(
    catalog: Catalog, scenario: Scenario
) -> tuple[dict[str, OfflineLLM], list[str]]:
    """Per persona of the scenario's roles, the offline model speaking its role's script, the
    other roles named as the selector would cast them now; and the ids of that cast."""
    cast = Selector(catalog).cast(scenario)
    try:
        names = {m.slot.role: m.persona.name for m in cast.members}
        cast_ids = [m.persona.id for m in cast.members]
    finally:
        cast.release()
    brains = {
        p.id: OfflineLLM(scenario.script.get(p.role, ()), me=p.name, names=names)
        for p in catalog.personas
        if p.role in names
    }
    return brains, cast_ids


def served_modes(catalog: Catalog, cast_ids: list[str], mode: str) -> dict[str, str]:
    """The cast, each on `mode`; refused (naming the persona) where its voice cannot be."""
    if mode == "realtime":
        for pid in cast_ids:
            voice = catalog.persona(pid).voice
            if voice not in REALTIME_VOICES:
                raise BadInput(
                    f"--mode realtime: persona {pid!r} has voice {voice!r}, which the realtime "
                    f"model has not (valid: {', '.join(sorted(REALTIME_VOICES))}); change its "
                    "voice in the catalog or use --mode pipeline"
                )
    return dict.fromkeys(cast_ids, mode)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", nargs="?", default="dispatch_checkin", help=SCENARIO_HELP)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8089, help="0: any free port (printed)")
    p.add_argument("--mode", choices=("pipeline", "realtime"), default="pipeline")
    p.add_argument(
        "--write-catalog",
        type=Path,
        metavar="FILE",
        help="write the catalog with the served personas pointed at this server",
    )
    return p


async def serve(args: argparse.Namespace) -> None:
    settings = read_settings()
    loaded = load_scenario_input(args.scenario, settings)
    key = os.environ.get(KEY_ENV) or KEY
    if key == KEY and args.host not in ("127.0.0.1", "localhost", "::1"):
        raise BadInput(
            f"--host {args.host!r} is not loopback: set {KEY_ENV} to a key of your own so the "
            "server does not answer anyone who reaches it with the well-known default key"
        )
    brains, cast_ids = scenario_brains(loaded.catalog, loaded.scenario)
    modes = served_modes(loaded.catalog, cast_ids, args.mode)
    server = OpenAIServer(
        brains, human_lines=loaded.scenario.human_lines, key=key, host=args.host, port=args.port
    )
    try:
        await server.start()
    except OSError as e:
        raise BadInput(f"--port {args.port}: cannot listen ({e.strerror}); pick another") from e
    try:
        if args.write_catalog is not None:
            data = json.loads(settings.catalog_path.read_text(encoding="utf-8"))
            served = served_catalog_data(data, server, modes)
            args.write_catalog.write_text(json.dumps(served, indent=2) + "\n", encoding="utf-8")
        for persona in brains:
            print(f"{persona}: {server.base_url(persona)}", flush=True)
        print(f"serving {loaded.scenario.name} on port {server.port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(serve(args))
    except BadInput as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
