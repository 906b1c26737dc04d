"""The live suite's tools: the server tests/live/livenet.sh started, worker processes started the
way a user starts them (`python -m workers.multi start`), humans and observers as livekit.rtc
clients, and the server's own view of a room through livekit-api's RoomService.

Everything here runs inside the private network namespace of livenet.sh; waits are bounded and
wait on a condition (a log event, a participant, a frame), never on the clock alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from livekit import api, rtc

from config.settings import PROJECT_ROOT

# Captured when the suite is imported: the settings fixture of tests/conftest.py clears these
# from the environment of each test.
URL = os.environ.get("LIVEKIT_URL", "")
API_KEY = os.environ.get("LIVEKIT_API_KEY", "")
API_SECRET = os.environ.get("LIVEKIT_API_SECRET", "")
IN_NETNS = os.environ.get("LIVE_NETNS") == "1"
SERVER_LOG = os.environ.get("LIVE_SERVER_LOG", "")

WORKER_READY_S = 45.0  # a cold worker imports livekit, starts a forkserver and prewarms
PYTHON = sys.executable


# A three-turn check-in that ends by its own rule (end_conversation): for cases about how a
# room ends, where the five turns of dispatch_checkin would only cost time.
SHORT_CHECKIN = json.dumps(
    {
        "name": "short_checkin",
        "campaign": "freight-dispatch",
        "cast": [{"role": "dispatcher", "opens": True}, {"role": "driver"}],
        "rules": {"turn_policy": "alternate", "max_turns": 4, "max_duration_s": 120},
        "script": {
            "dispatcher": [
                {"say": "{driver}, where are you?"},
                {"tool": "end_conversation", "args": {"reason": "checked in"}, "say": "Thanks."},
            ],
            "driver": [{"say": "Near El Paso, on time."}],
        },
    }
)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def worker_env(agent_name: str, transcripts: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LIVEKIT_"))}
    env.update(
        LIVEKIT_URL=URL,
        LIVEKIT_API_KEY=API_KEY,
        LIVEKIT_API_SECRET=API_SECRET,
        AGENT_NAME=agent_name,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        STATS_PORT="0",
        WORKER_HTTP_PORT="0",
        TRANSCRIPTS_DIR=str(transcripts),
        # other programs (this test, the server) share these 2 cores: report persona load only
        LOAD_COUNTS_CPU="false",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class WorkerProcess:
    """One `python -m workers.multi` process group; its JSON log lines, parsed on demand."""

    name: str
    agent_name: str
    transcripts: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    _seen: int = 0
    _events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        tmp: Path,
        *,
        agent_name: str,
        command: Iterable[str] = ("start",),
        name: str = "worker",
        fd_limit: str | None = None,
        **env: str,
    ) -> WorkerProcess:
        """`fd_limit`: "SOFT:HARD", the descriptor limit it starts with (default: ours)."""
        transcripts = tmp / f"{name}-transcripts"
        log_path = tmp / f"{name}.log"
        out = log_path.open("wb")

        def limits() -> None:
            if fd_limit is not None:
                soft, hard = (int(n) for n in fd_limit.split(":"))
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        proc = subprocess.Popen(
            [PYTHON, "-m", "workers.multi", *command],
            cwd=PROJECT_ROOT,
            env=worker_env(agent_name, transcripts, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: job processes included
            preexec_fn=limits,
        )
        out.close()
        return cls(name, agent_name, transcripts, log_path, proc)

    def events(self) -> list[dict[str, Any]]:
        with self.log_path.open("rb") as f:
            f.seek(self._seen)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._seen += len(complete)
        for line in complete.splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    self._events.append(record)
        return self._events

    def named(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events()
            if (e.get("event") or e.get("message")) == event
            and all(e.get(k) == v for k, v in fields.items())
        ]

    def forget(self, event: str) -> None:
        """Drop the events of this name seen so far (to wait for the next one)."""
        self._events[:] = [
            e for e in self.events() if (e.get("event") or e.get("message")) != event
        ]

    async def wait_for(self, event: str, timeout: float = 20.0, **fields: Any) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                found = self.named(event, **fields)
                if found:
                    return found[-1]
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}"
                    )
                await asyncio.sleep(0.05)

    async def ready(self) -> WorkerProcess:
        try:
            await self.wait_for("registered worker", timeout=WORKER_READY_S)
            await self.wait_for("stats_server_started", timeout=5)
        except TimeoutError:
            raise AssertionError(f"{self.name} did not register:\n{self.tail()}") from None
        return self

    @property
    def stats_url(self) -> str:
        return self.named("stats_server_started")[-1]["url"]

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def signal(self, sig: int, *, group: bool = False) -> None:
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    async def exited(self, timeout: float) -> int:
        async with asyncio.timeout(timeout):
            while self.proc.poll() is None:
                await asyncio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        """Teardown: the whole group, at once."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        else:  # the worker is gone; its job processes may not be
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def transcripts_of(self, room: str) -> list[Path]:
        return sorted(self.transcripts.glob(f"{room}-*.jsonl"))


