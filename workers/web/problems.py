"""Every error the rooms API answers, as one JSON shape, never a traceback or a secret:

    {"error": {"code": "bad_scenario", "message": "...", "exit_status": 2,
               "problems": [{"source": "inline", "path": "$.cast[0].role",
                             "message": "...", "hint": "..."}]}}

`code` and `exit_status` are what `workers.dispatch` would say (its BadInput code, exit 2 for
bad input, 1 for a LiveKit error); `problems` carries config's JSON paths one by one.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from config.errors import ConfigError, printable
from workers.cli_input import EXIT_BAD_INPUT, BadInput, is_inline

EXIT_API = 1  # workers.dispatch's, for a LiveKit server error

# BadInput's codes, and where the field lives in the API's request body.
_FIELD_OF = {"bad_identity": "$.identity", "bad_room": "$.room"}
_STATUS_OF = {"not_configured": 503, "bad_settings": 503}


def problem(
    status: int,
    code: str,
    message: str,
    *,
    exit_status: int | None = None,
    problems: list[dict[str, str]] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": printable(message)}
    if exit_status is not None:
        body["exit_status"] = exit_status
    if problems:
        body["problems"] = problems
    return web.json_response({"error": body}, status=status)


def bad_input(e: BadInput) -> web.Response:
    """What `workers.dispatch` prints for this input (exit 2), as JSON."""
    cause, message = e.__cause__, str(e)
    if isinstance(cause, ConfigError):
        # an inline scenario's source is its own text: say "inline", as the worker's log does
        source = "inline" if is_inline(cause.source) else cause.source
        items = [
            {"source": source, "path": p.path, "message": p.message, "hint": p.hint}
            for p in cause.problems
        ]
        message = "\n".join(printable(f"{source}: {p.render()}") for p in cause.problems)
    elif e.code in _FIELD_OF:
        items = [{"source": "request", "path": _FIELD_OF[e.code], "message": str(e), "hint": ""}]
    else:
        items = []
    status = _STATUS_OF.get(e.code, 400)
    return problem(status, e.code, message, exit_status=EXIT_BAD_INPUT, problems=items)


def bad_request(path: str, message: str) -> web.Response:
    """The body itself is unusable (not JSON, a field of the wrong type)."""
    items = [{"source": "request", "path": path, "message": message, "hint": ""}]
    return problem(400, "bad_request", f"{path}: {message}", problems=items)
