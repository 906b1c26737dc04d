"""Human agents' run-time availability (available, busy, offline), which an operator changes
while workers run (`python -m workers.humans set ID STATE`).

Two backends, chosen like the capacity store:
- with CAPACITY_URL, a Redis hash next to the capacity store's keys, so every worker on every
  machine sees one state the moment it is set;
- without it, a JSON file (HUMANS_STATE_PATH), written atomically (a temporary file renamed
  over it, under a lock file so two operators' writes never lose one another) and read by the
  worker at each transfer, so no watcher is needed.

A human nobody has set is in the catalog's `availability` (where they start). A state file
that cannot be read is logged once, naming the file and the fix, and everyone is taken to be
in their catalog state; a Redis that cannot answer raises CapacityStoreUnavailable (a transfer
then finds nobody free).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

from config.humans import AVAILABILITY, Availability, HumanAgent
from config.logging import get_logger
from workers.capacity.redis_store import bounded_client, redact_url
from workers.capacity.store import DEFAULT_PREFIX, DEFAULT_TIMEOUT_S, CapacityStoreUnavailable

log = get_logger("workers.humans.availability")

STATE_FILE_VERSION = 1


class AvailabilityBook(Protocol):
    """Where the humans' states live. Thread-safe."""

    def states(self, humans: Iterable[HumanAgent]) -> dict[str, Availability]:
        """Each human's state now (the catalog's `availability` for one never set)."""
        ...

    def set(self, human: HumanAgent, state: Availability) -> None: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


def check_state(state: str) -> Availability:
    """ValueError unless `state` is one of AVAILABILITY."""
    if state not in AVAILABILITY:
        raise ValueError(f"unknown state {state!r} (use one of: {', '.join(AVAILABILITY)})")
    return cast(Availability, state)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class FileAvailability:
    """One JSON file: `{"version": 1, "humans": {"alice": {"state": "busy", "at": "..."}}}`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._warned: str | None = None  # the last problem logged, so it is logged once

    def describe(self) -> str:
        return f"file {self.path}"

    def close(self) -> None:
        return None

    def states(self, humans: Iterable[HumanAgent]) -> dict[str, Availability]:
        saved = self._read()
        out: dict[str, Availability] = {}
        for human in humans:
            entry = saved.get(human.id)
            state = entry.get("state") if isinstance(entry, dict) else None
            out[human.id] = state if state in AVAILABILITY else human.availability
        return out

    def set(self, human: HumanAgent, state: Availability) -> None:
        check_state(state)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self._locked():
            saved = self._read()
            saved[human.id] = {"state": state, "at": _now()}
            self._write({"version": STATE_FILE_VERSION, "humans": saved})

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Other processes' writes wait (an advisory lock on a file beside it)."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, data: dict[str, Any]) -> None:
        """Whole or not at all: readers see the old file or the new one, never a part."""
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _read(self) -> dict[str, Any]:
        """The saved states; {} when there is no file yet or it cannot be read (logged once)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeError) as e:
            self._warn(f"cannot be read ({type(e).__name__}: {e})")
            return {}
        try:
            data = json.loads(text)
            humans = data["humans"]
            if not isinstance(humans, dict):
                raise TypeError("humans is not an object")
        except (ValueError, KeyError, TypeError) as e:
            self._warn(f"is not a humans state file ($.humans: {e})")
            return {}
        self._warned = None
        return humans

    def _warn(self, problem: str) -> None:
        if problem != self._warned:
            self._warned = problem
            log.warning(
                "humans_state_unreadable",
                path=str(self.path),
                problem=problem,
                hint="every human is taken to be in the catalog's availability; fix it with "
                "`python -m workers.humans set ID STATE`, or delete the file",
            )


class RedisAvailability:
    """One Redis hash, `{capacity}:humans:state`: human id -> state (in the capacity store's
    hash tag, so a Redis Cluster keeps it with the leases)."""

    def __init__(
        self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, prefix: str = DEFAULT_PREFIX
    ) -> None:
        import redis

        self._shown = redact_url(url)
        self._key = f"{prefix}:humans:state"
        self._client = bounded_client(url, timeout_s)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)

    def describe(self) -> str:
        return f"redis {self._shown}"

    def close(self) -> None:
        self._client.close()

    def _unavailable(self, exc: Exception) -> CapacityStoreUnavailable:
        return CapacityStoreUnavailable(
            f"human agents' states in {self._shown} unavailable: {type(exc).__name__} "
            "(the capacity store's Redis; retrying at the next call)"
        )

    def states(self, humans: Iterable[HumanAgent]) -> dict[str, Availability]:
        humans = list(humans)
        if not humans:
            return {}
        try:
            saved = self._client.hmget(self._key, [h.id for h in humans])
        except self._errors as e:
            raise self._unavailable(e) from None
        return {
            h.id: state if state in AVAILABILITY else h.availability
            for h, state in zip(humans, saved, strict=True)
        }

    def set(self, human: HumanAgent, state: Availability) -> None:
        check_state(state)
        try:
            self._client.hset(self._key, human.id, state)
        except self._errors as e:
            raise self._unavailable(e) from None


def open_availability(settings: Any) -> AvailabilityBook:
    """The backend the settings name: Redis with CAPACITY_URL, else the state file."""
    url = settings.capacity_url
    if url is not None:
        return RedisAvailability(url.get_secret_value(), timeout_s=settings.capacity_timeout_s)
    return FileAvailability(settings.humans_state_path)
