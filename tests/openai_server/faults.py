"""Failures the server injects, the way a provider fails: by route, for the next N requests."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    """One injected failure. `kind`:
    - "status": answer HTTP `status` (with `retry_after` seconds for a 429) and an error body;
    - "stall": accept the request, then send nothing (a stalled stream);
    - "malformed": start a 200 SSE stream, then send a line that is not JSON;
    - "close": (realtime) close the socket in the middle of the next response."""

    kind: str
    status: int = 500
    retry_after: float | None = None


class Faults:
    """Per route ("chat", "speech", "transcriptions", "realtime"), the faults still to inject,
    one per request, in order; and how many requests each route saw."""

    def __init__(self) -> None:
        self._queued: dict[str, deque[Fault]] = {}
        self.requests: dict[str, int] = {}

    def add(self, route: str, fault: Fault, times: int = 1) -> None:
        self._queued.setdefault(route, deque()).extend([fault] * times)

    def next(self, route: str) -> Fault | None:
        self.requests[route] = self.requests.get(route, 0) + 1
        queue = self._queued.get(route)
        return queue.popleft() if queue else None

    def pending(self, route: str) -> int:
        return len(self._queued.get(route, ()))
