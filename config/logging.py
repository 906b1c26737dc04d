"""structlog for our events and for the stdlib loggers livekit uses, through one pipeline.

`bind_context(room=..., job_id=..., persona=...)` binds fields once per task; every event
logged afterwards in that task (ours or livekit's) carries them.

Tracebacks never show local variables, in either format: a frame's locals may hold a secret
(an API key handed to a client), and a log is read by more people than the process.
"""

from __future__ import annotations

import logging
import sys
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


def configure_logging(fmt: LogFormat = "console", level: str = "INFO", stream: Any = None) -> None:
    """Route structlog and stdlib logging through the same renderer (JSON or console)."""
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
    final = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
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
