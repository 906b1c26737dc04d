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

End of speech to final (`end_to_final`): the same lines pushed into an STT stream at the pace of
real time (10 ms frames, 0.5 s of silence before, 1.5 s after), as a room's caller speaks them,
with the real silero VAD. `speech_end` is when the last audible sample of the line was pushed
(known from the audio); per line: `vad_end` (to the VAD's END_OF_SPEECH event), `final` (END to
FINAL_TRANSCRIPT) and `total`. Configurations: livekit's `StreamAdapter` around the
non-streaming STT (the whole utterance decoded after its end: the layout before streaming),
then the streaming `SphinxSTT(vad=...)`, each at the VAD silence given (`--silences`).
`exact`: finals equal to the line as written; `split`: lines heard as more than one final.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from typing import Any

from bench._common import (
    ROOT,
    cpu_s,
    machine,
    percentile,
    rounded,
    run_async_bench,
    summary_ms,
)

LINE_12 = "The truck left the depot at nine and should arrive before noon."
SCENARIOS = ("inbound_support", "sales_support_handoff")
AIM_TTS_RTF = 0.1
AIM_FIRST_FRAME_MS = 150.0
AIM_STT_RTF = 0.5


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=20, help="syntheses per persona voice")
    p.add_argument("--stt-reps", type=int, default=2, help="passes over the scenario lines")
    p.add_argument(
        "--latency-passes", type=int, default=2, help="real-time passes over the lines per config"
    )
    p.add_argument("--latency-lines", type=int, default=0, help="lines to time (0: all)")
    p.add_argument(
        "--silences",
        type=float,
        nargs="+",
        default=[0.55, 0.45],
        help="VAD end-of-speech silences to measure the streaming STT at (s)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 2 reps, 1 STT pass")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.stt_reps, args.latency_passes, args.latency_lines = 2, 1, 1, 1
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


_FRAME_MS = 10
_AUDIBLE = 300  # int16 peak: the last sample above it ends the line's speech


def _p50_p95(seconds: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in seconds]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50_ms": rounded(percentile(ms, 50)),
        "p95_ms": rounded(percentile(ms, 95)),
        "max_ms": rounded(max(ms)),
    }


async def _one_line(stt: Any, pcm: bytes, rate: int) -> dict[str, Any]:
    """Push one line at the pace of real time; when its speech ended, the VAD said so, and the
    final came (perf_counter seconds), and the finals' texts."""
    import numpy as np
    from livekit import rtc
    from livekit.agents import stt as lk_stt

    lead, tail = bytes(2 * rate // 2), bytes(2 * rate * 3 // 2)
    audio = lead + pcm + tail
    audible = np.flatnonzero(np.abs(np.frombuffer(pcm, np.int16).astype(np.int32)) > _AUDIBLE)
    speech_end_sample = len(lead) // 2 + int(audible[-1]) + 1
    step = rate * _FRAME_MS // 1000
    marks: dict[str, float] = {}
    finals: list[str] = []
    final_came = asyncio.Event()
    async with stt.stream() as stream:

        async def collect() -> None:
            async for ev in stream:
                now = time.perf_counter()
                if ev.type == lk_stt.SpeechEventType.END_OF_SPEECH:
                    marks.setdefault("vad_end", now)
                elif ev.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT:
                    marks.setdefault("final", now)
                    finals.append(ev.alternatives[0].text)
                    final_came.set()

        reader = asyncio.create_task(collect())
        t0 = time.perf_counter()
        samples = len(audio) // 2
        for i in range(0, samples, step):
            n = min(step, samples - i)
            stream.push_frame(rtc.AudioFrame(audio[2 * i : 2 * (i + n)], rate, 1, n))
            ahead = t0 + (i + n) / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)  # a caller speaks in real time
        with contextlib.suppress(TimeoutError):  # never heard: counted as not `heard`
            await asyncio.wait_for(final_came.wait(), timeout=30)
        stream.end_input()
        await reader
    marks["speech_end"] = t0 + speech_end_sample / rate
    return {"marks": marks, "finals": finals}


async def _end_to_final(passes: int, silences: list[float], first: int) -> dict[str, Any]:
    """End of speech to final transcript, per configuration (see the module's doc)."""
    from livekit.agents.stt import StreamAdapter
    from livekit.plugins import silero

    from agents.espeak_tts import HUMAN_VOICE, synthesize_pcm
    from agents.sphinx_stt import SphinxRecognizer, SphinxSTT
    from config.scenario import load_scenario

    lines = [
        line
        for name in SCENARIOS
        for line in load_scenario(ROOT / "scenarios" / f"{name}.json").human_lines
    ]
    clips = [(line, *synthesize_pcm(line, HUMAN_VOICE)) for line in lines[: first or None]]
    recognizer = SphinxRecognizer()
    recognizer.load()
    configs: dict[str, Any] = {
        f"adapter_{silences[0]}": StreamAdapter(
            stt=SphinxSTT(phrases=lines, recognizer=recognizer),
            vad=silero.VAD.load(min_silence_duration=silences[0]),
        )
    }
    for silence in silences:
        vad = silero.VAD.load(min_silence_duration=silence)
        configs[f"streaming_{silence}"] = SphinxSTT(phrases=lines, recognizer=recognizer, vad=vad)
    out: dict[str, Any] = {}
    for name, stt in configs.items():
        rows = [await _one_line(stt, pcm, rate) for _ in range(passes) for _, rate, pcm in clips]
        heard = [r for r in rows if "final" in r["marks"] and "vad_end" in r["marks"]]
        texts = [line for _ in range(passes) for line, _, _ in clips]
        out[name] = {
            "lines": len(rows),
            "heard": len(heard),
            "exact": sum(r["finals"] == [t] for r, t in zip(rows, texts, strict=True)),
            "split": sum(len(r["finals"]) > 1 for r in rows),
            "vad_end": _p50_p95([r["marks"]["vad_end"] - r["marks"]["speech_end"] for r in heard]),
            "final": _p50_p95([r["marks"]["final"] - r["marks"]["vad_end"] for r in heard]),
            "total": _p50_p95([r["marks"]["final"] - r["marks"]["speech_end"] for r in heard]),
        }
    return {"lines": len(clips), "passes": passes, "configs": out}


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    tts = await _tts(args.reps)
    stt = await _stt(args.stt_reps)
    load_before = os.getloadavg()[0]
    end_to_final = await _end_to_final(args.latency_passes, args.silences, args.latency_lines)
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
        "end_to_final": {
            **end_to_final,
            "load_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
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
