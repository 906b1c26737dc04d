"""The offline ear's worst case: the largest scenario config.scenario accepts, and hostile audio.

Run from the project root: `python -m bench.ear_bounds [--quick]`. Prints one JSON object.

`largest_human_lines()` is the worst accepted `human_lines`: as many lines as allowed, each at
the length, clause and number limits. For it the bench measures building its grammar (a fresh
decoder, wall and CPU time, peak RSS) and decoding, through `SphinxRecognizer.transcribe`, one
of its lines spoken by `HUMAN_VOICE`, one clause of it (a VAD cut), and 10 s of loud white
noise. Each decode reports wall and CPU time against the audio's own duration
(`realtime_share`, `cpu_share`: the decode's CPU is bounded at 0.8 of the audio, and on a core
of its own the ear keeps up while `realtime_share` is below 1) and whether the line came back
exactly.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from typing import Any

import numpy as np

from bench._common import machine, rounded, run_async_bench
from config.scenario import largest_human_lines, spoken_clauses


def white_noise(seconds: float, *, std: float = 3000.0) -> bytes:
    """Loud white noise, 16 kHz int16: the costliest audio measured for the free-form search."""
    rng = np.random.default_rng(1)
    return (rng.standard_normal(int(16_000 * seconds)) * std).astype(np.int16).tobytes()


def speech_16k(text: str) -> bytes:
    from livekit import rtc

    from agents.espeak_tts import HUMAN_VOICE, synthesize_pcm
    from agents.sphinx_stt import to_pcm16k

    rate, pcm = synthesize_pcm(text, HUMAN_VOICE)
    return to_pcm16k(rtc.AudioFrame(pcm, rate, 1, len(pcm) // 2))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _decode(recognizer: Any, grammar: Any, pcm: bytes, expected: str | None) -> dict[str, Any]:
    started, cpu0 = time.perf_counter(), time.thread_time()
    heard = recognizer.transcribe(pcm, grammar)  # on this thread: its CPU time is the decode's
    wall = time.perf_counter() - started
    cpu = time.thread_time() - cpu0
    audio = len(pcm) / 32_000
    row: dict[str, Any] = {
        "audio_s": rounded(audio, 2),
        "wall_s": rounded(wall, 3),
        "cpu_s": rounded(cpu, 3),
        "realtime_share": rounded(wall / audio, 3),
        "cpu_share": rounded(cpu / audio, 3),
        "source": heard.source,
    }
    if expected is not None:
        row["exact"] = heard.text == expected
    return row


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3, help="decodes of each clip (the worst kept)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 rep")
    args = p.parse_args(argv)
    if args.quick:
        args.reps = 1
    return args


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from agents.sphinx_stt import SphinxRecognizer

    lines = largest_human_lines()
    recognizer = SphinxRecognizer()
    recognizer.load()
    rss_before = _peak_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    grammar = recognizer.grammar_for(lines)
    build = {
        "wall_s": rounded(time.perf_counter() - t0, 3),
        "cpu_s": rounded(time.process_time() - c0, 3),
        "arcs": grammar.arcs if grammar else 0,
        "peak_rss_growth_mb": rounded(_peak_rss_mb() - rss_before, 1),
    }
    line = lines[len(lines) // 2]
    clause = spoken_clauses(line)[0]
    clips = {
        "line": (speech_16k(line), line),
        "clause": (speech_16k(clause), clause),
        "white_noise_10s": (white_noise(10.0), None),
    }
    decodes: dict[str, Any] = {}
    for name, (pcm, expected) in clips.items():
        runs = [_decode(recognizer, grammar, pcm, expected) for _ in range(args.reps)]
        decodes[name] = max(runs, key=lambda r: r["wall_s"])
    return {
        "bench": "ear_bounds",
        "machine": {**machine(), "load_1m_at_end": round(os.getloadavg()[0], 2)},
        "params": {
            "lines": len(lines),
            "chars_per_line": max(len(x) for x in lines),
            "reps": args.reps,
            "decode": "agents.sphinx_stt.SphinxRecognizer.transcribe, worst of reps",
        },
        "build": build,
        "decode": decodes,
        "worst_realtime_share": max(d["realtime_share"] for d in decodes.values()),
        "worst_cpu_share": max(d["cpu_share"] for d in decodes.values()),
    }


def main(argv: list[str] | None = None) -> int:
    return run_async_bench(_parse, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
