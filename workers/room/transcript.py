"""One JSON-lines transcript per room, written and flushed event by event.

Each room gets its own file, always: the name is `<room>-<UTC time>.jsonl`, created exclusively,
with `_2`, `_3`, ... added when that name is taken (two rooms of one name in one second, two
simulations of one scenario). A crash loses at most the event being written.

The transcript never takes its room down: when the file cannot be created or written (disk
full, read-only or missing folder), the failure is logged once with the path, later events are
dropped from the file, and listeners (the simulation's printer) still see every event. A
listener that raises is logged once and kept."""

from __future__ import annotations

import errno
import json
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from config.logging import get_logger

log = get_logger("workers.room.transcript")

Listener = Callable[[dict[str, Any]], None]
Clock = Callable[[], datetime]
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_SAME_NAME = 1000  # transcripts of one room name in one second before giving up


def _utc_now() -> datetime:
    return datetime.now(UTC)


def transcript_path(directory: Path, room: str, now: datetime | None = None) -> Path:
    """The first-choice name for a room's transcript (taken names get a suffix)."""
    stamp = (now or _utc_now()).strftime("%Y%m%dT%H%M%S")
    return directory / f"{room_file_stem(room)}-{stamp}.jsonl"


def room_file_stem(room: str) -> str:
    """A room name made safe and short for file names (transcripts, conversation audio)."""
    return _UNSAFE.sub("-", room).strip("-.")[:80] or "room"


def _candidates(base: Path):
    yield base
    for n in range(2, MAX_SAME_NAME + 1):
        yield base.with_name(f"{base.stem}_{n}{base.suffix}")


def _create_unique(base: Path) -> tuple[Path, TextIO]:
    """Create a new file at `base` or the first free suffixed name; never reuse one."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for path in _candidates(base):
        try:
            # backslashreplace: a lone surrogate in a line becomes a JSON escape, not an error
            return path, path.open("x", encoding="utf-8", errors="backslashreplace")
        except FileExistsError:
            continue
    raise FileExistsError(
        errno.EEXIST, f"{MAX_SAME_NAME} transcripts of this room already exist", str(base)
    )


class Transcript:
    """Use `Transcript.create(directory, room)`; the constructor takes an already open file."""

    def __init__(self, path: Path, file: TextIO | None, error: OSError | None = None) -> None:
        self.path = path
        self._file = file
        self._closed = False
        self._listeners: list[Listener] = []
        self._broken_listeners: set[int] = set()  # ids already logged as failing
        self._lock = threading.Lock()  # tools may record outcome entries from other threads
        self.error: str | None = None  # why the file stopped being written, if it did
        if error is not None:
            self._fail("open", error)

    @classmethod
    def create(cls, directory: Path, room: str, *, clock: Clock = _utc_now) -> Transcript:
        """A new transcript file for `room`; if it cannot be created, a transcript that only
        feeds listeners (the failure logged once)."""
        base = transcript_path(directory, room, clock())
        try:
            path, file = _create_unique(base)
        except OSError as e:
            return cls(base, None, e)
        return cls(path, file)

    @property
    def written(self) -> bool:
        """False once the file could not be created or written: the transcript is cut."""
        return self.error is None

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "at": round(time.time(), 3), **fields}
        line = json.dumps(record, default=str, ensure_ascii=False)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"transcript {self.path} is closed")
            self._write_line(line)
        for listener in list(self._listeners):
            self._notify(listener, record)
        return record

    def _write_line(self, line: str) -> None:
        if self._file is None:
            return  # the file failed earlier: already logged, dropped quietly
        try:
            self._file.write(line + "\n")
            self._file.flush()
        except OSError as e:
            self._fail("write", e)

    def _fail(self, stage: str, error: OSError) -> None:
        """Log once with the path, and stop writing the file (the room goes on)."""
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                pass  # the buffered line that failed fails again: nothing more to say
        if self.error is not None:
            return
        self.error = f"{stage}: {error.strerror or error!r}"
        log.error(
            "transcript_write_failed",
            path=str(self.path),
            stage=stage,
            errno=errno.errorcode.get(error.errno or 0, str(error.errno)),
            error=error.strerror or repr(error),
            hint="free disk space or point TRANSCRIPTS_DIR at a writable folder; "
            "later events of this room are not written",
        )

    def _notify(self, listener: Listener, record: dict[str, Any]) -> None:
        try:
            listener(record)
        except Exception as e:
            with self._lock:
                first = id(listener) not in self._broken_listeners
                self._broken_listeners.add(id(listener))
            if first:
                log.error(
                    "transcript_listener_failed",
                    path=str(self.path),
                    listener=repr(listener),
                    error=repr(e),
                )

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            file, self._file = self._file, None
            if file is None:
                return
            try:
                file.close()
            except OSError as e:
                self._fail("close", e)


def read_transcript(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
