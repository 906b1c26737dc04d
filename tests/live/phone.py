"""The telephony side of the live suite: LiveKit's SIP service next to a server that has Redis
(started by `tests/live/livenet.sh telephony`), and SIPp as the phone, all inside the private
namespace.

SIPp plays a scripted caller: it dials a number, and once answered plays RTP from pcap files
(a spoken line made here from eSpeak audio, the RFC 2833 key presses SIPp ships) with pauses
between them, the way a person listens before speaking, then hangs up. The tests wait on what
the room records, never on the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from config.settings import PROJECT_ROOT
from workers.telephony import sipp

LIVENET = PROJECT_ROOT / "tests" / "live" / "livenet.sh"
SIPP_SHARE = Path("/usr/share/sip-tester")  # Debian sip-tester: g711a.pcap, dtmf_2833_*.pcap
LIVE_ADDR = os.environ.get("LIVE_ADDR", "10.77.0.1")
NOT_HERE = (
    "telephony: needs livekit-sip (`make sip`: Go, libopus-dev libopusfile-dev libsoxr-dev), "
    "redis-server and SIPp (Debian sip-tester)"
)


@dataclass(frozen=True)
class TelephonyStack:
    url: str  # the telephony livekit-server (Redis-backed, keys devkey/secret)
    sip_addr: str  # livekit-sip's SIP address, host:port
    pids: tuple[int, ...]
    server_log: Path
    sip_log: Path

    @property
    def http_url(self) -> str:
        return self.url.replace("ws://", "http://")

    @classmethod
    def start(cls, directory: Path) -> TelephonyStack | str:
        """The stack up and ready, or why it cannot run here (one line)."""
        if shutil.which("sipp") is None:
            return NOT_HERE + ": no sipp"
        proc = subprocess.run(
            [str(LIVENET), "telephony", str(directory)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode == 77:
            return f"{NOT_HERE}: {proc.stderr.strip().splitlines()[-1]}"
        if proc.returncode != 0:
            raise AssertionError(f"the telephony stack did not start:\n{proc.stderr}")
        env = dict(
            line.split("=", 1)
            for line in (directory / "telephony.env").read_text().splitlines()
            if "=" in line
        )
        return cls(
            url=env["TEL_LIVEKIT_URL"],
            sip_addr=env["TEL_SIP_ADDR"],
            pids=tuple(int(p) for p in env["TEL_PIDS"].split()),
            server_log=Path(env["TEL_SERVER_LOG"]),
            sip_log=Path(env["TEL_SIP_LOG"]),
        )

    async def refusal(self, caller: str, timeout: float = 20) -> dict[str, object]:
        """livekit-sip's record of refusing the call from `caller` (the log line that closes
        it, with its SIP status and why), once it is written."""
        async with asyncio.timeout(timeout):
            while True:
                for line in self.sip_log.read_text(errors="replace").splitlines():
                    if "Closing inbound call" in line and f'"fromUser": "{caller}"' in line:
                        return json.loads(line[line.index("{") :])
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def sync_catalog(stack: TelephonyStack, agent_name: str) -> None:
    """The shipped catalog's numbers and trunks on the telephony server, its calls dispatched
    to `agent_name`."""
    from config.catalog import load_catalog
    from tests.live.harness import server_api
    from workers.telephony import provision
    from workers.telephony.resources import wanted

    async def sync() -> None:
        want = wanted(
            load_catalog(),
            source="config/catalog.json",
            scenarios_dir=PROJECT_ROOT / "scenarios",
            agent_name=agent_name,
            environ=os.environ,
        )
        async with server_api(stack.url) as lk:
            await provision.sync(lk, want)

    asyncio.run(sync())


# -- audio as RTP in a pcap ------------------------------------------------------------------

RTP_RATE = 8000
FRAME = 160  # 20 ms at 8 kHz
PCMA = 8  # RTP payload type of G.711 A-law, as SIPp's own pcaps and the SDP below


def _alaw_table() -> np.ndarray:
    """G.711 A-law for every int16 value (ITU-T G.711, the reference linear2alaw)."""
    ends = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
    table = np.zeros(65536, dtype=np.uint8)
    for value in range(-32768, 32768):
        pcm = value >> 3
        if pcm >= 0:
            mask = 0xD5
        else:
            mask, pcm = 0x55, -pcm - 1
        seg = next((i for i, end in enumerate(ends) if pcm <= end), 8)
        if seg >= 8:
            code = 0x7F ^ mask
        else:
            aval = seg << 4
            aval |= (pcm >> 1) & 0xF if seg < 2 else (pcm >> seg) & 0xF
            code = aval ^ mask
        table[value & 0xFFFF] = code
    return table


def alaw(samples: np.ndarray) -> bytes:
    return bytes(_alaw_table()[samples.astype(np.int16).view(np.uint16)])


def resample(samples: np.ndarray, rate: int, to: int = RTP_RATE) -> np.ndarray:
    n = int(len(samples) * to / rate)
    x = np.linspace(0, len(samples) - 1, n)
    return np.interp(x, np.arange(len(samples)), samples.astype(np.float64)).astype(np.int16)


def write_rtp_pcap(path: Path, pcm: bytes, rate: int, *, silence_s: float = 1.0) -> float:
    """Mono int16 `pcm` at `rate` as one RTP stream (PCMA, 20 ms packets) in a pcap SIPp's
    play_pcap_audio can send; `silence_s` of silence after it (the listener's VAD needs the
    end of speech). Returns the audio's length in seconds."""
    samples = resample(np.frombuffer(pcm, dtype=np.int16), rate)
    samples = np.concatenate([samples, np.zeros(int(RTP_RATE * silence_s), dtype=np.int16)])
    payload = alaw(samples)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # pcap, Ethernet
    ssrc = 0x4C4B5350
    for seq, start in enumerate(range(0, len(payload) - FRAME + 1, FRAME)):
        rtp = struct.pack("!BBHII", 0x80, PCMA, seq & 0xFFFF, start, ssrc)
        rtp += payload[start : start + FRAME]
        udp = struct.pack("!HHHH", 6000, 6000, 8 + len(rtp), 0) + rtp
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), seq & 0xFFFF, 0, 64, 17, 0,
            bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]),
        )  # fmt: skip
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        t = start / RTP_RATE
        out.append(struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))
    return len(samples) / RTP_RATE


