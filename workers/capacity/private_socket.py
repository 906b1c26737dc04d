"""A Unix socket only this user can reach, for a worker's job processes to talk to its main
process: in a fresh directory of its own (mode 0700, so no other user can even look it up),
its path handed to the job processes in the environment, set before livekit's forkserver
starts (which passes the environment on to every job process)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class PrivateSocketPath:
    """`make()` a directory and the socket's path in it, announced in `env`; `remove()` it."""

    def __init__(self, prefix: str, name: str, env: str) -> None:
        self._prefix, self._name, self.env = prefix, name, env
        self.dir: Path | None = None

    def make(self) -> Path:
        self.dir = Path(tempfile.mkdtemp(prefix=self._prefix))  # mode 0700
        path = self.dir / self._name
        os.environ[self.env] = str(path)
        return path

    def remove(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
