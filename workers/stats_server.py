"""Load stats for operators: JSON over HTTP from the worker's main process, and a periodic log.

livekit-agents' own HTTP server (`/`, `/worker`) is frozen before user code can add a route
(no public hook), so the stats get a small aiohttp site of their own on STATS_PORT.

    GET /stats    {"worker_load": ..., "personas": [...], "summary": {...}, "jobs": {...}}
    GET /healthz  {"status": "ok"}
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from aiohttp import web

from config.logging import get_logger

log = get_logger("workers.stats")

Payload = Callable[[], dict[str, Any]]


class StatsServer:
    def __init__(
        self, payload: Payload, *, host: str, port: int, log_interval_s: float = 0.0
    ) -> None:
        self._payload = payload
        self._host, self._port = host, port
        self._log_interval_s = log_interval_s
        self._runner: web.AppRunner | None = None
        self._log_task: asyncio.Task[None] | None = None
        self.port: int | None = None  # the bound port (STATS_PORT=0 picks a free one)

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.get("/stats", self._stats), web.get("/healthz", self._healthz)])
        return app

    async def _stats(self, _: web.Request) -> web.Response:
        return web.json_response(self._payload())

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def start(self) -> int:
        """Serve and start the periodic log; returns the bound port."""
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        if self._log_interval_s > 0:
            self._log_task = asyncio.create_task(self._log_loop(), name="stats_log")
        log.info("stats_server_started", url=f"http://{self._host}:{self.port}/stats")
        return self.port

    async def _log_loop(self) -> None:
        while True:
            await asyncio.sleep(self._log_interval_s)
            try:
                log.info("worker_stats", **summarize(self._payload()))
            except Exception as e:  # a stats bug must not end the loop
                log.warning("worker_stats_failed", error=repr(e))

    async def aclose(self) -> None:
        if self._log_task is not None:
            self._log_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._log_task
            self._log_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def summarize(payload: dict[str, Any]) -> dict[str, Any]:
    """The log line's fields: the totals, and `id active/max` for each busy persona."""
    busy = {
        p["id"]: f"{p['active']}/{p['max']}" for p in payload.get("personas", ()) if p["active"]
    }
    return {
        "worker_load": payload.get("worker_load"),
        **payload.get("summary", {}),
        "busy": busy,
        "jobs": len(payload.get("jobs", {})),
    }
