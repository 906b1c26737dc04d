"""An aiohttp application served so that no client can exhaust the process serving it.

The worker's main process takes rooms; every HTTP port it listens on (the `/stats` endpoint,
livekit's health server, the Prometheus endpoint) runs on the same event loop, under the same
file-descriptor limit. Each is served through a `BoundedSite`:
- at most `max_connections` (64) connections are held; at the limit the OLDEST is dropped, so an
  idle flood costs a bounded number of file descriptors and a fresh health check is still served;
- a connection that sends no complete request within `idle_timeout_s` (5 s), or stays idle that
  long between requests, is closed (aiohttp's keep-alive timer, armed from the connect);
- dropped connections and bad requests are logged as one summary line per kind and
  `summary_interval_s` (`<name>_connections_refused`, `<name>_http_errors`, with a count), never
  a line per connection.

`summarize_accept_errors` does the same for asyncio's own "socket.accept() out of system
resource" error (descriptors exhausted), which it logs for every listener up to 100 times a tick:
one flood measured 37,000 such lines (19 MB) in 12 s.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from config.logging import get_logger

log = get_logger("workers.main.bounded_http")

SHUTDOWN_TIMEOUT_S = 2.0  # in-flight responses are instant; do not wait aiohttp's 60 s
MAX_ERROR_CHARS = 200  # a client's bytes can end up in an error's text
ACCEPT_OUT_OF_RESOURCES = "socket.accept() out of system resource"  # asyncio's message


@dataclass(frozen=True)
class Bounds:
    """What one port may cost: connections held, idle time, log lines."""

    max_connections: int = 64
    idle_timeout_s: float = 5.0
    summary_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")
        if self.idle_timeout_s <= 0 or self.summary_interval_s <= 0:
            raise ValueError("idle_timeout_s and summary_interval_s must be > 0")


class BoundedSite:
    """Serves `app` on host:port within `bounds`; `name` prefixes its summary events."""

    def __init__(
        self, app: web.Application, *, host: str, port: int, name: str, bounds: Bounds = Bounds()
    ) -> None:
        self._app, self._host, self._port = app, host, port
        self._name, self._bounds = name, bounds
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._limit: _ConnectionLimit | None = None
        self._tallies: list[_Tally] = []
        self.port: int | None = None  # the bound port (port 0 picks a free one)

    @property
    def open_connections(self) -> int:
        """Connections held now (never above max_connections)."""
        return self._limit.open if self._limit is not None else 0

    @property
    def dropped_connections(self) -> int:
        """Connections closed since start because the limit was reached."""
        return self._limit.dropped.total if self._limit is not None else 0

    async def start(self) -> int:
        """Listen; returns the bound port."""
        loop = asyncio.get_running_loop()
        bounds, name = self._bounds, self._name
        interval = bounds.summary_interval_s
        dropped = _Tally(
            loop, f"{name}_connections_refused", interval, limit=bounds.max_connections
        )
        http_errors = _Tally(loop, f"{name}_http_errors", interval)
        runner = web.AppRunner(
            self._app,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            # Handler arguments (aiohttp's RequestHandler): the keep-alive timer starts at the
            # connect, so it also bounds the wait for a first request's headers.
            keepalive_timeout=bounds.idle_timeout_s,
            lingering_time=bounds.idle_timeout_s,
            logger=_SummaryLogger(http_errors),
        )
        await runner.setup()
        try:
            assert runner.server is not None  # set by setup()
            limit = _ConnectionLimit(runner.server, bounds.max_connections, dropped)
            self._listener = await loop.create_server(limit, self._host, self._port)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._limit, self._tallies = runner, limit, [dropped, http_errors]
        self.port = int(self._listener.sockets[0].getsockname()[1])
        return self.port

    async def aclose(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()  # stop accepting first
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._limit is not None:
            self._limit.abort_all()  # e.g. a peer that never reads what aiohttp wrote
        if listener is not None:
            await listener.wait_closed()
        for tally in self._tallies:
            tally.flush()  # the last window's count is not lost


def summarize_accept_errors(
    loop: asyncio.AbstractEventLoop, interval_s: float = Bounds.summary_interval_s
) -> None:
    """Route asyncio's accept errors (descriptors exhausted) on `loop` into one summary line
    per interval (`accept_out_of_resources`); every other error goes where it went before."""
    previous = loop.get_exception_handler()
    tally = _Tally(loop, "accept_out_of_resources", interval_s)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == ACCEPT_OUT_OF_RESOURCES:
            tally.add(error=repr(context.get("exception"))[:MAX_ERROR_CHARS])
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class _Tally:
    """Counts one kind of event and logs at most one line per interval: the first event at
    once (count 1), then the count of the rest at the end of each busy interval."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, event: str, interval_s: float, **fields: Any
    ) -> None:
        self._loop = loop
        self._event, self._interval_s, self._fields = event, interval_s, fields
        self.total = 0
        self._pending = 0
        self._last: dict[str, Any] = {}
        self._window: asyncio.TimerHandle | None = None

    def add(self, **details: Any) -> None:
        self.total += 1
        self._last = details
        if self._window is None:
            self._emit(1)
            self._window = self._loop.call_later(self._interval_s, self._end_window)
        else:
            self._pending += 1

    def _end_window(self) -> None:
        self._window = None
        if self._pending:
            self._emit(self._pending)  # still busy: the next window starts now
            self._pending = 0
            self._window = self._loop.call_later(self._interval_s, self._end_window)

    def flush(self) -> None:
        if self._window is not None:
            self._window.cancel()
            self._window = None
        if self._pending:
            self._emit(self._pending)
            self._pending = 0

    def _emit(self, count: int) -> None:
        log.warning(
            self._event, count=count, interval_s=self._interval_s, **self._fields, **self._last
        )


