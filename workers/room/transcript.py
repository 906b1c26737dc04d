"""One JSON-lines transcript per room, written and flushed event by event.

Each room gets its own file, always: the name is `<room>-<UTC time>.jsonl`, created exclusively,
with `_2`, `_3`, ... added when that name is taken (two rooms of one name in one second, two
simulations of one scenario). A crash loses at most the event being written.

The file is always whole lines that `str.splitlines()` splits where the records end: each
record goes to the file in one unbuffered write, and a write the disk cut short (disk full) is
truncated away again; U+0085, U+2028 and U+2029 (line breaks to `str.splitlines()`, not to
JSON) are written as JSON escapes.

The transcript never takes its room down: when the file cannot be created or written (disk
full, read-only or missing folder), the failure is logged once with the path, later events are
dropped from the file, and listeners (the simulation's printer) still see every event. A
listener that raises is logged once and kept."""

from __future__ import annotations

import errno
import json
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config.logging import get_logger

log = get_logger("workers.room.transcript")

Listener = Callable[[dict[str, Any]], None]
Clock = Callable[[], datetime]
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_SAME_NAME = 1000  # transcripts of one room name in one second before giving up
# json.dumps(ensure_ascii=False) escapes the C0 controls but leaves these raw; each is a line
# break to str.splitlines() (and U+2028/9 to JavaScript), so one would split a record in two.
_SPLITLINES_BREAKS = str.maketrans({c: f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"})
# The one system call that puts a record in the file (tests put a full disk behind it).
_write_fd = os.write


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


def _create_unique(base: Path) -> tuple[Path, int]:
    """Create a new file at `base` or the first free suffixed name (never reuse one); its
    descriptor, unbuffered."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for path in _candidates(base):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        return path, fd
    raise FileExistsError(
        errno.EEXIST, f"{MAX_SAME_NAME} transcripts of this room already exist", str(base)
    )


class Transcript:
    """Use `Transcript.create(directory, room)`; the constructor takes an already open file."""

    def __init__(self, path: Path, fd: int | None, error: OSError | None = None) -> None:
        self.path = path
        self._fd = fd
        self._size = 0  # bytes of whole records in the file
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
            path, fd = _create_unique(base)
        except OSError as e:
            return cls(base, None, e)
        return cls(path, fd)

    @property
    def written(self) -> bool:
        """False once the file could not be created or written: the transcript is cut."""
        return self.error is None

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "at": round(time.time(), 3), **fields}
        line = json.dumps(record, default=str, ensure_ascii=False).translate(_SPLITLINES_BREAKS)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"transcript {self.path} is closed")
            self._write_line(line)
        for listener in list(self._listeners):
            self._notify(listener, record)
        return record

    def _write_line(self, line: str) -> None:
        if self._fd is None:
            return  # the file failed earlier: already logged, dropped quietly
        # backslashreplace: a lone surrogate in a line becomes a JSON escape, not an error
        data = (line + "\n").encode("utf-8", "backslashreplace")
        done = 0
        try:
            while done < len(data):
                done += _write_fd(self._fd, data[done:])
        except OSError as e:
            self._cut_partial_record(done)
            self._fail("write", e)
            return
        self._size += done

    def _cut_partial_record(self, written: int) -> None:
        """Take a record the disk cut short back out: the file stays whole lines."""
        if not written or self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as e:  # nothing more to do: the half line stays, and is logged
            log.error("transcript_partial_line_left", path=str(self.path), error=repr(e))

    def _fail(self, stage: str, error: OSError) -> None:
        """Log once with the path, and stop writing the file (the room goes on)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass  # already failing: nothing more to say
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
            fd, self._fd = self._fd, None
            if fd is None:
                return
            try:
                os.close(fd)
            except OSError as e:
                self._fail("close", e)


def read_transcript(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
