"""A worker reaches no host but LIVEKIT_URL (and the model endpoints it is configured with)
unless told to (issue 21, item 5). livekit-agents 1.8.9, left to choose, turns on its hosted
adaptive-interruption detector in `dev` for the persona that hears humans: a connection to
LiveKit's inference gateway (agent-gateway.livekit.cloud), which the private namespace has no
route to; and onnxruntime, under silero's VAD, reports usage to Microsoft's event collector.

The recorder: every nameserver /etc/resolv.conf names is given to this namespace's loopback
and answered by a UDP socket of this test, which records each query's name. LIVEKIT_URL is an
IP address here and the offline voice needs no network, so a worker that stays on its hosts
asks no name at all. Run `dev` (where livekit would pick adaptive) with a caller who speaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import api, rtc

from tests.live.harness import (
    WorkerProcess,
    dispatch,
    human_token,
    joined,
    server_api,
    transcript_event,
    unique,
)
from tests.live.test_voices import speak

pytestmark = pytest.mark.live

RESOLV_CONF = Path("/etc/resolv.conf")
# The STUN servers livekit-server 1.13.5 hands every client that joins (its default
# rtc.stun_servers, in the join response): asked because LIVEKIT_URL's server says so, and the
# same for the caller of this test. Set them in the server's config to change them.
SERVER_ICE_HOSTS = {"global.stun.twilio.com", "stun.l.google.com", "stun1.l.google.com"}
SCENARIO = json.dumps({"scenario": "inbound_support"})


def nameservers() -> list[str]:
    """What the resolver asks (glibc: 127.0.0.1 when none is named)."""
    found = []
    for line in RESOLV_CONF.read_text().splitlines() if RESOLV_CONF.exists() else []:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(parts[1]).version == 4:
                    found.append(parts[1])
    return found or ["127.0.0.1"]


def query_name(packet: bytes) -> str:
    """The QNAME of a DNS query (its labels after the 12-byte header)."""
    labels, i = [], 12
    while i < len(packet) and packet[i]:
        n = packet[i]
        labels.append(packet[i + 1 : i + 1 + n].decode(errors="replace"))
        i += 1 + n
    return ".".join(labels)


def asker(port: int) -> int | None:
    """The process holding the UDP socket on local `port` (the asker waits for its answer,
    so its socket is still open): /proc/net/udp gives the socket's inode, /proc/*/fd its
    process."""
    inode = None
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            inode = fields[9]
            break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == target:
                        return int(fd_dir.parent.name)
    return None


class DnsRecorder(asyncio.DatagramProtocol):
    """Each query's name and the session (process group leader) of the process that asked."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, int | None]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        pid = asker(addr[1])
        session = None
        if pid is not None:
            with contextlib.suppress(OSError):
                session = os.getsid(pid)
        self.queries.append((query_name(data), session))  # never answered: the asker gives up

    def names(self, session: int | None = None) -> list[str]:
        return [name for name, s in self.queries if session is None or s == session]


@contextlib.contextmanager
def on_loopback(addresses: list[str]) -> Iterator[None]:
    """The nameservers' addresses on this namespace's loopback, removed afterwards."""
    added = []
    try:
        for address in addresses:
            if not ipaddress.ip_address(address).is_loopback:
                subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)
                added.append(address)
        yield
    finally:
        for address in added:
            subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], check=False)


async def test_a_dev_worker_with_a_speaking_caller_asks_for_no_other_host(
    tmp_path: Path, workers: list[WorkerProcess]
):
    loop = asyncio.get_running_loop()
    recorder = DnsRecorder()
    with on_loopback(nameservers()):
        transports = [
            (
                await loop.create_datagram_endpoint(
                    lambda: recorder, local_addr=(server, 53), family=socket.AF_INET
                )
            )[0]
            for server in nameservers()
        ]
        try:
            # the recorder hears a lookup (so an empty record means none was made)
            await asyncio.to_thread(_lookup, "recorder-check.invalid")
            assert ("recorder-check.invalid", os.getsid(0)) in recorder.queries, recorder.queries
            recorder.queries.clear()

            worker = WorkerProcess.start(tmp_path, agent_name=unique("hosts"), command=("dev",))
            workers.append(worker)
            await worker.ready()
            room = unique("hosts")
            async with server_api() as lk:
                await dispatch(
                    lk, worker.agent_name, room, json.dumps({"scenario": "inbound_support"})
                )
                async with joined(human_token(room, "caller-hosts")) as caller:
                    source = rtc.AudioSource(22050, 1)
                    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
                    await caller.local_participant.publish_track(
                        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
                    )
                    await transcript_event(worker, room, "utterance", timeout=60)
                    await speak(source, "Hi, my blender arrived with a cracked jar.")
                    await transcript_event(worker, room, "human", timeout=30)
                    await lk.room.delete_room(api.DeleteRoomRequest(room=room))
            log = worker.log_path.read_text(errors="replace")
        finally:
            for transport in transports:
                transport.close()
    # the worker's processes: its session (harness: start_new_session), job processes included
    asked = sorted(set(recorder.names(worker.proc.pid)) - SERVER_ICE_HOSTS)
    others = sorted(set(recorder.names()) - set(asked))
    assert asked == [], f"the worker asked for other hosts: {asked} (others asked: {others})"
    assert "AdaptiveInterruptionDetector" not in log and "adaptive interruption" not in log


def _lookup(name: str) -> None:
    with contextlib.suppress(OSError):
        socket.getaddrinfo(name, 443)