def dtmf_pcap(key: str) -> Path:
    name = {"*": "star", "#": "pound"}.get(key, key)
    return SIPP_SHARE / f"dtmf_2833_{name}.pcap"


# -- SIPp as the phone ---------------------------------------------------------------------


@dataclass(frozen=True)
class Play:
    """Send one pcap's RTP, then wait `then_ms` (the caller listening)."""

    pcap: Path
    then_ms: int


def caller_scenario(steps: Sequence[Play], *, listen_ms: int, hang_up: bool = True) -> str:
    """SIPp XML: INVITE (PCMA + telephone-event), answered -> ACK, wait `listen_ms`, each step
    in turn; then the caller hangs up (BYE), or with `hang_up=False` stays on the line until
    the far end hangs up (its BYE, answered 200 OK): the test ends such a call when what it
    waits for has happened, not after a fixed time."""
    plays = "\n".join(f'{sipp.play(s.pcap)}\n  <pause milliseconds="{s.then_ms}"/>' for s in steps)
    if hang_up:
        ending = f'{sipp.hang_up()}\n  <recv response="200" crlf="true"/>'
    else:
        ending = f'  <recv request="BYE"/>\n{sipp.OK}'
    return f"""{sipp.XML_HEAD}
<scenario name="caller">
{sipp.dial(key_presses=True)}  <recv response="200" rtd="true"/>
{sipp.ack()}
  <pause milliseconds="{listen_ms}"/>
{plays}
{ending}
</scenario>
"""


def unanswered_scenario() -> str:
    """SIPp XML: an INVITE that waits for an answer. livekit-sip drops a call no trunk or rule
    takes without a final response ("flood"): this phone keeps waiting, and the test reads the
    refusal from livekit-sip's log (`TelephonyStack.refusal`)."""
    return f"""{sipp.XML_HEAD}
<scenario name="unanswered">
{sipp.dial(key_presses=True)}  <recv response="200"/>
</scenario>
"""


@dataclass
class SippCall:
    """One SIPp process placing one call; `result()` waits for it (bounded)."""

    proc: subprocess.Popen[bytes]
    log: Path

    async def result(self, timeout: float) -> int:
        async with asyncio.timeout(timeout):
            while self.proc.poll() is None:
                await asyncio.sleep(0.1)
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


_PORTS = iter(range(5070, 5400, 2))


