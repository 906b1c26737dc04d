"""An optional persona's lease, handed back by the job process the moment that persona fails to
start, to the worker's main process that holds it (the room goes on without the persona).

The main process holds a room's leases under the job id (workers/capacity/leases.py) until the
job ends; the job process cannot reach them. So the job sends one datagram naming the job and
the persona to a Unix socket the main process listens on, in a directory of its own that only
this user can enter, made before livekit's forkserver starts (which passes the socket's path
on to every job process in the environment). The main process releases that lease if, and only
if, that job holds it; anything else is logged and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from config.logging import get_logger
from workers.capacity.leases import LeaseBook
from workers.capacity.private_socket import PrivateSocketPath

log = get_logger("workers.capacity.seat_returns")

SEAT_RETURNS_ENV = "MULTI_PERSONA_SEAT_RETURNS"  # the socket's path, for job processes
_MAX_DATAGRAM = 1024  # {"job_id": ..., "persona": ...}: ids are short


class SeatReturns:
    """The main process's end: `open()` before the forkserver starts, `listen()` on the
    worker's event loop, `close()` when the worker closes."""

    def __init__(self, leasebook: LeaseBook) -> None:
        self.leasebook = leasebook
        self._sock: socket.socket | None = None
        self._path = PrivateSocketPath("seat-returns-", "seats.sock", SEAT_RETURNS_ENV)
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> Path:
        path = self._path.make()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.setblocking(False)
        self._sock = sock
        return path

    def listen(self) -> None:
        if self._sock is None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._receive)

    def _receive(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            self._handle(data)

    def _handle(self, data: bytes) -> None:
        try:
            message: Any = json.loads(data)
            job_id, persona = str(message["job_id"]), str(message["persona"])
        except (ValueError, KeyError, TypeError):
            log.warning("seat_return_unreadable", size=len(data))
            return
        if self.leasebook.release_persona(job_id, persona):
            log.info("seat_lease_released", job_id=job_id, persona=persona)
        else:
            log.warning("seat_return_not_held", job_id=job_id, persona=persona)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._path.remove()


def return_seat(job_id: str, persona_id: str) -> bool:
    """The job process's end: ask the main process to release `persona_id`'s lease of this job
    now. False (logged) when there is no main process to ask or it cannot be reached: the
    lease is then released when the job ends, as before."""
    path = os.environ.get(SEAT_RETURNS_ENV)
    if not path:
        return False
    message = json.dumps({"job_id": job_id, "persona": persona_id}).encode()
    try:
        with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)) as sock:
            sock.sendto(message, path)
    except OSError as e:
        log.warning("seat_return_failed", persona=persona_id, error=repr(e))
        return False
    return True
