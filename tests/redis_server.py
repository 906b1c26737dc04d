"""A real Redis for the capacity store's tests: Debian's `redis-server` on a free loopback port,
with a throwaway config (no persistence, its own directory), killed at the end.

`redis_server` (one per test session) is flushed for each test by `redis_url`;
`own_redis_server` is a test's own, for tests that stop, pause or restart it;
`make_selector` runs a selector test on each store (in memory, on Redis). Without
`redis-server` installed the Redis cases skip with one reason, except under CI=true, where
its absence is a failure (`.ci/run` installs it).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from config.catalog import Catalog
from workers.capacity.redis_store import RedisStore
from workers.capacity.selector import Selector

START_TIMEOUT_S = 10.0  # a hang guard, not a performance check
INSTALL_HINT = "apt-get install redis-server"


def redis_server_binary() -> str:
    """The redis-server on PATH; skips the test without it (fails it under CI=true)."""
    path = shutil.which("redis-server")
    if path is None:
        message = f"redis-server is not installed ({INSTALL_HINT}): the Redis store's tests need it"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One redis-server process; `stop()` and `start()` again keep its port (and lose its
    data: there is no persistence, as after a real restart without it)."""

    binary: str
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.dir), "--protected-mode", "no"]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _pong(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}) on {self.port}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on {self.port}: no PONG in {START_TIMEOUT_S} s")
            time.sleep(0.01)  # polling for start-up, bounded by the deadline

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server cannot exit
            self.proc.kill()
            self.proc.wait(timeout=START_TIMEOUT_S)
        self.proc = None

    def pause(self) -> None:
        """Redis stops answering (SIGSTOP) with its socket still open: slow, not down."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"FLUSHALL\r\n")
            assert s.recv(16).startswith(b"+OK")


def start_redis_server() -> RedisServer:
    """A started server on a free port (a port taken meanwhile is retried, a few times)."""
    binary = redis_server_binary()
    for attempt in range(3):
        server = RedisServer(binary, _free_port(), Path(tempfile.mkdtemp(prefix="pytest-redis-")))
        try:
            server.start()
            return server
        except RuntimeError:
            shutil.rmtree(server.dir, ignore_errors=True)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _serving() -> Iterator[RedisServer]:
    """A started server, stopped and its directory removed when the fixture ends."""
    server = start_redis_server()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    yield from _serving()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop, pause and restart."""
    yield from _serving()


MakeSelector = Callable[..., Selector]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def make_selector(request: pytest.FixtureRequest) -> Iterator[MakeSelector]:
    """`Selector(catalog, rng)` on each store. On Redis each selector gets a key space of its
    own, so two selectors of one test are as independent as two in memory are."""
    made: list[Selector] = []

    def on_redis(cat: Catalog, rng: random.Random | None = None) -> Selector:
        store = RedisStore(request.getfixturevalue("redis_url"), prefix=f"{{sel{len(made)}}}")
        made.append(Selector(cat, rng, store=store))
        return made[-1]

    yield Selector if request.param == "memory" else on_redis
    for sel in made:
        sel.close()
