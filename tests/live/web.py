"""`python -m workers.web` as a user starts it, inside the live suite's namespace, on a free
loopback port (the page's secure context), talking to the suite's server."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from config.settings import PROJECT_ROOT
from tests.live.harness import PYTHON, worker_env

SERVING = re.compile(rb"serving (http://\S+/)")


@dataclass
class WebProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@contextlib.contextmanager
def web_server(tmp: Path, agent_name: str, **env: str) -> Iterator[WebProcess]:
    log_path = tmp / "web.log"
    out = log_path.open("wb")
    proc = subprocess.Popen(
        [PYTHON, "-m", "workers.web", "--host", "127.0.0.1", "--port", "0"],
        cwd=PROJECT_ROOT,
        env=worker_env(agent_name, tmp, **env),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out.close()
    try:
        url = _wait_serving(proc, log_path)
        yield WebProcess(proc, url, log_path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _wait_serving(proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 30.0) -> str:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = SERVING.search(log_path.read_bytes())
        if found:
            return found.group(1).decode()
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"workers.web did not serve:\n{log_path.read_text(errors='replace')}")
