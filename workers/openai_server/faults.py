"""Failures the server injects, the way a provider fails: by route, for the next N requests."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    """One injected failure. `kind`:
    - "status": answer HTTP `status` (with `retry_after` seconds for a 429) and an error body;
    - "stall": accept the request, then send nothing (a stalled stream);
    - "malformed": start a 200 SSE stream, then send a line that is not JSON;
    - "close": (realtime) close the socket in the middle of the next response;
    - "pass": nothing (to let requests through before a later fault)."""

    kind: str
    status: int = 500
    retry_after: float | None = None


class Faults:
    """Per route ("chat", "speech", "transcriptions", "realtime"), and optionally per persona,
    the faults still to inject, one per request, in order; and how many requests each route
    (and "route/persona") saw, and when (monotonic seconds)."""

    def __init__(self) -> None:
        self._queued: dict[str, deque[Fault]] = {}
        self.requests: dict[str, int] = {}
        self.times: dict[str, list[float]] = {}

    def add(self, route: str, fault: Fault, times: int = 1, persona: str = "") -> None:
        key = f"{route}/{persona}" if persona else route
        self._queued.setdefault(key, deque()).extend([fault] * times)

    def next(self, route: str, persona: str = "") -> Fault | None:
        """The fault for this request: the persona's own first, then the route's."""
        own = f"{route}/{persona}"
        for key in (route, own):
            self.requests[key] = self.requests.get(key, 0) + 1
            self.times.setdefault(key, []).append(time.monotonic())
        for key in (own, route):
            if queue := self._queued.get(key):
                fault = queue.popleft()
                return None if fault.kind == "pass" else fault
        return None

    def pending(self, route: str, persona: str = "") -> int:
        return len(self._queued.get(f"{route}/{persona}" if persona else route, ()))