async def active_personas(worker: WorkerProcess) -> int:
    """The persona leases the worker holds now (its /stats)."""
    async with aiohttp.ClientSession() as http, http.get(worker.stats_url) as res:
        body = await res.json()
    return body["summary"]["total_active_rooms"]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def current_events(worker: WorkerProcess, room: str) -> list[dict[str, Any]]:
    """What the room's transcript holds so far."""
    return [e for path in worker.transcripts_of(room) for e in read_jsonl(path)]


async def transcript_event(
    worker: WorkerProcess, room: str, event: str, timeout: float = 30.0
) -> dict[str, Any]:
    """The first `event` the room's transcript records (e.g. the opener's first utterance)."""
    async with asyncio.timeout(timeout):
        while True:
            for path in worker.transcripts_of(room):
                for e in read_jsonl(path):
                    if e["event"] == event:
                        return e
            await asyncio.sleep(0.05)


async def transcript_of(worker: WorkerProcess, room: str, timeout: float = 90.0) -> list[dict]:
    """The room's transcript once it has ended (its last event is `room_ended`)."""
    async with asyncio.timeout(timeout):
        while True:
            for path in worker.transcripts_of(room):
                events = read_jsonl(path)
                if events and events[-1]["event"] == "room_ended":
                    return events
            await asyncio.sleep(0.1)


# -- the server's view -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def server_api(url: str = "") -> AsyncIterator[api.LiveKitAPI]:
    """The RoomService (and the others) of the suite's server, or of the server at `url`."""
    lk = api.LiveKitAPI((url or URL).replace("ws://", "http://"), API_KEY, API_SECRET)
    try:
        yield lk
    finally:
        await lk.aclose()


async def participants(lk: api.LiveKitAPI, room: str) -> list[Any]:
    try:
        res = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    except api.TwirpError as e:
        if e.code == "not_found":
            return []
        raise
    return list(res.participants)


async def wait_participants(
    lk: api.LiveKitAPI,
    room: str,
    predicate: Callable[[list[Any]], bool],
    timeout: float = 20.0,
) -> list[Any]:
    last: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = await participants(lk, room)
                if predicate(last):
                    return last
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(
            f"room {room}: participants never matched; last seen: "
            + ", ".join(f"{p.identity}({p.kind})" for p in last)
        ) from None


def agents_of(people: list[Any]) -> list[Any]:
    return [p for p in people if p.kind == api.ParticipantInfo.Kind.AGENT]


async def dispatch(lk: api.LiveKitAPI, agent_name: str, room: str, metadata: str) -> None:
    await lk.agent_dispatch.create_dispatch(
        api.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
    )


# -- people in the room ----------------------------------------------------------------------


def human_token(room: str, identity: str) -> str:
    return (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )


def observer_token(room: str, identity: str = "observer") -> str:
    """Sees and hears everything, is seen by nobody, says nothing."""
    return (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room=room,
                hidden=True,
                can_publish=False,
                can_publish_data=False,
                can_subscribe=True,
            )
        )
        .to_jwt()
    )


@contextlib.asynccontextmanager
async def joined(token: str) -> AsyncIterator[rtc.Room]:
    room = rtc.Room()
    await room.connect(URL, token)
    try:
        yield room
    finally:
        await room.disconnect()


def now() -> float:
    return time.time()


async def until(holds: Callable[[], bool], what: str, timeout: float) -> None:
    """Wait until `holds()` (polled every 50 ms), or fail saying `what` did not happen."""
    try:
        async with asyncio.timeout(timeout):
            while not holds():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None
