"""VAD CPU per second of human audio, for a human heard by 1, 2 and 4 personas.

Run from the project root: `python -m bench.vad_cost [--quick] [--seconds 30]
[--listeners 1 2 4] [--repeats 3]`. Prints one JSON object.

The human is synthetic but speech-like: voiced runs of 0.8-2 s (a glottal pitch of 95-210 Hz
with its harmonics shaped by vowel formants that change every syllable, and a syllable
envelope), separated by 0.4-0.9 s pauses; silero marks about half of the windows as speech,
so the VAD's speech start/end path runs, not only its inference. 16 kHz mono, 20 ms frames.

Every persona is a real AgentSession built by the product (`workers.room.stage.make_session` with
the persona's offline model and the process's one silero VAD, as the worker passes
`proc.userdata["vad"]` to every persona), started on the local stage, its agent the product's
persona agent with a floor hook (so a finished human turn goes to the floor and the framework
does not reply). The human's track is then attached as `session.input.audio`:

- before: every persona that hears the human gets the track: N sessions, N VAD streams;
- after: this project's design (workers/room/stage/livekit.py `room_options`: only the lead persona,
  `hears_humans`, takes audio input; the floor relays the text to the others): only the lead
  gets the track: one VAD stream, however many personas are in the room.

Frames are pushed as fast as the sessions take them; the clock (process CPU time, all threads:
silero runs its ONNX inference in the default executor) runs from the first frame until the
VAD has reported its inferences over the audio (`metrics_collected`). `vad_streams_only`
repeats the "before" layout on bare `vad.stream()`s, without sessions, as a cross-check.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import numpy as np
from livekit.agents.voice import io

from bench._common import (
    ObservedStage,
    bench_catalog,
    bench_scenario,
    cpu_s,
    machine,
    rounded,
    run_async_bench,
)

SAMPLE_RATE = 16_000
FRAME_MS = 20
WINDOW = 512  # silero's window at 16 kHz
METRICS_EVERY = 32  # silero emits VAD metrics every ceil(1 / 0.032 s) inferences
VOWELS = (  # F1, F2, F3 in Hz
    (730, 1090, 2440),
    (270, 2290, 3010),
    (300, 870, 2240),
    (530, 1840, 2480),
    (570, 840, 2410),
    (660, 1720, 2410),
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="seconds of human audio")
    p.add_argument("--listeners", type=int, nargs="+", default=[1, 2, 4], choices=[1, 2, 3, 4])
    p.add_argument("--repeats", type=int, default=3, help="runs per layout and size (median)")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 s of audio, 1 repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 4.0, 1
    return args


# ---- the human -------------------------------------------------------------------------------


def speech_like(seconds: float, seed: int = 7) -> np.ndarray:
    """Int16 PCM at 16 kHz: formant-shaped harmonic runs with syllable envelopes and pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    pos = 0
    while pos < n:
        run = int(rng.uniform(0.8, 2.0) * SAMPLE_RATE)
        pause = int(rng.uniform(0.4, 0.9) * SAMPLE_RATE)
        end = min(pos + run, n)
        t = np.arange(end - pos) / SAMPLE_RATE
        f0 = rng.uniform(95, 210) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        syllable = rng.uniform(0.12, 0.25)
        index = (t // syllable).astype(int)
        vowels = rng.integers(0, len(VOWELS), index.max() + 1)
        formants = np.array([VOWELS[v] for v in vowels])[index]
        voiced = np.zeros(len(t))
        for k in range(1, 40):
            fk = k * f0
            gain = sum(1 / (1 + ((fk - formants[:, j]) / (80 + 40 * j)) ** 2) for j in range(3))
            voiced += np.where(fk < SAMPLE_RATE / 2 - 200, gain / k**0.5, 0) * np.sin(k * phase)
        envelope = np.sin(np.pi * ((t % syllable) / syllable)) ** 0.7
        out[pos:end] = voiced * envelope + 0.01 * rng.standard_normal(len(t))
        pos = end + pause
    out = out / np.max(np.abs(out)) * 0.6
    return (out * 32767).astype(np.int16)


def frames_of(pcm: np.ndarray) -> list[Any]:
    from livekit import rtc

    size = SAMPLE_RATE * FRAME_MS // 1000
    return [
        rtc.AudioFrame(pcm[i : i + size].tobytes(), SAMPLE_RATE, 1, size)
        for i in range(0, len(pcm) - size + 1, size)
    ]


class HumanTrack(io.AudioInput):
    """One listener's subscription to the human's track: the same frames for everyone,
    released when `go` is set."""

    def __init__(self, frames: list[Any], go: asyncio.Event) -> None:
        super().__init__(label="bench-human")
        self._frames = iter(frames)
        self._go = go

    async def __anext__(self) -> Any:
        await self._go.wait()
        await asyncio.sleep(0)  # let the other subscribers and the VAD run
        try:
            return next(self._frames)
        except StopIteration:
            raise StopAsyncIteration from None


class InferenceCount:
    """Inferences reported by every stream of one VAD (`metrics_collected`)."""

    def __init__(self, vad: Any) -> None:
        self.count = 0
        self.inference_wall_s = 0.0
        self._changed = asyncio.Event()
        vad.on("metrics_collected", self._on)

    def _on(self, m: Any) -> None:
        self.count += m.inference_count
        self.inference_wall_s += m.inference_duration_total
        self._changed.set()

    async def reach(self, target: int, within_s: float) -> None:
        async with asyncio.timeout(within_s):
            while self.count < target:
                self._changed.clear()
                await self._changed.wait()


def _target(frames: list[Any]) -> tuple[int, float]:
    """Inferences per stream we wait for (whole metric batches) and the audio they cover."""
    windows = len(frames) * (SAMPLE_RATE * FRAME_MS // 1000) // WINDOW
    counted = windows // METRICS_EVERY * METRICS_EVERY
    return counted, counted * WINDOW / SAMPLE_RATE


# ---- one measurement --------------------------------------------------------------------------


async def _sessions(vad: Any, frames: list[Any], personas: int, layout: str) -> dict[str, Any]:
    """`personas` product sessions on the local stage; the human heard by all or the lead."""
    from agents.models import SessionModels
    from agents.offline import offline_models
    from agents.persona import RecordingFloor, build_agent
    from agents.room_data import RoomData
    from workers.capacity.selector import Selector
    from workers.room.seat import seats_for
    from workers.room.stage import StageCast, StageEvents

    catalog = bench_catalog()
    scenario = bench_scenario(personas, 10)
    selected = Selector(catalog).cast(scenario)
    cast = {m.slot.role: m.persona for m in selected.members}
    names = {role: p.name for role, p in cast.items()}
    room = RoomData(scenario, catalog)
    heard: list[str] = []
    seats = seats_for(selected.members, "bench-vad")
    agents = {}
    for seat in seats:
        agents[seat.persona.id] = build_agent(
            seat.persona,
            room_data=room,
            cast=cast,
            floor=RecordingFloor(),
            on_human_turn=heard.append,  # what the room runner gives the hearer
        )

    def models(p: Any) -> SessionModels:
        m = offline_models(p, scenario, names)
        return SessionModels(llm=m.llm, vad=vad, offline=True)

    lead = next(s for s in seats if s.slot.role == scenario.lead_slot.role).persona.id
    stage = ObservedStage()
    sessions = await stage.open(
        StageCast(seats=seats, agents=agents, models_for=models, own=lead, listener=lead),
        StageEvents.ignored(),
    )
    go = asyncio.Event()
    listening = [s for pid, s in sessions.items() if layout == "before" or pid == lead]
    counter = InferenceCount(vad)
    per_stream, audio_s = _target(frames)
    try:
        for session in listening:
            session.input.audio = HumanTrack(frames, go)
        await asyncio.sleep(0.05)  # every forward task is waiting on the first frame
        cpu0, wall0 = cpu_s(), time.perf_counter()
        go.set()
        await counter.reach(per_stream * len(listening), within_s=120 + 10 * audio_s)
        cpu, wall = cpu_s() - cpu0, time.perf_counter() - wall0
    finally:
        vad.off("metrics_collected", counter._on)
        await stage.close()
        selected.release()
    return {
        "personas": personas,
        "vad_streams_fed": len(listening),
        "audio_s": rounded(audio_s, 3),
        "cpu_s": rounded(cpu, 4),
        "wall_s": rounded(wall, 4),
        "inference_wall_s": rounded(counter.inference_wall_s, 4),
        "cpu_s_per_audio_s": cpu / audio_s,
    }


async def _bare_streams(vad: Any, frames: list[Any], streams: int) -> dict[str, Any]:
    from livekit.agents import vad as lvad

    per_stream, audio_s = _target(frames)
    cpu0 = cpu_s()
    opened = [vad.stream() for _ in range(streams)]
    for frame in frames:
        for stream in opened:
            stream.push_frame(frame)
    for stream in opened:
        stream.end_input()

    async def drain(stream: Any) -> int:
        n = 0
        async for ev in stream:
            n += ev.type == lvad.VADEventType.INFERENCE_DONE
        return n

    counts = await asyncio.gather(*(drain(s) for s in opened))
    cpu = cpu_s() - cpu0
    if min(counts) < per_stream:
        raise RuntimeError(f"VAD streams ran {counts} inferences, expected >= {per_stream}")
    return {"streams": streams, "cpu_s_per_audio_s": cpu / audio_s}


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(runs[0])
    for key in ("cpu_s", "wall_s", "inference_wall_s", "cpu_s_per_audio_s"):
        if key in out:
            out[key] = statistics.median(r[key] for r in runs)
    out["cpu_s_per_audio_s"] = rounded(out["cpu_s_per_audio_s"], 5)
    for key in ("cpu_s", "wall_s", "inference_wall_s"):
        if key in out:
            out[key] = rounded(out[key], 4)
    return out


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from livekit.plugins import silero

    vad = silero.VAD.load()  # once per process, as the worker's prewarm does
    pcm = speech_like(args.seconds)
    frames = frames_of(pcm)
    speech = await _speech_share(vad, frames)
    # warm-up: the first session and first stream pay one-off costs
    await _sessions(vad, frames[: 2000 // FRAME_MS], 1, "after")
    rows: dict[str, Any] = {}
    for n in args.listeners:
        before = [await _sessions(vad, frames, n, "before") for _ in range(args.repeats)]
        after = [await _sessions(vad, frames, n, "after") for _ in range(args.repeats)]
        bare = [await _bare_streams(vad, frames, n) for _ in range(args.repeats)]
        b, a = _median(before), _median(after)
        rows[str(n)] = {
            "before": b,
            "after": a,
            "after_over_before": rounded(a["cpu_s_per_audio_s"] / b["cpu_s_per_audio_s"], 3),
            "vad_streams_only": _median(bare),
        }
    first, last = rows[str(args.listeners[0])], rows[str(args.listeners[-1])]
    after_growth = last["after"]["cpu_s_per_audio_s"] / first["after"]["cpu_s_per_audio_s"]
    before_growth = last["before"]["cpu_s_per_audio_s"] / first["before"]["cpu_s_per_audio_s"]
    return {
        "bench": "vad_cost",
        "machine": machine(),
        "params": {
            "audio_s": args.seconds,
            "sample_rate": SAMPLE_RATE,
            "frame_ms": FRAME_MS,
            "listeners": args.listeners,
            "repeats": args.repeats,
            "speech_share": speech,
            "vad": "livekit.plugins.silero.VAD.load() defaults, one per process",
            "sessions": "workers.room.stage.make_session + LocalStage, product persona agents",
            "cpu": "process CPU (all threads) from the first frame to the VAD's last metrics",
        },
        "by_listeners": rows,
        "growth_first_to_last": {
            "listeners": f"{args.listeners[0]} -> {args.listeners[-1]}",
            "before": rounded(before_growth, 3),
            "after": rounded(after_growth, 3),
        },
        "aim": {
            "after_does_not_grow_with_listeners": after_growth <= 1.15,
            "tolerance": "after(last)/after(first) <= 1.15 (run-to-run noise)",
        },
    }


async def _speech_share(vad: Any, frames: list[Any]) -> float:
    """Share of silero windows over 0.5 (the activation threshold) on this audio."""
    from livekit.agents import vad as lvad

    stream = vad.stream()
    for frame in frames:
        stream.push_frame(frame)
    stream.end_input()
    probs = [ev.probability async for ev in stream if ev.type == lvad.VADEventType.INFERENCE_DONE]
    return rounded(sum(p > 0.5 for p in probs) / max(1, len(probs)), 3)


def main(argv: list[str] | None = None) -> int:
    return run_async_bench(_parse, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
