"""An offline TTS: eSpeak NG speech, in-process, with no key and no network.

The `espeakng-loader` wheel ships `libespeak-ng.so` and its `espeak-ng-data` (voice variants
under `voices/!v/`), so no system package is needed. The library is driven through ctypes in
synchronous mode: `espeak_Synth` returns once the whole text is spoken, and the synth callback
receives the int16 samples as they are made (every ~50 ms of audio), so the first frame reaches
the session long before the line is finished.

eSpeak is a process-global C library (one voice, one set of parameters, one callback), and not
thread-safe: every synthesis in the process goes through one lock, and the async path runs on
one dedicated worker thread, never on the event loop.

Each persona gets its own stable voice from its catalog `voice` (see `espeak_voice_for`).
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from livekit.agents import tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions

from config.logging import get_logger

log = get_logger(__name__)

SAMPLE_RATE = 22050  # what espeak_Initialize reports for its built-in voices
NUM_CHANNELS = 1
LANGUAGE = "en-us"

# espeak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_BUFFER_MS = 50  # audio per synth callback: how early the first frame can leave
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3
_EE_OK = 0
_SEED = 1
# What one utterance may speak, about 70 s of audio (3 MB): 100,000 characters once became
# 244 MB of audio.
MAX_UTTERANCE_CHARS = 1_000

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(frozen=True)
class EspeakVoice:
    """One eSpeak NG voice: a variant of `voices/!v/` plus pitch (0-100) and rate (words/min)."""

    variant: str
    pitch: int = 50
    rate: int = 175
    language: str = LANGUAGE

    @property
    def name(self) -> str:
        """eSpeak's name for this language and variant, e.g. `en-us+m3`."""
        return f"{self.language}+{self.variant}"


# The catalog names OpenAI voices; each gets an eSpeak variant and pitch of its own, spread
# so that any two sound different. Measured fundamental of one line, with each catalog
# persona's id as the key: onyx 73 Hz, echo 83, verse 89, fable 99, ash 106, ballad 111,
# alloy 123; sage 172, coral 185, nova 237, shimmer 251; HUMAN_VOICE 172.
_NAMED: dict[str, EspeakVoice] = {
    "alloy": EspeakVoice("m3", pitch=70, rate=175),
    "echo": EspeakVoice("m1", pitch=25, rate=170),
    "ash": EspeakVoice("m7", pitch=45, rate=180),
    "ballad": EspeakVoice("m5", pitch=60, rate=165),
    "onyx": EspeakVoice("m2", pitch=20, rate=165),
    "fable": EspeakVoice("m6", pitch=50, rate=170),
    "verse": EspeakVoice("m4", pitch=40, rate=180),
    "coral": EspeakVoice("f2", pitch=50, rate=175),
    "shimmer": EspeakVoice("f4", pitch=80, rate=170),
    "nova": EspeakVoice("f1", pitch=80, rate=180),
    "sage": EspeakVoice("f3", pitch=25, rate=165),
}
# Voice names outside the table still get a stable voice: a variant and pitch from a hash.
_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
# The scripted humans of a scenario: of 18 variant/pitch/rate settings tried, the one
# pocketsphinx understood best free-form (79% of the words of nine lines; alloy 61%, echo 67%).
HUMAN_VOICE = EspeakVoice("f5", pitch=35, rate=150)


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def espeak_voice_for(voice: str, key: str = "") -> EspeakVoice:
    """A persona's stable eSpeak voice from its catalog `voice` (e.g. "alloy") and its id.

    The voice name picks the variant and base pitch (a table for the OpenAI names, a hash for
    any other); `key` (the persona id) nudges pitch by up to +-3 and rate by up to +-6, so two
    personas that share a voice name still differ a little. Same inputs, same voice, always."""
    name = voice.strip().lower()
    base = _NAMED.get(name)
    if base is None:
        h = _digest(name)
        base = EspeakVoice(_VARIANTS[h % len(_VARIANTS)], pitch=25 + (h >> 8) % 51)
    if not key:
        return base
    k = _digest(f"{name}/{key}")
    pitch = min(100, max(0, base.pitch + k % 7 - 3))
    rate = base.rate + (k >> 8) % 13 - 6
    return EspeakVoice(base.variant, pitch=pitch, rate=rate, language=base.language)


