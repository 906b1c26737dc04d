"""livekit-agents' own HTTP servers, served within bounds.

`AgentServer.run()` builds two aiohttp servers of its own in the worker's main process: the
health server (`/`, `/worker` on WORKER_HTTP_PORT) and, with `prometheus_port`, the Prometheus
endpoint (`/metrics`). livekit serves them with aiohttp's defaults, on every address (its
`host=""`): no limit on connections and none on idle time. 1,100 idle connections took a
worker to 1024/1024 descriptors, its health checks timed out and an offered room was lost.

livekit offers no hook to serve them differently, so `bound_livekit_http_servers` intercepts the
two attributes it stores them in and serves the very same application (livekit's routes) through
`BoundedSite`, like `/stats`. The host is livekit's public `host` argument (WORKER_HTTP_HOST).
The Prometheus server's `/metrics` is ours (workers/main/metrics.py): livekit's, in
multiprocess mode, would drop this process's own collectors.
"""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from livekit.agents.utils.http_server import HttpServer

from workers.main.bounded_http import BoundedSite, Bounds
from workers.main.metrics import metrics_response

# Private (livekit-agents 1.8.9, AgentServer.run): the attribute each server is stored in,
# assigned before it is started, and the name of its summary events. A test fails if livekit
# stops assigning them (tests/test_livekit_http.py).
LIVEKIT_HTTP_SERVERS = {"_http_server": "worker_http", "_prometheus_server": "prometheus"}

ServerClass = TypeVar("ServerClass", bound=type)


class BoundedHttpServer:
    """livekit's `HttpServer` shape (`app`, `host`, `port`, `start`, `aclose`) over a
    `BoundedSite`: livekit adds its routes to `app` and starts it as it would its own."""

    def __init__(self, app: web.Application, host: str, port: int, name: str) -> None:
        self._app, self._host, self._port = app, host, port
        self._site = BoundedSite(app, host=host, port=port, name=name, bounds=Bounds())

    @classmethod
    def replacing(cls, server: Any, name: str) -> BoundedHttpServer:
        if not isinstance(server, HttpServer):
            raise TypeError(
                f"livekit-agents stored a {type(server).__name__} where its HttpServer was "
                f"expected ({name}): workers/main/livekit_http.py needs updating for this "
                "livekit-agents version"
            )
        app = server.app
        if name == "prometheus":  # livekit's only route there is /metrics: ours instead
            app = web.Application()
            app.router.add_get("/metrics", metrics_response)
        return cls(app, server.host, server.port, name)

    @property
    def app(self) -> web.Application:
        return self._app

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def site(self) -> BoundedSite:
        return self._site

    async def start(self) -> None:
        self._port = await self._site.start()

    async def aclose(self) -> None:
        await self._site.aclose()


class _Bounded:
    """A data descriptor for one of livekit's server attributes: whatever livekit assigns is
    stored as a `BoundedHttpServer` over the same application."""

    def __init__(self, attr: str, name: str) -> None:
        self._attr, self._name = attr, name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.get(self._attr)

    def __set__(self, obj: Any, value: Any) -> None:
        if value is not None and not isinstance(value, BoundedHttpServer):
            value = BoundedHttpServer.replacing(value, self._name)
        obj.__dict__[self._attr] = value


def bound_livekit_http_servers(cls: ServerClass) -> ServerClass:
    """Class decorator for an AgentServer subclass: its health and Prometheus servers are
    served within `Bounds()` (64 connections, 5 s idle, summary logging)."""
    for attr, name in LIVEKIT_HTTP_SERVERS.items():
        setattr(cls, attr, _Bounded(attr, name))
    return cls


def livekit_http_servers(server: Any) -> dict[str, BoundedHttpServer]:
    """The running server's bounded HTTP servers, by event name (for tests and the log)."""
    found = {}
    for attr, name in LIVEKIT_HTTP_SERVERS.items():
        value = getattr(server, attr, None)
        if isinstance(value, BoundedHttpServer):
            found[name] = value
    return found
