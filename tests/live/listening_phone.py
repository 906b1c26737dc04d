"""A human agent's phone for the live suite, driven by the test instead of the clock.

SIPp answers one call (PCMA), then waits for cues the test sends it as in-dialog SIP OPTIONS
requests: the first cue makes the phone speak its line (a pcap), the second makes it hang up
(BYE); a BYE from the far end at any point ends the call as well. The test learns the call's
SIP Call-ID from the phone's log.

`RtpTap` records what the phone hears: every RTP packet sent to its media port, captured on
the namespace's loopback (root, AF_PACKET), decoded from A-law, with its arrival time.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.live.phone import LIVE_ADDR, SippCall
from workers.telephony import sipp

PCMA = 8
SPEECH_RMS = 400  # an RTP packet (20 ms) louder than this carries speech, not silence

_SCENARIO = """{head}
<scenario name="listening-human">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="&lt;.*" search_in="hdr" header="From:" assign_to="far"/>
      <ereg regexp="&lt;.*" search_in="hdr" header="To:" assign_to="near"/>
      <ereg regexp="sip:[^&gt;]*" search_in="hdr" header="Contact:" assign_to="far_contact"/>
    </action>
  </recv>
{ringing}
{answer}
  <recv request="ACK" crlf="true"/>
  <nop><action><log message="call-id [call_id]"/></action></nop>
  <recv request="BYE" optional="true" next="far_hung_up"/>
  <recv request="OPTIONS"/>
{ok}
  <nop><action><exec play_pcap_audio="{line}"/><log message="cued 1"/></action></nop>
  <recv request="BYE" optional="true" next="far_hung_up"/>
  <recv request="OPTIONS"/>
{ok}
  <nop><action><log message="cued 2"/></action></nop>
  <send retrans="500"><![CDATA[
      BYE [$far_contact] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: [$near];tag=[pid]SIPpTag01[call_number]
      To: [$far]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <recv response="200" crlf="true" next="end"/>
  <label id="far_hung_up"/>
{ok}
  <label id="end"/>
</scenario>
"""


@dataclass
class ListeningPhone:
    call: SippCall
    port: int
    media_port: int
    log: Path
    line_s: float  # how long the phone's line lasts
    cues: int = 0

    @classmethod
    def start(
        cls,
        directory: Path,
        line: Path,
        *,
        line_s: float,
        port: int = 5090,
        media_port: int = 17000,
    ) -> ListeningPhone:
        xml = directory / f"human-{port}.xml"
        xml.write_text(
            _SCENARIO.format(
                head=sipp.XML_HEAD,
                ringing=sipp.reply("180 Ringing", contact=True),
                answer=sipp.answer(retrans=True),
                ok=sipp.OK,
                line=line,
            )
        )
        log = directory / f"human-{port}-logs.log"
        out_path = directory / f"human-{port}.out"
        argv = ["sipp", "-i", LIVE_ADDR, "-p", str(port), "-m", "1", "-nostdin", "-sf", str(xml)]
        argv += ["-mi", LIVE_ADDR, "-mp", str(media_port), "-timeout", "300s", "-timeout_error"]
        argv += ["-trace_logs", "-log_file", str(log), "-trace_err"]
        argv += ["-error_file", str(directory / f"human-{port}-errors.log")]
        with out_path.open("wb") as out:
            proc = subprocess.Popen(argv, cwd=directory, stdout=out, stderr=subprocess.STDOUT)
        return cls(SippCall(proc, out_path), port, media_port, log, line_s)

    def _logged(self) -> list[str]:
        if not self.log.exists():
            return []
        return self.log.read_text(errors="replace").splitlines()

    def call_id(self) -> str | None:
        rows = [r for r in self._logged() if r.startswith("call-id ")]
        return rows[0].split(" ", 1)[1].strip() if rows else None

    async def cue(self, timeout: float = 10.0) -> None:
        """The next cue: speak (first), hang up (second). An in-dialog OPTIONS to the phone
        (its answer goes to the call's far end, which ignores it); returns once the phone
        logs that it acted on it, so it is waiting for the next cue when that comes (a cue
        arriving while it is still busy with the last would abort the call)."""
        call_id = self.call_id()
        assert call_id, f"the phone has not answered (no call-id in {self.log})"
        self.cues += 1
        request = (
            f"OPTIONS sip:human@{LIVE_ADDR}:{self.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LIVE_ADDR}:9;branch=z9hG4bK{secrets.token_hex(6)}\r\n"
            f"From: <sip:test@{LIVE_ADDR}>;tag=cue{self.cues}\r\n"
            f"To: <sip:human@{LIVE_ADDR}>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {100 + self.cues} OPTIONS\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(request.encode(), (LIVE_ADDR, self.port))
        async with asyncio.timeout(timeout):
            while f"cued {self.cues}" not in self._logged():
                await asyncio.sleep(0.05)


def alaw_to_pcm(payload: bytes) -> np.ndarray:
    """G.711 A-law to int16 (ITU-T G.711 alaw2linear)."""
    a = np.frombuffer(payload, dtype=np.uint8).astype(np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


@dataclass
class Heard:
    at: float  # arrival, time.time()
    pcm: np.ndarray  # 8 kHz int16

    @property
    def speech(self) -> bool:
        return float(np.sqrt(np.mean(self.pcm.astype(np.float64) ** 2))) > SPEECH_RMS


@dataclass
class RtpTap:
    """The RTP audio sent to `port` on this namespace's loopback, as it arrives."""

    port: int
    heard: list[Heard] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RtpTap:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        sock.bind(("lo", 0))
        sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def speech_s(self, after: float = 0.0, before: float = float("inf")) -> float:
        return sum(
            len(h.pcm) / 8000 for h in list(self.heard) if after <= h.at < before and h.speech
        )

    def pcm(self, after: float = 0.0, before: float = float("inf")) -> bytes:
        return b"".join(h.pcm.tobytes() for h in list(self.heard) if after <= h.at < before)

    def _run(self, sock: socket.socket) -> None:
        outgoing = 4  # PACKET_OUTGOING: loopback shows each packet twice
        with contextlib.closing(sock):
            while not self._stop.is_set():
                try:
                    data, addr = sock.recvfrom(65535)
                except TimeoutError:
                    continue
                if addr[2] == outgoing or len(data) < 14 + 20 + 8 + 12:
                    continue
                if data[12:14] != b"\x08\x00" or data[14 + 9] != 17:  # IPv4, UDP
                    continue
                ihl = (data[14] & 0x0F) * 4
                udp = 14 + ihl
                if struct.unpack("!H", data[udp + 2 : udp + 4])[0] != self.port:
                    continue
                rtp = data[udp + 8 :]
                cc, pt = rtp[0] & 0x0F, rtp[1] & 0x7F
                if pt != PCMA:
                    continue
                self.heard.append(Heard(time.time(), alaw_to_pcm(rtp[12 + 4 * cc :])))