class _Engine:
    """The process's one eSpeak NG instance. Every call holds `lock`."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lock = threading.Lock()
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByFile.argtypes = [ctypes.c_char_p]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self._data = Path(espeakng_loader.get_data_path())
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, bytes(self._data), 0)
        if rate != SAMPLE_RATE:
            raise RuntimeError(
                f"agents/espeak_tts.py: espeak_Initialize({self._data}) returned {rate}, "
                f"expected {SAMPLE_RATE} Hz; reinstall the espeakng-loader package"
            )
        self._lib = lib
        # shared by every process of this user (job processes may exit without cleanup):
        # files are named by their content, written atomically, never removed
        self._voices_dir = Path(tempfile.gettempdir()) / f"espeak-voices-{os.getuid()}"
        self._voices_dir.mkdir(mode=0o700, exist_ok=True)
        self._voice_files: dict[tuple[str, str], Path] = {}
        # the C library keeps only a pointer: this object must live as long as the engine
        self._callback = _SynthCallback(self._on_samples)
        lib.espeak_SetSynthCallback(self._callback)
        self._sink: Callable[[bytes], bool] | None = None
        self._voice: EspeakVoice | None = None

    def _on_samples(self, wav: ctypes._Pointer[ctypes.c_short], n: int, _events: int) -> int:
        """Called by espeak_Synth on the synthesising thread; returns 1 to abort."""
        if not wav or n <= 0 or self._sink is None:
            return 0
        return 0 if self._sink(ctypes.string_at(wav, n * 2)) else 1

    def _voice_file(self, voice: EspeakVoice) -> Path:
        """`language+variant` as one voice file with flutter off.

        eSpeak's flutter (a pitch wobble) runs on a counter that never resets, so with it the
        same line never sounds the same twice; without it a line's audio is reproducible."""
        key = (voice.language, voice.variant)
        if key in self._voice_files:
            return self._voice_files[key]
        variant = self._data / "voices" / "!v" / voice.variant
        if not variant.is_file():
            raise ValueError(
                f"agents/espeak_tts.py: eSpeak NG has no voice variant {voice.variant!r} "
                f"(no {variant}); use one listed there, e.g. m3 or f2"
            )
        lines = [f"name {voice.language}_{voice.variant}", f"language {voice.language}"]
        base = self._language_file(voice.language)
        lines += [ln for ln in base if not ln.startswith(("name", "maintainer", "status"))]
        lines += [
            ln
            for ln in variant.read_text(encoding="utf-8").splitlines()
            if not ln.strip().startswith(("name", "language", "flutter"))
        ]
        text = "\n".join([*lines, "flutter 0", ""])
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        path = self._voices_dir / f"{voice.language}_{voice.variant}_{digest}"
        if not path.exists():
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, path)
        self._voice_files[key] = path
        return path

    def _language_file(self, language: str) -> list[str]:
        for found in (self._data / "lang").rglob("*"):
            if found.is_file() and found.name.lower() == language.lower():
                return found.read_text(encoding="utf-8").splitlines()
        raise ValueError(
            f"agents/espeak_tts.py: eSpeak NG has no language {language!r} under "
            f"{self._data / 'lang'}; use e.g. en-us"
        )

    def _set_voice(self, voice: EspeakVoice) -> None:
        if voice == self._voice:
            return
        path = self._voice_file(voice)
        if self._lib.espeak_SetVoiceByFile(bytes(path)) != _EE_OK:
            raise ValueError(f"agents/espeak_tts.py: eSpeak NG refused the voice file {path}")
        self._lib.espeak_SetParameter(_PITCH, voice.pitch, 0)
        self._lib.espeak_SetParameter(_RATE, voice.rate, 0)
        self._voice = voice

    def synth(self, text: str, voice: EspeakVoice, sink: Callable[[bytes], bool]) -> None:
        """Speak `text`, handing each chunk of int16 PCM to `sink` as it is made; `sink`
        returns False to stop early. Blocks the calling thread until done."""
        data = text.encode("utf-8") + b"\0"
        with self.lock:
            self._set_voice(voice)
            self._lib.espeak_ng_SetRandSeed(_SEED)  # the breath noise, the same every time
            self._sink = sink
            try:
                err = self._lib.espeak_Synth(
                    data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
                )
            finally:
                self._sink = None  # nothing of this utterance may reach the next one
        if err != _EE_OK:
            raise RuntimeError(f"agents/espeak_tts.py: espeak_Synth failed (error {err})")


