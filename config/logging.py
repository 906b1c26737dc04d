"""structlog for our events and for the stdlib loggers livekit uses, through one pipeline.

`bind_context(room=..., job_id=..., persona=...)` binds fields once per task; every event
logged afterwards in that task (ours or livekit's) carries them.

Tracebacks never show local variables, in either format: a frame's locals may hold a secret
(an API key handed to a client), and a log is read by more people than the process.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

LogFormat = Literal["json", "console"]

_SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.stdlib.ExtraAdder(),
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
]


def _exception_of(exc_info: Any) -> BaseException | None:
    """The exception an event's `exc_info` names (True: the one being handled now)."""
    if exc_info is True:
        return sys.exc_info()[1]
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        return exc_info[1]
    return None


def one_line_exception(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: the event's traceback becomes one `exc` field, the exception's
    type and message on one line (a command's user reads lines, not frames). Not `exception`:
    the console renderer prints that field as a block below the line."""
    exc_info = event.pop("exc_info", None)
    error = _exception_of(exc_info) if exc_info else None
    if error is not None:
        message = " ".join(str(error).split())
        event["exc"] = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return event


def configure_logging(
    fmt: LogFormat = "console",
    level: str = "INFO",
    stream: Any = None,
    *,
    tracebacks: bool = True,
) -> None:
    """Route structlog and stdlib logging through the same renderer (JSON or console).
    `tracebacks=False`: every event is one line, its exception in one `exc` field."""
    renderer: Any
    exc: Any  # a structlog processor, or None
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        exc = structlog.processors.format_exc_info  # stdlib's text traceback: no locals
    else:
        # The console default is rich's traceback WITH locals: the plain one has none.
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
        exc = None

    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if not tracebacks:
        final.append(one_line_exception)
    if exc is not None:
        final.append(exc)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED_PROCESSORS,
        processors=[*final, renderer],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def bind_context(**fields: Any) -> None:
    """Bind fields (room, job_id, persona) to every later event of the current task."""
    structlog.contextvars.bind_contextvars(**fields)


def clear_context() -> None:
    structlog.contextvars.clear_contextvars()


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