class _SummaryLogger(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's per-connection logger. It logs one ERROR with a traceback per bad request (a
    flood would be a flood of tracebacks); here each becomes a count in one summary line."""

    def __init__(self, tally: _Tally) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self._tally = tally

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level < logging.WARNING:
            return  # aiohttp's debug lines (e.g. a TLS hello on a plain port)
        self._tally.add(error=_describe(msg, args, kwargs.get("exc_info")))


def _describe(msg: object, args: tuple[Any, ...], exc_info: Any) -> str:
    if exc_info is True:
        exc_info = sys.exc_info()[1]
    elif isinstance(exc_info, tuple):
        exc_info = exc_info[1]
    if isinstance(exc_info, BaseException):
        text = repr(exc_info)  # repr: a client's control characters stay escaped
    else:
        try:
            text = repr(str(msg) % args if args else str(msg))
        except (TypeError, ValueError):
            text = repr(msg)
    return text[:MAX_ERROR_CHARS]


class _ConnectionLimit:
    """The protocol factory asyncio serves: at most `limit` connections reach aiohttp. At the
    limit the oldest connection is aborted (not closed: a peer that does not read would keep a
    closing socket open), so a flood holds a bounded number of descriptors and a new request
    is still served."""

    def __init__(
        self, handler_factory: Callable[[], asyncio.Protocol], limit: int, dropped: _Tally
    ) -> None:
        self._handler_factory = handler_factory
        self._limit = limit
        self.dropped = dropped
        self._open: dict[_LimitedConnection, None] = {}  # insertion order: oldest first

    @property
    def open(self) -> int:
        return len(self._open)

    def __call__(self) -> _LimitedConnection:
        return _LimitedConnection(self)

    def admit(self, conn: _LimitedConnection) -> asyncio.Protocol:
        while len(self._open) >= self._limit:
            oldest = next(iter(self._open))
            del self._open[oldest]
            oldest.abort()
            self.dropped.add()
        self._open[conn] = None
        return self._handler_factory()

    def release(self, conn: _LimitedConnection) -> None:
        self._open.pop(conn, None)

    def abort_all(self) -> None:
        for conn in list(self._open):
            del self._open[conn]
            conn.abort()


class _LimitedConnection(asyncio.Protocol):
    """One accepted connection: counted by the limit, served by aiohttp's handler."""

    def __init__(self, limit: _ConnectionLimit) -> None:
        self._limit = limit
        self._transport: asyncio.Transport | None = None
        self._handler: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        # Admitted here, not in the factory: asyncio calls these one at a time, so the count
        # is exact, and a transport that failed to build never holds a place.
        self._handler = self._limit.admit(self)
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received() if self._handler is not None else None

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._limit.release(self)
        handler, self._handler = self._handler, None
        if handler is not None:
            handler.connection_lost(exc)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
