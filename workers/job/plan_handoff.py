"""How the worker's main process hands a room's plan to its job process, privately.

Everything `req.accept(...)` carries (identity, name, metadata, attributes) becomes the job
participant's public data, readable by every client in the room, and rides in the job's token.
The plan holds the scenario's context and scripts, the human lines and the selector's reasons:
none of that is for the room. So the main process writes the plan to a file only this user can
read, named by the job id, and the job process (a child on the same machine, reading the same
settings) takes it and deletes it before it joins. The participant metadata keeps what a
frontend may see: the persona, its role, the room.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path

from config.logging import get_logger

log = get_logger("workers.job.plan_handoff")

STALE_S = 600.0  # a plan never taken (its job never started) is removed after this
_SAFE_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class PlanHandoff:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, job_id: str) -> Path:
        if not _SAFE_JOB_ID.match(job_id):
            raise ValueError(f"job id {job_id!r} cannot name a plan file")
        return self.directory / f"{job_id}.json"

    def put(self, job_id: str, plan: str) -> None:
        """Main process, before accept: the plan for `job_id`, readable by this user only."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        path = self._path(job_id)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(plan)
        os.replace(tmp, path)
        self._drop_stale()

    def take(self, job_id: str) -> str | None:
        """Job process: the plan, read once and removed; None when there is none."""
        try:
            path = self._path(job_id)
            text = path.read_text(encoding="utf-8")
        except (OSError, ValueError):
            return None
        with contextlib.suppress(OSError):
            path.unlink()
        return text

    def discard(self, job_id: str) -> None:
        """Main process: the job will not run (accept failed) or has ended."""
        with contextlib.suppress(OSError, ValueError):
            self._path(job_id).unlink()

    def _drop_stale(self) -> None:
        cutoff = time.time() - STALE_S
        for path in self.directory.glob("*.json"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()


def public_metadata(persona_id: str, role: str, room: str) -> str:
    """The job participant's metadata: what a frontend may see."""
    return json.dumps({"persona": persona_id, "role": role, "room": room})
