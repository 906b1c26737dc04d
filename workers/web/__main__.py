"""`python -m workers.web [--host H] [--port P]`: serve the page and the rooms API.
`python -m workers.web room SCENARIO [--room NAME]`: make a fresh room, print the page's link.

Exit 0 done, 2 bad input or settings (a non-loopback address without WEB_API_KEY included),
1 LiveKit server error.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys
import webbrowser
from collections.abc import Sequence
from urllib.parse import quote

from aiohttp import web
from livekit import api

from config.logging import configure_logging
from config.settings import Settings
from workers.cli_input import EXIT_BAD_INPUT, EXIT_OK, SCENARIO_HELP, BadInput, read_settings
from workers.dispatch import EXIT_API, create, prepare_request
from workers.web.app import LIVEKIT_ERRORS, create_app

PROG = "workers.web"
ROOM_LINK_IDENTITY = "web-guest"  # checked by prepare; the page asks for the real one


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, settings: Settings) -> None:
    if settings.web_api_key is None and not is_loopback(host):
        raise BadInput(
            f"WEB_HOST {host!r} is not loopback: set WEB_API_KEY so the rooms API is not "
            "open to anyone who reaches it (or bind 127.0.0.1)",
            "bad_settings",
        )


def page_link(host: str, port: int, room: str) -> str:
    shown = host if is_loopback(host) or host not in ("0.0.0.0", "::") else "127.0.0.1"
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/?room={quote(room)}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
        description="Serve the web page and rooms API, or make a room and print its link.",
    )
    parser.add_argument("--host", help="address to bind (default WEB_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default WEB_PORT, 8090; 0: any free)")
    sub = parser.add_subparsers(dest="command")
    room = sub.add_parser("room", help="create a room for SCENARIO and print the page's link")
    room.add_argument("scenario", help=SCENARIO_HELP)
    room.add_argument("--room", help="room name (default: <scenario>-<random>)")
    return parser


async def _serve(host: str, port: int, settings: Settings) -> None:
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    # the line tests and users wait for: where the page is
    print(f"{PROG}: serving http://{host}:{bound}/", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _room(args: argparse.Namespace, host: str, port: int, settings: Settings) -> int:
    req = prepare_request(
        settings, scenario=args.scenario, identity=ROOM_LINK_IDENTITY, room=args.room
    )
    try:
        asyncio.run(create(req, settings.agent_name))
    except api.TwirpError as e:
        print(f"{PROG}: the LiveKit server refused: {e.code}: {e.message}", file=sys.stderr)
        return EXIT_API
    except LIVEKIT_ERRORS as e:
        print(
            f"{PROG}: cannot reach the LiveKit server at {req.livekit.url}: {e!r}", file=sys.stderr
        )
        return EXIT_API
    link = page_link(host, port, req.room)
    print(link)
    if os.environ.get("DISPLAY") or sys.platform == "darwin":
        webbrowser.open(link)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = read_settings()
        host = args.host or settings.web_host
        port = settings.web_port if args.port is None else args.port
        if args.command == "room":
            return _room(args, host, port, settings)
        check_exposure(host, settings)
    except BadInput as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    configure_logging(settings.log_format, settings.log_level)
    try:
        asyncio.run(_serve(host, port, settings))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        print(f"{PROG}: cannot listen on {host}:{port}: {e.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
