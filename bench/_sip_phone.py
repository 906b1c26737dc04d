"""SIPp as callers, and what those phones see on the wire (a private module of bench.phone_calls).

The telephony stack (redis-server, a Redis-backed livekit-server, livekit-sip) is started by
`tests/live/livenet.sh telephony DIR` inside the private namespace, as the live suite starts it.
`WireTap` reads every packet on the namespace's loopback (root, AF_PACKET): the INVITE a phone
sends, the 200 OK livekit-sip answers it with (its SDP names the RTP port livekit-sip sends
that call's audio from) and the RTP audio of each call, so all three times come from one clock
(the kernel's receive time of each packet) and one place: the phone's side of the wire.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workers.telephony import sipp

ROOT = Path(__file__).resolve().parent.parent
LIVENET = ROOT / "tests" / "live" / "livenet.sh"
PCMA = 8
SOL_PACKET, SO_RCVBUFFORCE, SO_TIMESTAMPNS = 263, 33, 35  # linux/socket.h


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The kernel's receive time of a packet (SCM_TIMESTAMPNS, the wall clock), not the
    moment this thread read it: on a loaded machine the reading lags by seconds."""
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", value[:16])
            return sec + nsec / 1e9
    return time.time()


SPEECH_RMS = 400  # a 20 ms packet louder than this carries speech (eSpeak), not silence


@dataclass(frozen=True)
class Stack:
    url: str  # the Redis-backed livekit-server (keys devkey/secret)
    sip_host: str
    sip_port: int
    pids: tuple[int, ...]

    @classmethod
    def start(cls, directory: Path) -> Stack:
        """Up and ready; exit 77 (what `make bench` reports as skipped) when this machine
        lacks livekit-sip, redis-server or SIPp."""
        if shutil.which("sipp") is None:
            print("phone_calls: no sipp (`make sip` installs sip-tester)", file=sys.stderr)
            raise SystemExit(77)
        proc = subprocess.run(
            [str(LIVENET), "telephony", str(directory)], capture_output=True, text=True, timeout=60
        )
        if proc.returncode == 77:
            print(f"phone_calls: {proc.stderr.strip()}", file=sys.stderr)
            raise SystemExit(77)
        if proc.returncode != 0:
            raise SystemExit(f"the telephony stack did not start:\n{proc.stderr}")
        env = dict(
            line.split("=", 1)
            for line in (directory / "telephony.env").read_text().splitlines()
            if "=" in line
        )
        host, port = env["TEL_SIP_ADDR"].rsplit(":", 1)
        pids = tuple(int(p) for p in env["TEL_PIDS"].split())
        return cls(env["TEL_LIVEKIT_URL"], host, int(port), pids)

    def stop(self) -> None:
        for pid in self.pids:  # livekit-sip first, then the server, then Redis
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in self.pids:
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# SIPp: INVITE (PCMA), answered -> ACK, then on the line until the far end hangs up (BYE,
# answered) or `hold_ms` passes (the phone hangs up itself).
def caller_xml(hold_ms: int, silence: Path) -> str:
    return f"""{sipp.XML_HEAD}
<scenario name="bench-caller">
{sipp.dial()}  <recv response="200" rtd="true"/>
{sipp.ack()}
{sipp.play(silence)}
  <recv request="BYE" timeout="{hold_ms}" ontimeout="hang_up"/>
{sipp.OK}
  <nop next="end"/>
  <label id="hang_up"/>
{sipp.hang_up()}
  <recv response="200"/>
  <label id="end"/>
</scenario>
"""


def silence_pcap(path: Path, seconds: float) -> Path:
    """`seconds` of A-law silence as one RTP stream (PCMA, 20 ms packets) in a pcap SIPp's
    play_pcap_audio sends: a phone streams RTP from the moment it is answered, and livekit-sip
    sets the call `active` at its first RTP packet (or after its 1 s audioBridgeMaxDelay)."""
    frame, payload = 160, b"\xd5" * 160  # 20 ms at 8 kHz; 0xD5 is A-law zero
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # pcap, Ethernet
    for seq in range(int(seconds * 50)):
        rtp = struct.pack("!BBHII", 0x80, PCMA, seq & 0xFFFF, seq * frame, 0x42454E43) + payload
        udp = struct.pack("!HHHH", 6000, 6000, 8 + len(rtp), 0) + rtp
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), seq & 0xFFFF, 0, 64, 17, 0,
            bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]),
        )  # fmt: skip
        packet = b"\x00" * 12 + b"\x08\x00" + ip + udp
        t = seq * 0.02
        out.append(struct.pack("<IIII", int(t), round((t % 1) * 1e6), len(packet), len(packet)))
        out.append(packet)
    path.write_bytes(b"".join(out))
    return path


