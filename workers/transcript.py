"""One JSON-lines transcript per room, appended and flushed event by event.

A crash loses at most the event being written. Listeners (the simulation's printer) see each
event as it is written."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

Listener = Callable[[dict[str, Any]], None]
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def transcript_path(directory: Path, room: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    safe_room = _UNSAFE.sub("-", room).strip("-.")[:80] or "room"
    return directory / f"{safe_room}-{stamp}.jsonl"


class Transcript:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: TextIO | None = path.open("a", encoding="utf-8")
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()  # tools may record outcome entries from other threads

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "at": round(time.time(), 3), **fields}
        line = json.dumps(record, default=str, ensure_ascii=False)
        with self._lock:
            if self._file is None:
                raise RuntimeError(f"transcript {self.path} is closed")
            self._file.write(line + "\n")
            self._file.flush()
        for listener in self._listeners:
            listener(record)
        return record

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_transcript(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
