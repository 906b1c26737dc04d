"""The offline voice's cost: eSpeak NG TTS per persona voice, pocketsphinx STT.

Run from the project root: `python -m bench.offline_voice [--quick] [--reps 20]`. Prints one
JSON object.

TTS: for every persona of the shipped catalog, its voice (`espeak_voice_for(voice, id)`) says
a 12-word line through livekit's own API (`EspeakTTS.synthesize()`, iterated as a session
does). First frame: from `synthesize()` to the first `SynthesizedAudio`. Real-time factor:
process CPU (all threads) per second of audio produced. The very first synthesis of the
process (the library loads) is reported apart as `cold_first_frame_ms`.

STT: the human lines of the shipped scenarios, spoken by `HUMAN_VOICE`, recognised through
`SphinxSTT.recognize()` (22.05 kHz frames, resampled to 16 kHz inside), with the scenario's
lines as its phrase grammar and without (free-form only). Real-time factor: process CPU per
second of speech. `words_found` is the share of each line's words in the transcript.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench._common import ROOT, cpu_s, machine, rounded, run_async_bench, summary_ms

LINE_12 = "The truck left the depot at nine and should arrive before noon."
SCENARIOS = ("inbound_support", "sales_support_handoff")
AIM_TTS_RTF = 0.1
AIM_FIRST_FRAME_MS = 150.0
AIM_STT_RTF = 0.5


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=20, help="syntheses per persona voice")
    p.add_argument("--stt-reps", type=int, default=2, help="passes over the scenario lines")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 reps, 1 STT pass")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.stt_reps = 2, 1
    return args


async def _say(engine: Any, text: str) -> tuple[float, float, float]:
    """(seconds to the first frame, CPU seconds, seconds of audio) for one line."""
    cpu0, t0 = cpu_s(), time.perf_counter()
    first = 0.0
    audio = 0.0
    async for ev in engine.synthesize(text):
        first = first or time.perf_counter() - t0
        audio += ev.frame.duration
    return first, cpu_s() - cpu0, audio


async def _tts(reps: int) -> dict[str, Any]:
    from agents.espeak_tts import EspeakTTS
    from config.catalog import load_catalog

    catalog = load_catalog(ROOT / "config" / "catalog.json")
    cold_first, _, _ = await _say(EspeakTTS(voice="alloy", key="warmup"), LINE_12)
    rows: dict[str, Any] = {}
    for persona in catalog.personas:
        engine = EspeakTTS(voice=persona.voice, key=persona.id)
        runs = [await _say(engine, LINE_12) for _ in range(reps)]
        cpu, audio = sum(r[1] for r in runs), sum(r[2] for r in runs)
        rows[persona.id] = {
            "voice": persona.voice,
            "espeak": {
                "variant": engine.voice.variant,
                "pitch": engine.voice.pitch,
                "rate": engine.voice.rate,
            },
            "audio_s": rounded(audio / reps, 3),
            "first_frame": summary_ms([r[0] for r in runs]),
            "rtf": rounded(cpu / audio, 5),
        }
    return {
        "line": LINE_12,
        "words": len(LINE_12.split()),
        "cold_first_frame_ms": rounded(cold_first * 1000),
        "by_persona": rows,
        "worst_rtf": max(r["rtf"] for r in rows.values()),
        "worst_first_frame_p99_ms": max(r["first_frame"]["p99_ms"] for r in rows.values()),
    }


async def _stt_pass(stt: Any, clips: list[tuple[str, Any]], passes: int) -> dict[str, Any]:
    from agents.sphinx_stt import normalize_text

    cpu = audio = 0.0
    found: list[float] = []
    grammar_hits = 0
    for _ in range(passes):
        for line, frame in clips:
            cpu0 = cpu_s()
            event = await stt.recognize(frame)
            cpu += cpu_s() - cpu0
            audio += frame.duration
            heard = event.alternatives[0]
            ref, got = normalize_text(line), set(normalize_text(heard.text))
            found.append(sum(w in got for w in ref) / len(ref))
            grammar_hits += (heard.metadata or {}).get("source") == "grammar"
    return {
        "utterances": len(found),
        "audio_s": rounded(audio, 2),
        "rtf": rounded(cpu / audio, 4),
        "words_found_mean": rounded(statistics.mean(found), 3),
        "words_found_min": rounded(min(found), 3),
        "grammar_results": grammar_hits,
    }


async def _stt(passes: int) -> dict[str, Any]:
    from livekit import rtc

    from agents.espeak_tts import HUMAN_VOICE, synthesize_pcm
    from agents.sphinx_stt import SphinxSTT, shared_recognizer
    from config.scenario import load_scenario

    t0 = time.perf_counter()
    shared_recognizer().load()
    load_s = time.perf_counter() - t0
    lines = [
        line
        for name in SCENARIOS
        for line in load_scenario(ROOT / "scenarios" / f"{name}.json").human_lines
    ]
    clips = []
    for line in lines:
        rate, pcm = synthesize_pcm(line, HUMAN_VOICE)
        clips.append((line, rtc.AudioFrame(pcm, rate, 1, len(pcm) // 2)))
    with_grammar = SphinxSTT(phrases=lines)
    await with_grammar.recognize(clips[0][1])  # registers the grammar (not timed)
    return {
        "decoder_load_s": rounded(load_s, 3),
        "lines": len(lines),
        "with_phrases": await _stt_pass(with_grammar, clips, passes),
        "free_form": await _stt_pass(SphinxSTT(), clips, passes),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    tts = await _tts(args.reps)
    stt = await _stt(args.stt_reps)
    return {
        "bench": "offline_voice",
        "machine": machine(),
        "params": {
            "reps": args.reps,
            "stt_passes": args.stt_reps,
            "tts": "agents.espeak_tts.EspeakTTS, 22050 Hz mono, via synthesize()",
            "stt": "agents.sphinx_stt.SphinxSTT via recognize(), HUMAN_VOICE speech",
            "cpu": "process CPU (user + system, all threads) per second of audio",
        },
        "tts": tts,
        "stt": stt,
        "aim": {
            "tts_rtf_max": AIM_TTS_RTF,
            "tts_first_frame_ms_max": AIM_FIRST_FRAME_MS,
            "stt_rtf_max": AIM_STT_RTF,
            "tts_rtf_met": tts["worst_rtf"] <= AIM_TTS_RTF,
            "tts_first_frame_met": tts["worst_first_frame_p99_ms"] <= AIM_FIRST_FRAME_MS,
            "stt_rtf_met": stt["with_phrases"]["rtf"] <= AIM_STT_RTF
            and stt["free_form"]["rtf"] <= AIM_STT_RTF,
        },
    }


def main(argv: list[str] | None = None) -> int:
    return run_async_bench(_parse, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
