"""What the warm hand-over's audio relay adds: delay on each direction, and the CPU of the
process that runs it.

Run from the project root: `python -m bench.bridge_relay [--quick] [--seconds 20]`. Prints
one JSON object. Outside the live suite's private network namespace it re-runs itself there
through `tests/live/livenet.sh run` (root and `make livekit` needed).

On the namespace's `livekit-server --dev`: a consult room and a caller room. The human's
phone leg is played by a participant of the consult room whose attributes say
`sip.callStatus=active` (what livekit-sip sets; the bridge reads nothing else of the leg).
`warm_hand_over` runs in a process of its own (`--as-bridge`), as in the worker: short
briefing (eSpeak), then the relay. Both ends then send a 40 ms 1 kHz burst every 0.5 s:
- to the caller: leg -> bridge -> caller room; the reference is a listener of the leg's own
  track in the consult room (same server hop, no bridge), so delay added = caller's arrival
  - reference's arrival of the same burst;
- to the human: caller -> bridge (mix) -> consult room -> the leg; reference: a listener
  of the caller's track in the caller room.
CPU: the bridge process's user+system time (every thread: livekit's decoders and encoders
run in Rust threads) over the measured window, as % of one core; and of that, the Python
event loop's thread (the relay's own code, frames crossing livekit's FFI).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench._livenet import run_in_livenet

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    run_in_livenet("bench.bridge_relay")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from livekit import api, rtc  # noqa: E402

from bench._common import machine, quiet, rounded, run_async_bench, summary_ms  # noqa: E402

RATE = 48_000
BURST_S, EVERY_S = 0.04, 0.5
LOUD, QUIET = 3000.0, 600.0  # frame RMS: a burst starts where a loud frame follows quiet
LEG, CALLER = "leg_bench", "caller-bench"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.bridge_relay", description=__doc__)
    p.add_argument("--seconds", type=float, default=20.0, help="measured relay window")
    p.add_argument("--quick", action="store_true", help="a 5 s window")
    p.add_argument("--as-bridge", nargs=2, metavar=("CALLER_ROOM", "CONSULT_ROOM"))
    args = p.parse_args(argv)
    if args.quick:
        args.seconds = 5.0
    return args


def _env() -> tuple[str, str, str]:
    return (
        os.environ["LIVEKIT_URL"],
        os.environ["LIVEKIT_API_KEY"],
        os.environ["LIVEKIT_API_SECRET"],
    )


def _token(room: str, identity: str, attributes: dict[str, str] | None = None) -> str:
    _, key, secret = _env()
    grants = api.VideoGrants(room_join=True, room=room, can_subscribe=True, can_publish=True)
    token = api.AccessToken(key, secret).with_identity(identity).with_grants(grants)
    return token.with_attributes(attributes or {}).to_jwt()


# -- the bridge's own process -----------------------------------------------------------------


async def _bridge(caller_room: str, consult_room: str) -> dict[str, Any]:
    from agents.espeak_tts import EspeakTTS
    from config.humans import HumanAgent
    from workers.humans.bridge import warm_hand_over

    url, key, secret = _env()

    loop_cpu: list[float] = []

    def record(event: str, **fields: Any) -> None:
        if event == "human_joined":
            loop_cpu.append(time.thread_time())  # the event loop's thread: the Python side
        print(json.dumps({"event": event, **fields}), flush=True)

    line = await warm_hand_over(
        url=url,
        api_key=key,
        api_secret=secret,
        caller_room=caller_room,
        consult_room=consult_room,
        human=HumanAgent(id="bench", tenant="bench", name="Bench", phone="+15550100999"),
        leg_identity=LEG,
        briefing="A short briefing.",
        tts=EspeakTTS(voice="alloy"),
        record=record,
    )
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until told
    loop_cpu.append(time.thread_time())
    await line.close()
    record("loop_cpu", seconds=loop_cpu[1] - loop_cpu[0])
    return {"reason": line.reason}


# -- the two ends and the references ----------------------------------------------------------


class Ear:
    """Arrival times of burst onsets on one track (10 ms frames)."""

    def __init__(self) -> None:
        self.onsets: list[float] = []
        self.tasks: list[asyncio.Task[None]] = []

    def listen(self, room: rtc.Room, identity: str) -> None:
        def subscribed(track: rtc.Track, _pub: Any, who: rtc.RemoteParticipant) -> None:
            if who.identity == identity:
                self.tasks.append(asyncio.create_task(self._run(track)))

        room.on("track_subscribed", subscribed)

    async def _run(self, track: rtc.Track) -> None:
        quiet = True
        async for event in rtc.AudioStream(track, sample_rate=RATE, frame_size_ms=10):
            samples = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64)
            level = float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0
            if quiet and level > LOUD:
                self.onsets.append(time.monotonic())
            quiet = level < QUIET if not quiet else level <= LOUD


def _burst_frames(offset_s: float, seconds: float) -> list[rtc.AudioFrame]:
    t = np.arange(int(RATE * seconds)) / RATE
    phase = (t - offset_s) % EVERY_S
    signal = np.where(phase < BURST_S, 12000 * np.sin(2 * np.pi * 1000 * t), 0.0)
    pcm = signal.astype(np.int16)
    step = RATE // 50  # 20 ms
    return [
        rtc.AudioFrame(pcm[i : i + step].tobytes(), RATE, 1, step)
        for i in range(0, len(pcm) - step + 1, step)
    ]


async def _send(source: rtc.AudioSource, frames: list[rtc.AudioFrame]) -> None:
    for frame in frames:
        await source.capture_frame(frame)


async def _join(room_name: str, identity: str, attrs: dict[str, str] | None = None) -> rtc.Room:
    url, _, _ = _env()
    room = rtc.Room()
    await room.connect(url, _token(room_name, identity, attrs))
    return room


async def _publish(room: rtc.Room) -> rtc.AudioSource:
    source = rtc.AudioSource(RATE, 1, queue_size_ms=100)
    track = rtc.LocalAudioTrack.create_audio_track("voice", source)
    await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    return source


def _added(reference: list[float], relayed: list[float]) -> list[float]:
    """Per burst: relayed arrival - reference arrival (nearest later onset within 0.4 s)."""
    out = []
    for t in reference:
        later = [r - t for r in relayed if 0 <= r - t < 0.4]
        if later:
            out.append(min(later))
    return out


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    if args.as_bridge:
        return await _bridge(*args.as_bridge)
    suffix = str(int(time.time() * 1000) % 10**8)
    caller_room, consult_room = f"bench-{suffix}", f"bench-{suffix}-consult"
    leg = await _join(consult_room, LEG, {"sip.callStatus": "active"})
    caller = await _join(caller_room, CALLER)
    ref_leg = await _join(consult_room, "ref-consult")
    ref_caller = await _join(caller_room, "ref-caller")
    leg_source, caller_source = await _publish(leg), await _publish(caller)
    to_caller, ref_to_caller, to_human, ref_to_human = Ear(), Ear(), Ear(), Ear()
    to_caller.listen(caller, "staff_bench")
    ref_to_caller.listen(ref_leg, LEG)
    to_human.listen(leg, "agent_brief_" + consult_room)
    ref_to_human.listen(ref_caller, CALLER)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bridge_relay", "--as-bridge", caller_room, consult_room,
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(120):
        while not any(e.get("event") == "human_joined" for e in events):
            raw = await child.stdout.readline()
            if not raw:
                raise RuntimeError("the bridge process ended before the human joined")
            if raw.startswith(b"{"):
                events.append(json.loads(raw))
    proc = psutil.Process(child.pid)
    cpu0, wall0 = sum(proc.cpu_times()[:2]), time.monotonic()
    await asyncio.gather(
        _send(leg_source, _burst_frames(0.0, args.seconds)),
        _send(caller_source, _burst_frames(0.25, args.seconds)),
    )
    cpu1, wall1 = sum(proc.cpu_times()[:2]), time.monotonic()
    child.stdin.close()
    out, _ = await asyncio.wait_for(child.communicate(), 60)
    last = [json.loads(r) for r in out.decode(errors="replace").splitlines() if r.startswith("{")]
    loop_s = next(e["seconds"] for e in last if e["event"] == "loop_cpu")
    for ear in (to_caller, ref_to_caller, to_human, ref_to_human):
        for task in ear.tasks:
            task.cancel()
        await asyncio.gather(*ear.tasks, return_exceptions=True)
    for room in (leg, caller, ref_leg, ref_caller):
        await room.disconnect()
    for source in (leg_source, caller_source):
        await source.aclose()
    forward = _added(ref_to_caller.onsets, to_caller.onsets)
    backward = _added(ref_to_human.onsets, to_human.onsets)
    bursts = int(args.seconds / EVERY_S)
    return {
        "bench": "bridge_relay",
        "machine": machine(),
        "params": {"seconds": args.seconds, "burst_s": BURST_S, "every_s": EVERY_S},
        "briefing": next(e for e in events if e["event"] == "briefing"),
        "added_delay_to_caller": {**summary_ms(forward), "bursts_sent": bursts},
        "added_delay_to_human": {**summary_ms(backward), "bursts_sent": bursts},
        "bridge_cpu_pct_of_one_core": rounded(100 * (cpu1 - cpu0) / (wall1 - wall0), 1),
        "of_which_python_event_loop_pct": rounded(100 * loop_s / (wall1 - wall0), 1),
        "bridge_exit": child.returncode,
        "human_left": next(e for e in last if e["event"] == "human_left"),
        "load_average": [rounded(x, 2) for x in psutil.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.as_bridge:
        quiet()
        asyncio.run(_run(args))
        return 0
    return run_async_bench(_parse, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
