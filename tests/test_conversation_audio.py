"""`python -m workers.simulate SCENARIO --audio PATH`: one WAV of the whole conversation in the
offline voice, rendered after the room (main(argv) in-process, no network, no key), and the
renderer `workers.room.conversation_audio` it uses."""

from __future__ import annotations

import json
import wave
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.espeak_tts import HUMAN_VOICE, SAMPLE_RATE, espeak_voice_for, synthesize_pcm
from config.catalog import load_catalog
from tests.conftest import CliResult
from workers.room.conversation_audio import PAUSE_S, auto_path, render_conversation
from workers.room.transcript import read_transcript
from workers.simulate import main

Run = Callable[..., CliResult]


@pytest.fixture
def transcripts(tmp_path: Path) -> Path:
    return tmp_path / "transcripts"


@pytest.fixture
def run(run_main, monkeypatch, transcripts, restore_logging) -> Run:
    """`python -m workers.simulate ARGS...` in-process, transcripts under tmp_path."""
    monkeypatch.setenv("TRANSCRIPTS_DIR", str(transcripts))
    return lambda *args: run_main(main, *args)


def _seconds(pcm: bytes) -> float:
    return len(pcm) / 2 / SAMPLE_RATE


def _expected_seconds(events: list[dict]) -> float:
    """Each spoken line synthesised on its own, in its speaker's voice, plus the pauses."""
    catalog = load_catalog()
    total, lines = 0.0, 0
    for ev in events:
        if ev["event"] == "utterance":
            persona = catalog.persona(ev["persona"])
            voice = espeak_voice_for(persona.voice, persona.id)
        elif ev["event"] == "human":
            voice = HUMAN_VOICE
        else:
            continue
        total += _seconds(synthesize_pcm(ev["text"], voice)[1])
        lines += 1
    return total + PAUSE_S * (lines - 1)


def _read_wav(path: Path) -> tuple[wave._wave_params, array]:
    with wave.open(str(path), "rb") as w:
        params = w.getparams()
        samples = array("h", w.readframes(w.getnframes()))
    return params, samples


def test_audio_writes_one_wav_of_every_utterance_in_turn_order(run, tmp_path):
    out = tmp_path / "out.wav"
    proc = run("dispatch_checkin", "--audio", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    transcript = next(ln for ln in lines if ln.startswith("transcript: "))
    events = read_transcript(Path(transcript.removeprefix("transcript: ")))
    assert sum(e["event"] == "utterance" for e in events) == 5

    params, samples = _read_wav(out)
    assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, 22050)
    seconds = params.nframes / params.framerate
    expected = _expected_seconds(events)
    assert abs(seconds - expected) <= 0.1 * expected, (seconds, expected)
    assert lines[-1] == f"audio: {out} ({seconds:.1f} s)"
    # speech, not silence: loud peaks and a real average level
    assert max(abs(s) for s in samples) > 5000
    assert sum(abs(s) for s in samples) / len(samples) > 300


def test_audio_auto_writes_beside_the_transcripts_named_after_the_room(run, transcripts):
    proc = run("dispatch_checkin", "--audio", "auto", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    wav = transcripts / "sim-dispatch_checkin.wav"
    assert doc["audio"]["path"] == str(wav)
    params, _ = _read_wav(wav)
    assert doc["audio"]["seconds"] == pytest.approx(params.nframes / params.framerate)
    assert params.nframes > 10 * SAMPLE_RATE  # five lines of speech


def test_humans_speak_in_a_voice_of_their_own_in_turn_order(tmp_path):
    catalog = load_catalog()
    tim, chris = catalog.persona("tim"), catalog.persona("chris")
    events: list[dict[str, Any]] = [
        {"event": "room_started", "room": "r", "cast": []},
        {"event": "utterance", "persona": "tim", "name": "Tim", "role": "x", "text": "Hello."},
        {"event": "tool_call", "tool": "t", "args": {}, "output": "", "is_error": False},
        {"event": "human", "identity": "caller", "text": "Hi there."},
        {"event": "utterance", "persona": "chris", "name": "Chris", "role": "y", "text": "Yes."},
    ]
    audio = render_conversation(events, catalog, tmp_path / "c.wav")

    # each line as its own voice says it (eSpeak's rate differs per voice, so the lengths
    # tell the voices apart: the caller's line is slower than any persona would say it)
    said = [
        synthesize_pcm("Hello.", espeak_voice_for(tim.voice, tim.id))[1],
        synthesize_pcm("Hi there.", HUMAN_VOICE)[1],
        synthesize_pcm("Yes.", espeak_voice_for(chris.voice, chris.id))[1],
    ]
    assert len(said[1]) != len(synthesize_pcm("Hi there.", espeak_voice_for(tim.voice))[1])
    gap = b"\0" * (round(PAUSE_S * SAMPLE_RATE) * 2)
    with wave.open(str(audio.path), "rb") as w:
        pcm = w.readframes(w.getnframes())
    at = 0
    for i, line in enumerate(said):
        if i:
            assert pcm[at : at + len(gap)] == gap  # the pause between two lines
            at += len(gap)
        segment = pcm[at : at + len(line)]
        assert len(segment) == len(line) and segment.strip(b"\0"), i
        at += len(line)
    assert at == len(pcm)
    expected = gap.join(said)
    assert audio.seconds == pytest.approx(_seconds(expected))
    personas = {espeak_voice_for(p.voice, p.id) for p in catalog.personas}
    assert HUMAN_VOICE not in personas


def test_auto_path_is_the_room_name_made_safe(tmp_path):
    assert auto_path(tmp_path, "sim-x") == tmp_path / "sim-x.wav"
    assert auto_path(tmp_path, "../a b/c") == tmp_path / "a-b-c.wav"


@pytest.mark.parametrize("where", ["under_a_file", "a_directory", "missing_dir"])
def test_unwritable_audio_path_exits_2_with_one_line_before_the_room(run, tmp_path, where):
    (tmp_path / "plain").write_text("not a directory")
    path = {
        "under_a_file": tmp_path / "plain" / "out.wav",
        "a_directory": tmp_path,
        "missing_dir": tmp_path / "nope" / "out.wav",
    }[where]
    proc = run("dispatch_checkin", "--audio", str(path))
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"workers.simulate: --audio {path}: "), err
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""  # refused before the room: nothing ran, nothing written
    assert not (tmp_path / "transcripts").exists()
