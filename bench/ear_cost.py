"""What each person in a room costs the offline ear: CPU and memory per silent person and per
speaking person, and how many STT streams and decoded utterances each one takes.

Run from the project root: `python -m bench.ear_cost [--quick] [--seconds 20] [--silent 1 3]`.
Prints one JSON object. No network: the product's ears (`workers.room.stage.ears.Ears`) with
the worker's own models, as a room's listening persona has them: the process's silero VAD
(`agents.models.load_vad`, the worker's end-of-speech silence) and the streaming pocketsphinx
STT with the scenario's expected lines (`SphinxSTT(phrases=inbound_support's human_lines,
vad=...)`, as `agents.offline.offline_models` builds it).

Each person's microphone is 16 kHz mono 10 ms frames, what the LiveKit stage feeds an ear
(`rtc.AudioStream(sample_rate=16000)`), pushed as fast as the ear takes them: figures are CPU
seconds per second of audio, which pacing does not change. A silent person sends `--seconds` of
faint noise (a quiet microphone's floor, int16 std 3; `silent_1_room_noise`: std 30, a
microphone in a noisy room, which the ear's silence gate never spares); a speaking person says
the scenario's three human lines in eSpeak, each followed by a second of silence. Process CPU
(all threads: silero and the decoder run off the event loop) from the first frame until every
ear has finished; memory is this process's PSS/USS (bench/_memory.py) with the ears open,
against before them (the models loaded). Aims (issue 25): <= 2% of one core per silent person,
no more than one STT stream per speaking person."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
from livekit import rtc

from bench._common import machine, rounded, run_async_bench
from bench._memory import memory_of

RATE = 16_000
STEP = RATE // 100  # 10 ms
AIM_SILENT_CORE_SHARE = 0.02
AIM_STREAMS_PER_SPEAKER = 1


def frames(samples: np.ndarray) -> list[rtc.AudioFrame]:
    return [
        rtc.AudioFrame(samples[i : i + STEP].tobytes(), RATE, 1, STEP)
        for i in range(0, len(samples) - STEP + 1, STEP)
    ]


FAINT, ROOM = 3.0, 30.0  # noise std (int16): a quiet microphone (~-80 dBFS), a room (~-60)


def faint_noise(seconds: float, seed: int, std: float = FAINT) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(RATE * seconds)) * std).astype(np.int16)


def spoken(lines: Sequence[str]) -> np.ndarray:
    from agents.espeak_tts import espeak_voice_for, synthesize_pcm

    parts = []
    for text in lines:
        rate, pcm = synthesize_pcm(text, espeak_voice_for("fable", "caller"))
        raw = np.frombuffer(pcm, dtype=np.int16)
        resampler = rtc.AudioResampler(rate, RATE, num_channels=1)
        frame = rtc.AudioFrame(raw.tobytes(), rate, 1, len(raw))
        out = [*resampler.push(frame), *resampler.flush()]
        parts.append(np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out]))
        parts.append(faint_noise(1.0, len(parts)))
    return np.concatenate(parts)


async def mic(chunks: list[rtc.AudioFrame]) -> AsyncIterator[rtc.AudioFrame]:
    for i, frame in enumerate(chunks):
        yield frame
        if i % 10 == 9:
            await asyncio.sleep(0)  # as a live track would, let the loop run


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


async def one_run(
    stt: Any, vad: Any, silent: int, speaking: int, seconds: float, noise: float = FAINT
) -> dict:
    from workers.room.stage.ears import Ears

    heard: list[tuple[str, str]] = []

    def line(identity: str, text: str, *, heard: Any) -> None:
        lines.append((identity, text))

    lines = heard
    ears = Ears(stt, vad, on_line=line, on_speaking=lambda _: None)
    people: dict[str, list[rtc.AudioFrame]] = {
        f"silent-{i}": frames(faint_noise(seconds, i, noise)) for i in range(silent)
    }
    speech = spoken(stt.phrases) if speaking else np.zeros(0, dtype=np.int16)
    for i in range(speaking):
        people[f"speaker-{i}"] = frames(speech)
    audio_s = {who: len(f) * STEP / RATE for who, f in people.items()}
    streams_before, utterances_before = stt.streams, stt.utterances
    mem_before = memory_of(os.getpid())
    cpu0, wall0 = cpu_s(), time.perf_counter()
    peak_uss = mem_before.uss_mb
    for who, chunk in people.items():
        ears.hear(who, mic(chunk))
    while ears.listening:
        await asyncio.sleep(0.05)
        peak_uss = max(peak_uss, memory_of(os.getpid()).uss_mb)
    cpu, wall = cpu_s() - cpu0, time.perf_counter() - wall0
    await ears.aclose()
    return {
        "silent": silent,
        "speaking": speaking,
        "audio_s_per_person": rounded(max(audio_s.values(), default=0.0), 2),
        "cpu_s": rounded(cpu, 3),
        "wall_s": rounded(wall, 3),
        "cpu_s_per_audio_s": rounded(cpu / max(sum(audio_s.values()), 1e-9), 4),
        "stt_streams": stt.streams - streams_before,
        "utterances_decoded": stt.utterances - utterances_before,
        "lines_heard": len(heard),
        "uss_growth_mb": rounded(peak_uss - mem_before.uss_mb, 1),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from agents.models import load_vad
    from agents.sphinx_stt import SphinxSTT
    from config.scenario import load_scenario

    class CountingSphinx(SphinxSTT):
        streams = 0
        utterances = 0

        def stream(self, **kwargs: Any) -> Any:
            self.streams += 1
            return super().stream(**kwargs)

        def open_utterance(self) -> Any:
            self.utterances += 1
            return super().open_utterance()

    load = os.getloadavg()
    vad = load_vad()
    lines = load_scenario("inbound_support").human_lines
    stt = CountingSphinx(phrases=lines, vad=vad)
    stt.recognizer.load()
    stt.open_utterance().abort()  # the grammar built, as a room's session prewarm does
    stt.utterances = 0
    mem_models = memory_of(os.getpid())
    runs = {}
    for n in args.silent:
        runs[f"silent_{n}"] = await one_run(stt, vad, n, 0, args.seconds)
    # a microphone in a noisy room: never quiet enough to spare the VAD
    runs["silent_1_room_noise"] = await one_run(stt, vad, 1, 0, args.seconds, ROOM)
    runs["speaking_1"] = await one_run(stt, vad, 0, 1, args.seconds)
    runs["speaking_1_silent_2"] = await one_run(stt, vad, 2, 1, args.seconds)
    per_silent = {
        n: runs[f"silent_{n}"]["cpu_s"] / (n * runs[f"silent_{n}"]["audio_s_per_person"])
        for n in args.silent
    }
    speaker = runs["speaking_1"]
    worst_silent = max(per_silent.values())
    return {
        "bench": "ear_cost",
        "params": {"seconds": args.seconds, "silent": args.silent, "lines": list(lines)},
        "models_loaded": mem_models.as_dict(),
        "runs": runs,
        "per_silent_person": {
            "core_share": {str(n): rounded(v, 4) for n, v in per_silent.items()},
            "core_share_room_noise": rounded(
                runs["silent_1_room_noise"]["cpu_s"]
                / runs["silent_1_room_noise"]["audio_s_per_person"],
                4,
            ),
            "uss_mb": {
                str(n): rounded(runs[f"silent_{n}"]["uss_growth_mb"] / n, 2) for n in args.silent
            },
        },
        "per_speaking_person": {
            "cpu_s_per_audio_s": speaker["cpu_s_per_audio_s"],
            "stt_streams": speaker["stt_streams"],
            "utterances_decoded": speaker["utterances_decoded"],
            "lines_heard": speaker["lines_heard"],
            "uss_growth_mb": speaker["uss_growth_mb"],
        },
        "aims": {
            "silent_core_share_max": AIM_SILENT_CORE_SHARE,
            "silent_reached": worst_silent <= AIM_SILENT_CORE_SHARE,
            "stt_streams_per_speaker_max": AIM_STREAMS_PER_SPEAKER,
            # one stream per person (a silent person's runs its VAD only: nothing decoded)
            "streams_reached": all(
                r["stt_streams"] <= r["silent"] + r["speaking"] for r in runs.values()
            )
            and all(runs[f"silent_{n}"]["utterances_decoded"] == 0 for n in args.silent)
            and speaker["utterances_decoded"] <= len(lines),
        },
        "loadavg_before": [round(x, 2) for x in load],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="audio per silent person")
    p.add_argument("--silent", type=int, nargs="+", default=[1, 3], help="silent people")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 s, 1 silent person")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.silent = 3.0, [1]
    return args


def main(argv: list[str] | None = None) -> int:
    return run_async_bench(parse, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
