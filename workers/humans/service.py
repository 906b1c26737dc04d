"""The desk in the worker's main process: job processes ask it who to ring, claim a call for the
human who answered, and give the seat back, over a Unix socket only this user can reach (like
workers/capacity/seat_returns.py, but each request gets an answer).

The claims are made in the worker's own capacity store (its memory, or Redis with
CAPACITY_URL), and the winner's seat is held in the LeaseBook under the job id: released by the
job's `release`, or when the job ends or its process dies (the book's existing paths), so a
crashed room never keeps a human busy.

One JSON object per line, one request per connection:

    {"op": "ringable", "tenant": T, "assigned": [ids], "skill": S|null}
        -> {"ok": true, "humans": [ids]}
    {"op": "claim", "job_id": J, "call": C, "human": H}    -> {"ok": true, "won": bool}
    {"op": "release", "job_id": J, "call": C, "human": H}  -> {"ok": true, "released": bool}

A store that cannot answer is `{"ok": false, "error": "unavailable", ...}` (the job then finds
nobody free); a bad request `{"ok": false, "error": "bad_request", ...}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path
from typing import Any

from config.logging import get_logger
from workers.capacity.leases import LeaseBook, Releasable
from workers.capacity.private_socket import PrivateSocketPath
from workers.capacity.store import CapacityStoreUnavailable
from workers.humans.claims import HumanSeat, human_key
from workers.humans.core import DeskCore, UnknownHuman

log = get_logger("workers.humans.service")

HUMAN_DESK_ENV = "MULTI_PERSONA_HUMAN_DESK"  # the socket's path, for job processes
MAX_REQUEST = 8192  # one line: ids and a tenant, well under this
REQUEST_TIMEOUT_S = 5.0  # a connection that sends nothing is dropped
MAX_ASSIGNED = 64


class BadRequest(ValueError):
    pass


def _text(request: dict[str, Any], name: str, *, optional: bool = False) -> str | None:
    value = request.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise BadRequest(f"{name!r} must be a string of 1-256 characters")
    return value


def _ids(request: dict[str, Any], name: str) -> list[str]:
    value = request.get(name) or []
    if not isinstance(value, list) or len(value) > MAX_ASSIGNED:
        raise BadRequest(f"{name!r} must be a list of at most {MAX_ASSIGNED} ids")
    if not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value):
        raise BadRequest(f"{name!r} must hold ids (strings of 1-64 characters)")
    return value


def _seat_of(call: str, human_id: str) -> Any:
    def match(lease: Releasable) -> bool:
        return isinstance(lease, HumanSeat) and lease.call == call and lease.human.id == human_id

    return match


class DeskService:
    """`open()` before livekit's forkserver starts (the path goes to job processes in the
    environment), `await listen()` on the worker's event loop, `await aclose()` at the end."""

    def __init__(self, core: DeskCore, leasebook: LeaseBook) -> None:
        self.core = core
        self.leasebook = leasebook
        self._path = PrivateSocketPath("human-desk-", "desk.sock", HUMAN_DESK_ENV)
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self.listening = asyncio.Event()  # set once job processes' requests are answered
        # claims still running, by (job, call, human): a release asked meanwhile (the job gave
        # up on that leg) waits for its claim, so it never misses the seat the claim takes
        self._claiming: dict[tuple[str, str, str], asyncio.Future[bool]] = {}

    def open(self) -> Path:
        path = self._path.make()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        return path

    async def listen(self) -> None:
        sock, self._sock = self._sock, None  # taken once: a second call has nothing to do
        if sock is None:
            return
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_REQUEST)
        self.listening.set()

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
        sock, self._sock = self._sock, None
        if sock is not None:  # opened, never listened on
            sock.close()
        self._path.remove()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                line = await reader.readline()
                answer = await self.answer(line)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (TimeoutError, ValueError, ConnectionError) as e:  # ValueError: line too long
            log.warning("human_desk_request_dropped", error=type(e).__name__)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def answer(self, line: bytes) -> dict[str, Any]:
        """One request's answer (never raises)."""
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise BadRequest("a request is a JSON object")
            return await self._do(request)
        except (BadRequest, ValueError, UnknownHuman) as e:
            message = f"unknown human agent {e}" if isinstance(e, UnknownHuman) else str(e)
            log.warning("human_desk_bad_request", error=message)
            return {"ok": False, "error": "bad_request", "message": message}
        except CapacityStoreUnavailable as e:
            log.warning("human_desk_unavailable", error=str(e))
            return {"ok": False, "error": "unavailable", "message": str(e)}

    async def _do(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ringable":
            tenant = _text(request, "tenant")
            assert tenant is not None
            skill = _text(request, "skill", optional=True)
            found = await asyncio.to_thread(
                self.core.ringable, tenant, assigned=_ids(request, "assigned"), skill=skill
            )
            return {"ok": True, "humans": [h.id for h in found]}
        if op not in ("claim", "release"):
            raise BadRequest(f"unknown op {op!r} (ringable, claim or release)")
        job_id, call, human_id = (_text(request, n) for n in ("job_id", "call", "human"))
        assert job_id is not None and call is not None and human_id is not None
        if op == "claim":
            return {"ok": True, "won": await self._claim(job_id, call, human_id)}
        claiming = self._claiming.get((job_id, call, human_id))
        if claiming is not None:
            await asyncio.wait([claiming])  # its outcome is its own request's answer
        released = await asyncio.to_thread(
            self.leasebook.release_one, job_id, _seat_of(call, human_id)
        )
        if released:
            log.info("human_seat_released", job_id=job_id, call=call, human=human_id)
        return {"ok": True, "released": released}

    async def _claim(self, job_id: str, call: str, human_id: str) -> bool:
        key = (job_id, call, human_id)
        claim = asyncio.ensure_future(
            asyncio.to_thread(self._claim_and_hold, job_id, call, human_id)
        )
        self._claiming[key] = claim

        def done(_: asyncio.Future[bool]) -> None:
            if self._claiming.get(key) is claim:
                del self._claiming[key]

        claim.add_done_callback(done)
        # shielded: a request that times out still ends with its seat held (or not taken)
        return await asyncio.shield(claim)

    def _claim_and_hold(self, job_id: str, call: str, human_id: str) -> bool:
        """In one thread, so a request timed out meanwhile cannot leave a seat nobody holds."""
        seat = self.core.claim(job_id, call, human_id)
        if seat is None:
            log.info("human_claim_lost", job_id=job_id, call=call, human=human_id)
            return False
        # held like the job's personas: released by `release`, the job's end or its crash
        self.leasebook.hold(job_id, seat, labels=[human_key(human_id)])
        log.info("human_claimed_call", job_id=job_id, call=call, human=human_id)
        return True