def call(
    directory: Path,
    stack: TelephonyStack,
    to: str,
    *,
    scenario_xml: str,
    caller: str = "+15550001111",
    timeout_s: int = 600,  # SIPp's own bound; the test waits on the room and kills it
) -> SippCall:
    """SIPp dials `to` from `caller` through livekit-sip, as one phone in the namespace."""
    port = next(_PORTS)
    xml = directory / f"caller-{port}.xml"
    xml.write_text(scenario_xml)
    fields = directory / f"caller-{port}.csv"
    fields.write_text(f"SEQUENTIAL\n{caller};\n")
    log = directory / f"sipp-{port}.log"
    out = log.open("wb")
    argv = ["sipp", stack.sip_addr, "-sf", str(xml), "-inf", str(fields), "-s", to]
    argv += ["-i", LIVE_ADDR, "-p", str(port), "-mi", LIVE_ADDR, "-mp", str(12000 + 2 * port)]
    argv += ["-m", "1", "-timeout", f"{timeout_s}s", "-timeout_error", "-nostdin"]
    argv += ["-trace_err", "-error_file", str(directory / f"sipp-{port}-errors.log")]
    proc = subprocess.Popen(
        argv,
        cwd=directory,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    return SippCall(proc, log)


@contextlib.contextmanager
def calls_ended(*placed: SippCall) -> Iterator[None]:
    try:
        yield
    finally:
        for c in placed:
            c.kill()


# -- SIPp as the phone that is called ------------------------------------------------------


_UAS_BUSY = f"""{sipp.XML_HEAD}
<scenario name="busy">
  <recv request="INVITE"/>
{sipp.reply("486 Busy Here")}
  <recv request="ACK"/>
</scenario>
"""

_UAS_NEVER = f"""{sipp.XML_HEAD}
<scenario name="rings-forever">
  <recv request="INVITE"/>
{sipp.reply("180 Ringing")}
  <recv request="CANCEL"/>
{sipp.reply("200 OK")}
</scenario>
"""


def answering_phone(directory: Path, behaviour: str, port: int = 5080) -> SippCall:
    """SIPp listening on LIVE_ADDR:`port` (the shipped outbound trunk's address) for one call:
    `answer` (SIPp's own uas: 180, 200, then waits for BYE), `busy` (486) or `never` (rings
    until the caller cancels)."""
    log = directory / f"uas-{behaviour}.log"
    argv = ["sipp", "-i", LIVE_ADDR, "-p", str(port), "-m", "1", "-nostdin"]
    argv += ["-mi", LIVE_ADDR, "-mp", "16000", "-timeout", "600s", "-timeout_error"]
    if behaviour == "answer":
        argv += ["-sn", "uas"]
    else:
        xml = directory / f"uas-{behaviour}.xml"
        xml.write_text(_UAS_BUSY if behaviour == "busy" else _UAS_NEVER)
        argv += ["-sf", str(xml)]
    out = log.open("wb")
    proc = subprocess.Popen(argv, cwd=directory, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return SippCall(proc, log)


# -- SIPp as a person's phone (human agents, rung by a transfer) ---------------------------

_UAS_DECLINE = f"""{sipp.XML_HEAD}
<scenario name="decline">
  <recv request="INVITE"/>
{sipp.reply("180 Ringing")}
{sipp.reply("603 Decline")}
  <recv request="ACK"/>
</scenario>
"""


def _answering(ring_ms: int, say: Path | None, say_times: int) -> str:
    """SIPp XML: ring `ring_ms`, answer (PCMA), then play `say` (a person speaking)
    `say_times` times, 20 s apart, once answered, and stay on the line until the far end hangs
    up (BYE)."""
    # said again every 20 s: a person is first briefed in private, and only then on the line
    # with the caller, whenever that is on a loaded machine
    play = "".join(
        f'{sipp.play(say)}\n  <pause milliseconds="20000"/>\n'
        for _ in range(say_times if say else 0)
    )
    return f"""{sipp.XML_HEAD}
<scenario name="person">
  <recv request="INVITE"/>
{sipp.reply("180 Ringing")}
  <pause milliseconds="{ring_ms}"/>
{sipp.answer()}
  <recv request="ACK"/>
{play}  <recv request="BYE"/>
{sipp.reply("200 OK")}
</scenario>
"""


def person_phone(
    directory: Path,
    port: int,
    behaviour: str,
    *,
    ring_ms: int = 0,
    say: Path | None = None,
    say_times: int = 1,
    calls: int = 1,
) -> SippCall:
    """A person's phone at sip:<anyone>@LIVE_ADDR:`port` for one call: `answer` (after
    `ring_ms` of ringing; `say` played once answered; on the line until hung up), `decline`
    (603), `busy` (486) or `never` (rings until cancelled), for `calls` calls (at once, too).
    Each phone its own media ports."""
    xml = directory / f"person-{port}-{behaviour}.xml"
    text = {
        "decline": _UAS_DECLINE,
        "busy": _UAS_BUSY,
        "never": _UAS_NEVER,
    }.get(behaviour) or _answering(ring_ms, say, say_times)
    xml.write_text(text)
    log = directory / f"person-{port}.log"
    argv = ["sipp", "-i", LIVE_ADDR, "-p", str(port), "-m", str(calls), "-nostdin", "-sf", str(xml)]
    argv += ["-mi", LIVE_ADDR, "-mp", str(16100 + 20 * (port % 100)), "-timeout", "600s"]
    argv += [
        "-timeout_error",
        "-trace_msg",
        "-message_file",
        str(directory / f"person-{port}-msg.log"),
    ]
    out = log.open("wb")
    proc = subprocess.Popen(argv, cwd=directory, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return SippCall(proc, log)