_engine: _Engine | None = None
_engine_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def _get_engine() -> _Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Engine()
        return _engine


def _get_executor() -> ThreadPoolExecutor:
    # one thread: eSpeak's state is process-global, so syntheses run one after another
    global _executor
    with _engine_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")
        return _executor


def speakable(text: str) -> str:
    """`text` as one utterance may speak it: lone surrogates (which UTF-8 cannot encode) and NULs
    (which end a C string) dropped, a surrogate pair joined into its character, and at most
    `MAX_UTTERANCE_CHARS` kept, cut at the last sentence end, else the last space, before the
    limit. The rest is not spoken (a reply reaches the TTS a sentence at a time, so only one
    sentence longer than the limit loses anything); the cut is logged."""
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "ignore").replace("\0", "")
    if len(text) <= MAX_UTTERANCE_CHARS:
        return text
    head = text[:MAX_UTTERANCE_CHARS]
    ends = [head.rfind(mark) for mark in (". ", "! ", "? ", "\n")]
    cut = max(ends) + 1 if max(ends) > MAX_UTTERANCE_CHARS // 2 else head.rfind(" ")
    kept = head[:cut] if cut > 0 else head
    log.warning("tts_text_cut", kept_chars=len(kept), dropped_chars=len(text) - len(kept))
    return kept


def _speak(text: str, voice: EspeakVoice, sink: Callable[[bytes], bool]) -> None:
    _get_engine().synth(speakable(text), voice, sink)


def synthesize_pcm(text: str, voice: EspeakVoice) -> tuple[int, bytes]:
    """Speak `text` at once (blocking): (sample rate, mono int16 little-endian PCM).

    For offline rendering (WAV files); inside an event loop use `EspeakTTS` instead."""
    if not text.strip():
        return SAMPLE_RATE, b""
    chunks: list[bytes] = []

    def keep(chunk: bytes) -> bool:
        chunks.append(chunk)
        return True

    _speak(text, voice, keep)
    return SAMPLE_RATE, b"".join(chunks)


class EspeakTTS(tts.TTS):
    """A livekit `tts.TTS` speaking with eSpeak NG: 22050 Hz mono int16, non-streaming (the
    session wraps it in `tts.StreamAdapter`, which splits the reply into sentences)."""

    def __init__(self, *, voice: EspeakVoice | str = "alloy", key: str = "") -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=SAMPLE_RATE,
            num_channels=NUM_CHANNELS,
        )
        self._voice = voice if isinstance(voice, EspeakVoice) else espeak_voice_for(voice, key)

    @property
    def voice(self) -> EspeakVoice:
        return self._voice

    @property
    def model(self) -> str:
        return self._voice.name

    @property
    def provider(self) -> str:
        return "espeak-ng"

    def prewarm(self) -> None:
        """Load the library on the eSpeak thread (livekit calls this on the event loop)."""
        _get_executor().submit(_get_engine)

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> EspeakChunkedStream:
        return EspeakChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class EspeakChunkedStream(tts.ChunkedStream):
    """One line: synthesised on the eSpeak thread, each chunk pushed as soon as it is made."""

    def __init__(self, *, tts: EspeakTTS, input_text: str, conn_options: APIConnectOptions):
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._voice = tts.voice

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=SAMPLE_RATE,
            num_channels=NUM_CHANNELS,
            mime_type="audio/pcm",
        )
        if not self._input_text.strip():
            return  # nothing to say (livekit expects no audio for blank text)
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def forward(chunk: bytes) -> bool:
            # on the eSpeak thread: the emitter belongs to the loop, so hand the chunk over
            if stop.is_set():
                return False
            try:
                loop.call_soon_threadsafe(output_emitter.push, chunk)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return False
            return True

        try:
            await loop.run_in_executor(
                _get_executor(), _speak, self._input_text, self._voice, forward
            )
        finally:
            stop.set()  # cancelled (an interruption): abort the synthesis at its next chunk
        output_emitter.flush()