def place_calls(
    directory: Path,
    stack: Stack,
    to: str,
    callers: list[str],
    *,
    hold_ms: int,
    every_ms: int,
    port: int,
    local_ip: str,
) -> subprocess.Popen[bytes]:
    """One SIPp placing one call per `callers` number, one every `every_ms` (SIPp's own rate
    control), each held up to `hold_ms`; at most len(callers) calls, then it exits."""
    xml = directory / f"caller-{port}.xml"
    silence = silence_pcap(directory / f"silence-{port}.pcap", hold_ms / 1000)
    xml.write_text(caller_xml(hold_ms, silence))
    fields = directory / f"callers-{port}.csv"
    fields.write_text("SEQUENTIAL\n" + "".join(f"{c};\n" for c in callers))
    argv = ["sipp", f"{stack.sip_host}:{stack.sip_port}", "-sf", str(xml), "-inf", str(fields)]
    argv += ["-s", to, "-i", local_ip, "-p", str(port), "-mi", local_ip, "-mp", str(port + 1000)]
    argv += ["-m", str(len(callers)), "-l", str(len(callers)), "-r", "1", "-rp", str(every_ms)]
    argv += ["-timeout", f"{hold_ms // 1000 + 60}s", "-nostdin", "-trace_err"]
    argv += ["-error_file", str(directory / f"sipp-{port}-errors.log")]
    with (directory / f"sipp-{port}.log").open("wb") as out:
        return subprocess.Popen(argv, cwd=directory, stdout=out, stderr=subprocess.STDOUT)


@dataclass
class Call:
    """One call as the phone's side of the wire saw it (kernel receive times, time.time())."""

    call_id: str
    caller: str
    invite: float
    ok: float | None = None
    rtp_port: int | None = None  # livekit-sip's, from the 200 OK's SDP
    first_rtp: float | None = None
    first_speech: float | None = None


def _header(text: str, name: str) -> str | None:
    for line in text.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def _speech(payload: bytes) -> bool:
    """G.711 A-law (ITU-T G.711 alaw2linear) louder than SPEECH_RMS."""
    a = np.frombuffer(payload, dtype=np.uint8).astype(np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    pcm = np.where(a & 0x80, t, -t).astype(np.float64)
    return bool(pcm.size) and float(np.sqrt(np.mean(pcm**2))) > SPEECH_RMS


@dataclass
class WireTap:
    """Every call to `sip_port` on this namespace's loopback, as the phones see it."""

    sip_port: int
    calls: dict[str, Call] = field(default_factory=dict)
    _by_rtp_port: dict[int, Call] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = None

    def __enter__(self) -> WireTap:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        # every call's RTP both ways passes here: a deep buffer, so a busy machine delays
        # the reading (the time is taken at the read: see `dropped`) rather than losing packets
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 * 2**20)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind(("lo", 0))
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def dropped(self) -> int:
        """Packets the kernel dropped since the last call (PACKET_STATISTICS): any drop
        may have been an INVITE, a 200 OK or a first audio packet."""
        assert self._sock is not None, "read before the tap closes"
        _, drops = struct.unpack("II", self._sock.getsockopt(SOL_PACKET, 6, 8))
        return int(drops)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self, sock: socket.socket) -> None:
        outgoing = 4  # PACKET_OUTGOING: loopback shows each packet twice
        with contextlib.closing(sock):
            while not self._stop.is_set():
                try:
                    data, ancillary, _, addr = sock.recvmsg(65535, 64)
                except TimeoutError:
                    continue
                if addr[2] == outgoing or len(data) < 14 + 20 + 8:
                    continue
                if data[12:14] != b"\x08\x00" or data[14 + 9] != 17:  # IPv4, UDP
                    continue
                udp = 14 + (data[14] & 0x0F) * 4
                src, dst = struct.unpack("!HH", data[udp : udp + 4])
                self._packet(_arrival(ancillary), src, dst, data[udp + 8 :])

    def _packet(self, at: float, src: int, dst: int, body: bytes) -> None:
        if dst == self.sip_port and body.startswith(b"INVITE "):
            text = body.decode(errors="replace")
            call_id = _header(text, "Call-ID")
            if call_id and call_id not in self.calls:  # retransmissions keep the first
                frm = _header(text, "From") or ""
                caller = frm.split("sip:", 1)[-1].split("@", 1)[0]
                self.calls[call_id] = Call(call_id, caller, at)
        elif src == self.sip_port and body.startswith(b"SIP/2.0 200"):
            text = body.decode(errors="replace")
            call = self.calls.get(_header(text, "Call-ID") or "")
            if call is None or call.ok is not None or "INVITE" not in (_header(text, "CSeq") or ""):
                return
            call.ok = at
            for line in text.split("\r\n"):
                if line.startswith("m=audio "):
                    call.rtp_port = int(line.split()[1])
                    self._by_rtp_port[call.rtp_port] = call
        elif src in self._by_rtp_port and len(body) > 12 and body[1] & 0x7F == PCMA:
            call = self._by_rtp_port[src]
            if call.first_rtp is None:
                call.first_rtp = at
            if call.first_speech is None and _speech(body[12 + 4 * (body[0] & 0x0F) :]):
                call.first_speech = at
