"""`python -m workers.telephony sync|list|prune [--json]`

`sync` makes the LiveKit server's SIP trunks and dispatch rules match the catalog's
`telephony` (a second run changes nothing and says so); `list` shows what the server has (`*`:
made by this project); `prune` deletes what this project made that the catalog no longer names.
Exit 0 done, 2 bad catalog entry or settings (before any network call, one line each: the file,
the JSON path, the fix), 1 server/API error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict

import aiohttp
from livekit import api

from config.catalog import load_catalog
from config.errors import ConfigError
from config.settings import Settings
from workers.cli_input import EXIT_BAD_INPUT, EXIT_OK, BadInput, read_settings
from workers.main.livekit_check import http_url
from workers.telephony import provision
from workers.telephony.resources import Wanted, wanted

PROG = "workers.telephony"
EXIT_API = 1
API_TIMEOUT_S = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
        description="Make the LiveKit server's SIP trunks and dispatch rules match the "
        "catalog's telephony section.",
        epilog="Exit status: 0 done, 2 bad catalog entry or settings, 1 LiveKit server error.",
    )
    parser.add_argument("command", choices=("sync", "list", "prune"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def prepare(settings: Settings) -> Wanted:
    """The catalog's telephony, checked; raises BadInput (no network)."""
    missing = settings.livekit_missing()
    if missing:
        raise BadInput(f"set {', '.join(missing)} (in the environment or .env)")
    try:
        catalog = load_catalog(settings.catalog_path)
        return wanted(
            catalog,
            source=str(settings.catalog_path),
            scenarios_dir=settings.scenarios_dir,
            agent_name=settings.agent_name,
            environ=os.environ,
        )
    except ConfigError as e:
        raise BadInput(str(e)) from None


async def run(command: str, settings: Settings, want: Wanted) -> dict[str, object]:
    livekit = settings.livekit_credentials()
    assert livekit is not None  # main() refused missing settings before any network call
    timeout = aiohttp.ClientTimeout(total=API_TIMEOUT_S)
    async with api.LiveKitAPI(
        http_url(livekit.url),
        livekit.api_key,
        livekit.api_secret.get_secret_value(),
        timeout=timeout,
    ) as lk:
        if command == "list":
            return {"lines": provision.listing(await provision.ServerState.read(lk))}
        changes = await (provision.sync if command == "sync" else provision.prune)(lk, want)
    return {"changes": [asdict(c) for c in changes], "lines": [c.render() for c in changes]}


def summary(command: str, changes: Sequence[dict]) -> str:
    made = [c for c in changes if c["action"] != "unchanged"]
    if command == "prune":
        return f"pruned {len(made)}" if made else "nothing to prune"
    if not made:
        return f"nothing to change: the server matches the catalog ({len(changes)} resources)"
    return f"{len(made)} changed, {len(changes) - len(made)} unchanged"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = read_settings()
        want = prepare(settings)
    except BadInput as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        result = asyncio.run(run(args.command, settings, want))
    except api.ServerError as e:
        print(f"{PROG}: the LiveKit server refused: {e.code}: {e.message}", file=sys.stderr)
        return EXIT_API
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        print(f"{PROG}: cannot reach the LiveKit server: {e!r}", file=sys.stderr)
        return EXIT_API
    if "changes" in result:
        result["summary"] = summary(args.command, result["changes"])  # type: ignore[arg-type]
    if args.json:
        result.pop("lines")
        print(json.dumps(result, indent=2))
        return EXIT_OK
    for line in result["lines"]:  # type: ignore[attr-defined]
        print(line)
    if "summary" in result:
        print(result["summary"])
    return EXIT_OK
