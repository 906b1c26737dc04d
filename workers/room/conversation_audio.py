"""One WAV of a finished room: every line in turn order, spoken with the offline voice.

Each persona's `utterance` is spoken in that persona's eSpeak NG voice (from its catalog
`voice` and id, as its offline TTS does in a room); each scripted `human` line in
`HUMAN_VOICE`, a voice no persona gets; a short silence between lines. Rendering runs after
the room, never during it: the floor does not wait on audio, so rooms stay text-fast unless
a WAV is asked for (`python -m workers.simulate SCENARIO --audio PATH`).
"""

from __future__ import annotations

import os
import secrets
import tempfile
import wave
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.espeak_tts import (
    HUMAN_VOICE,
    NUM_CHANNELS,
    SAMPLE_RATE,
    EspeakVoice,
    espeak_voice_for,
    synthesize_pcm,
)
from config.catalog import Catalog
from workers.room.transcript import room_file_stem

PAUSE_S = 0.4  # silence between two lines, so turns are heard as turns
_SAMPLE_WIDTH = 2  # int16


@dataclass(frozen=True)
class Line:
    """One spoken line of the conversation: who, in which voice, what."""

    speaker: str
    voice: EspeakVoice
    text: str


@dataclass(frozen=True)
class ConversationAudio:
    """The WAV written: where, and how long it plays."""

    path: Path
    seconds: float


def persona_voice(catalog: Catalog, persona_id: str) -> EspeakVoice:
    """The persona's offline voice, as `EspeakTTS(voice=persona.voice, key=persona.id)` has it.

    A persona missing from the catalog (a transcript from another catalog) still gets a
    stable voice of its own, from its id."""
    persona = catalog.persona_by_id.get(persona_id)
    voice = persona.voice if persona is not None else persona_id
    return espeak_voice_for(voice, persona_id)


def spoken_lines(events: Iterable[dict[str, Any]], catalog: Catalog) -> list[Line]:
    """The transcript's `utterance` and `human` events, in order, with the voice of each;
    every other event (tools, hand-overs, room start/end) makes no sound."""
    lines: list[Line] = []
    for ev in events:
        kind, text = ev.get("event"), str(ev.get("text") or "")
        if not text.strip():
            continue
        if kind == "utterance":
            pid = str(ev.get("persona", ""))
            lines.append(Line(pid, persona_voice(catalog, pid), text))
        elif kind == "human":
            lines.append(Line(str(ev.get("identity", "human")), HUMAN_VOICE, text))
    return lines


def _pcm_of(lines: list[Line], pause_s: float) -> Iterator[bytes]:
    silence = b"\0" * (round(pause_s * SAMPLE_RATE) * _SAMPLE_WIDTH * NUM_CHANNELS)
    for i, line in enumerate(lines):
        if i:
            yield silence
        rate, pcm = synthesize_pcm(line.text, line.voice)
        if rate != SAMPLE_RATE:  # one WAV has one rate; eSpeak NG's is fixed
            raise RuntimeError(
                f"conversation audio: eSpeak NG gave {rate} Hz, expected {SAMPLE_RATE}"
            )
        yield pcm


AUTO = "auto"  # `--audio auto`: the WAV goes beside the transcripts, named after the room


def auto_path(transcripts_dir: Path, room: str) -> Path:
    """`TRANSCRIPTS_DIR/<room>.wav`, the room name made safe as for its transcript."""
    return Path(transcripts_dir) / f"{room_file_stem(room)}.wav"


def check_writable(path: Path) -> None:
    """Raise OSError (with a message naming `path` and the fix) unless a WAV can be written
    there, without leaving anything behind; checked before the room so a bad path costs
    nothing. A real write test: os.access says yes to root on a read-only filesystem."""
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file name, e.g. {path}/room.wav")
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{parent} is not a directory; create it or choose another path")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".tmp"):
            pass
    except OSError as e:
        raise OSError(f"cannot write in {parent} ({e.strerror or e}); choose another path") from e


def render_conversation(
    events: Iterable[dict[str, Any]],
    catalog: Catalog,
    path: str | Path,
    *,
    pause_s: float = PAUSE_S,
) -> ConversationAudio:
    """Speak the room's lines into one mono int16 WAV at `path` (22050 Hz); blocking.

    Written to a temporary file beside `path` and moved into place, so a failure never
    leaves half a WAV. Raises OSError when the file cannot be written."""
    path = Path(path)
    lines = spoken_lines(events, catalog)
    # not mkstemp: its file is 0600, and the WAV should get the usual (umask) permissions
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    frames = 0
    try:
        with os.fdopen(fd, "wb") as f, wave.open(f, "wb") as w:
            w.setnchannels(NUM_CHANNELS)
            w.setsampwidth(_SAMPLE_WIDTH)
            w.setframerate(SAMPLE_RATE)
            for pcm in _pcm_of(lines, pause_s):
                w.writeframes(pcm)
                frames += len(pcm) // (_SAMPLE_WIDTH * NUM_CHANNELS)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ConversationAudio(path, frames / SAMPLE_RATE)
