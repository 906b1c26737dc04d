"""A real browser for the live suite: Debian's `chromium`, driven by `puppeteer-core` through
`bridge.cjs` (one JSON command a line). `Browser` is the Python end; `missing()` says what is
not installed (`make browser` installs it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from config.settings import PROJECT_ROOT

BRIDGE = Path(__file__).parent / "bridge.cjs"
PUPPETEER = PROJECT_ROOT / "workers" / "web" / "client" / "node_modules" / "puppeteer-core"
CALL_TIMEOUT_S = 60.0


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing() -> str:
    """What the browser tests lack here, or "" when they can run."""
    if chromium() is None:
        return "no chromium (Debian's `chromium`; `make browser` installs it)"
    if shutil.which("node") is None:
        return "no node (`make browser` installs it)"
    if not PUPPETEER.is_dir():
        return "no puppeteer-core in workers/web/client/node_modules (`make browser`)"
    return ""


class Browser:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._next = 0
        self.console: list[str] = []

    async def call(self, op: str, timeout: float = CALL_TIMEOUT_S, **args: Any) -> Any:
        assert self._proc.stdin and self._proc.stdout
        self._next += 1
        ident = self._next
        self._proc.stdin.write((json.dumps({"id": ident, "op": op, **args}) + "\n").encode())
        await self._proc.stdin.drain()
        async with asyncio.timeout(timeout):
            while True:
                line = await self._proc.stdout.readline()
                if not line:
                    raise AssertionError(f"the browser bridge exited:\n{self.console_tail()}")
                answer = json.loads(line)
                if "console" in answer:
                    self.console.append(answer["console"])
                    continue
                if answer.get("id") != ident:
                    continue
                if not answer["ok"]:
                    raise AssertionError(f"browser {op} failed: {answer['error']}")
                return answer["value"]

    async def eval(self, js: str) -> Any:
        return await self.call("eval", js=js)

    async def snapshot(self) -> dict[str, Any]:
        return await self.eval("window.webRoom.snapshot()")

    async def until(self, js: str, timeout: float = 30.0) -> Any:
        """Wait until the expression is truthy in the page; its value."""
        last: Any = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    last = await self.eval(js)
                    if last:
                        return last
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(
                f"the page never satisfied {js!r}; last {last!r}\n{self.console_tail()}"
            ) from None

    def console_tail(self, lines: int = 30) -> str:
        return "\n".join(self.console[-lines:])


@contextlib.asynccontextmanager
async def browser(wav: Path | None = None) -> AsyncIterator[Browser]:
    exe = chromium()
    assert exe is not None
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(BRIDGE),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
        limit=1 << 22,
    )
    driver = Browser(proc)
    try:
        await driver.call("launch", executable=exe, wav=str(wav) if wav else None)
        yield driver
    finally:
        with contextlib.suppress(Exception):
            await driver.call("close", timeout=10)
        if proc.stdin:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:  # the bridge and its chromium, at once
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
