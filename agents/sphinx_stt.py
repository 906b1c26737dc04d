"""An offline STT: pocketsphinx speech recognition, in-process, with no key and no network.

The `pocketsphinx` wheel ships the en-US acoustic model, dictionary and language model. Given
the process's VAD, the STT streams (`SphinxStream`): the VAD finds the speech and each piece of
it goes through the decoders as it arrives, so the final text is ready when the speech ends
(bench.offline_voice, a real-time caller, load 2-4: the final 50 ms p50, 137 ms p95 after the
VAD's end of speech, where decoding the whole utterance then took 1.6 s / 2.4 s).
Without a VAD it recognises one utterance at a time (`recognize`).

Free-form decoding of synthetic (eSpeak) speech is poor: measured here, 61-79% of the words
depending on the voice. When the lines a human is expected to say are known (a scenario's
`human_lines`), the STT also decodes with a finite-state grammar of those lines (its size linear
in their words) and keeps that result (the expected line, as written) when it covers about as
much speech as the free-form decoding of the same audio (see `_grammar_holds`); otherwise, or
with no phrases, the free-form text is the transcript.

pocketsphinx decoders are not thread-safe: the process shares one pair (free-form ~90 MB;
grammar ~27 MB, only once a scenario gives lines; each built on first use) behind one lock,
which an utterance holds from its start to its end; each phrase set is one more search on the
grammar decoder. Decoding runs in a worker thread, never on the event loop, and in 50 ms
chunks: pocketsphinx holds the GIL inside each call, so one long call would stall the loop
anyway.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from livekit import rtc
from livekit.agents import stt, utils
from livekit.agents.language import LanguageCode
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)
from livekit.agents.utils import AudioBuffer
from livekit.agents.vad import VAD, VADEventType, VADStream

from config.logging import get_logger
from config.scenario import spoken_clauses

log = get_logger(__name__)

SAMPLE_RATE = 16_000  # the shipped acoustic model's rate
_PAD_S = 0.3  # silence around an utterance: a grammar path must reach its last word
_MIN_SPEECH_S = 0.1
_SILENT_PEAK = 64  # int16 peak below which an utterance is taken as silence
_MAX_GRAMMARS = 16  # grammar searches kept on the shared decoder (oldest dropped)
# Word transitions of one phrase grammar, at most: the largest scenario config.scenario
# accepts is well under it; past it, further lines are left out.
_MAX_GRAMMAR_ARCS = 20_000
_DITHER = 10.0  # std of the noise added: eSpeak's exact-zero pauses break the features
# A grammar result is kept when its words span at least this share of the frames the
# free-form words span (measured on eSpeak speech: expected lines 0.96-1.9, other lines
# forced onto a shorter expected line 0.1-0.75, with a few exceptions noted in the tests).
_MIN_COVERAGE = 0.85
_CMN_SEARCH = "_cmn"
_CMN_JSGF = "#JSGF V1.0;\ngrammar cmn;\npublic <u> = a;\n"
_CHUNK_BYTES = 2 * SAMPLE_RATE // 20  # 50 ms of audio per decoder call (~40 ms of CPU at most)
# The ear keeps up with real time whatever it hears, given a core: the search keeps at most this
# many HMMs active per frame (pocketsphinx's default 30,000 let white noise cost 0.4 s of CPU
# per second; at 5,000 the measured eSpeak lines decode the same), an utterance is cut to
# _MAX_UTTERANCE_S, and all passes over one utterance stop when their CPU budget
# (_REALTIME_SHARE of its duration, at least _MIN_BUDGET_S) is spent. CPU, not wall time: on
# a loaded machine wall time is CPU time over the share of a core the process gets, and a
# wall-clock cut there would cut every line, hostile or not.
_MAX_HMM_PER_FRAME = 5_000
_MAX_UTTERANCE_S = 30.0
_REALTIME_SHARE = 0.8
_MIN_BUDGET_S = 0.5

Source = Literal["grammar", "free_form", "none"]


# ---- text to the words pocketsphinx knows ---------------------------------------------------

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((1_000_000_000, "billion"), (1_000_000, "million"), (1_000, "thousand"))
_ORDINALS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def _below_1000(n: int, *, with_and: bool) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
        if n and with_and:
            words.append("and")
    if n >= 20:
        words.append(_TENS[n // 10])
        n %= 10
        if n:
            words.append(_ONES[n])
    elif n or not words:
        words.append(_ONES[n])
    return words


def number_words(n: int, *, with_and: bool = False) -> list[str]:
    """A cardinal as eSpeak en-us reads it: 88123 -> eighty eight thousand one hundred twenty
    three (`with_and` gives the British "... one hundred and twenty three")."""
    if n < 1000:
        return _below_1000(n, with_and=with_and)
    words: list[str] = []
    for value, name in _SCALES:
        if n >= value:
            words += [*number_words(n // value, with_and=with_and), name]
            n %= value
    if n:
        words += _below_1000(n, with_and=with_and)
    return words


def _ordinal(words: list[str]) -> list[str]:
    last = words[-1]
    if last in _ORDINALS:
        end = _ORDINALS[last]
    elif last.endswith("y"):
        end = last[:-1] + "ieth"
    else:
        end = last + "th"
    return [*words[:-1], end]


_TOKEN = re.compile(r"\d+(?:st|nd|rd|th)?|[a-z]+(?:'[a-z]+)*")


def _spoken_forms(token: str) -> list[list[str]]:
    """How a token may be said: a word as itself; a number as a cardinal (with and without
    "and") and, from three digits on, digit by digit (how people read order numbers)."""
    m = re.fullmatch(r"(\d+)(st|nd|rd|th)?", token)
    if not m:
        return [[token]]
    digits, suffix = m.groups()
    if len(digits) > 12:
        return [[_ONES[int(d)] for d in digits]]
    n = int(digits)
    if suffix:
        return [_ordinal(number_words(n))]
    forms = [number_words(n)]
    with_and = number_words(n, with_and=True)
    if with_and != forms[0]:
        forms.append(with_and)
    if len(digits) >= 3:
        forms.append([_ONES[int(d)] for d in digits])
    return forms


def normalize_text(text: str) -> list[str]:
    """Lowercase words, numbers spelled out (first spoken form), punctuation dropped."""
    return [w for token in _tokens(text) for w in _spoken_forms(token)[0]]


def _tokens(text: str) -> list[str]:
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"(\d),(\d{3})", r"\1\2", text)  # 2,000 -> 2000
    text = re.sub(r"(\d)\.(\d)", r"\1 point \2", text)
    return _TOKEN.findall(text)


# ---- a grammar of expected lines --------------------------------------------------------------


Forms = tuple[tuple[str, ...], ...]  # the ways one token may be said


def _clause_tokens(clause: str, known: Callable[[str], bool]) -> list[Forms]:
    """A clause as a sequence of tokens, each with its spoken forms; words missing from the
    dictionary are left out (the grammar cannot name them; the free-form check then decides)."""
    out: list[Forms] = []
    for token in _tokens(clause):
        forms: list[tuple[str, ...]] = []
        for form in _spoken_forms(token):
            kept = tuple(w for w in form if known(w))
            if kept and kept not in forms:
                forms.append(kept)
        if forms:
            out.append(tuple(forms))
    return out


@dataclass(frozen=True)
class _Line:
    clauses: tuple[str, ...]  # as written
    tokens: tuple[tuple[Forms, ...], ...]  # per clause

    def run_text(self, words: Sequence[str]) -> str | None:
        """The clauses i..j whose spoken forms are exactly `words`, as written, or None."""
        for i in range(len(self.clauses)):
            j = self._match_from(words, 0, i)
            if j is not None:
                return " ".join(self.clauses[i:j])
        return None

    def _match_from(self, words: Sequence[str], pos: int, clause: int) -> int | None:
        """The end clause of a run starting at `clause` that spells words[pos:], or None."""
        if clause >= len(self.clauses):
            return None
        for end in _clause_ends(self.tokens[clause], words, pos):
            if end == len(words):
                return clause + 1
            j = self._match_from(words, end, clause + 1)
            if j is not None:
                return j
        return None


def _clause_ends(tokens: Sequence[Forms], words: Sequence[str], pos: int) -> list[int]:
    """Every position where one reading of `tokens`, starting at words[pos], ends."""
    ends = [pos]
    for forms in tokens:
        ends = sorted(
            {e + len(f) for e in ends for f in forms if tuple(words[e : e + len(f)]) == f}
        )
        if not ends:
            break
    return ends


@dataclass(frozen=True)
class PhraseGrammar:
    """The word sequences a human is expected to say: every contiguous run of clauses of every
    expected line, each token in any of its spoken forms, as one finite-state grammar.

    Its size is linear in the words of the lines (a state per word, entry and exit at every
    clause boundary), never a list of runs times variants: a line of many numbers or many
    clauses costs what its words cost."""

    lines: tuple[_Line, ...]
    key: str
    arcs: int  # word transitions: what the search and its memory grow with

    @classmethod
    def build(cls, phrases: Sequence[str], known: Callable[[str], bool]) -> PhraseGrammar | None:
        """None when no phrase has a word the dictionary (`known`) has. Lines past
        `_MAX_GRAMMAR_ARCS` word transitions are left out (a validated scenario never gets
        there; see config.scenario)."""
        lines: list[_Line] = []
        arcs = 0
        for phrase in phrases:
            clauses = spoken_clauses(phrase)
            tokens = tuple(tuple(_clause_tokens(c, known)) for c in clauses)
            size = sum(len(f) for clause in tokens for forms in clause for f in forms)
            if not size:
                continue
            if arcs + size > _MAX_GRAMMAR_ARCS:
                break
            arcs += size
            lines.append(_Line(tuple(clauses), tokens))
        if not lines:
            return None
        digest = hashlib.sha256(repr([ln.tokens for ln in lines]).encode()).hexdigest()[:16]
        return cls(tuple(lines), "g" + digest, arcs)

    def transitions(self) -> list[tuple[Any, ...]]:
        """(from, to, probability[, word]) for `Decoder.create_fsg`: state 0 starts, state 1
        ends; a transition without a word is a null one. A run may start at any clause and
        end after any clause; within a line it goes on clause after clause."""
        out: list[tuple[Any, ...]] = []
        entries = sum(len(line.tokens) for line in self.lines)
        state = itertools.count(2)
        for line in self.lines:
            previous_end: int | None = None
            for clause in line.tokens:
                start = next(state)
                out.append((0, start, 1.0 / entries))
                if previous_end is not None:
                    out.append((previous_end, start, 0.5))
                at = start
                for forms in clause:
                    after = next(state)
                    for form in forms:
                        s = at
                        for k, word in enumerate(form):
                            t = after if k == len(form) - 1 else next(state)
                            out.append((s, t, 1.0 / len(forms) if k == 0 else 1.0, word))
                            s = t
                    at = after
                out.append((at, 1, 0.5))
                previous_end = at
        return out

    def text_of(self, words: Sequence[str]) -> str | None:
        """The expected text these decoded words stand for, or None if they are not a run."""
        for line in self.lines:
            text = line.run_text(words)
            if text is not None:
                return text
        return None


# ---- decoding ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transcript:
    """What was heard. `confidence` is coarse, by source: 0.9 for an expected line the
    grammar found, 0.5 for free-form text, 0.0 for nothing."""

    text: str
    source: Source
    confidence: float


@dataclass(frozen=True)
class _Hyp:
    words: tuple[str, ...]
    word_frames: int  # frames inside real words (not silence or fillers)


def _is_filler(word: str) -> bool:
    return word.startswith(("<", "[", "+")) or word in ("", "sil")


class SphinxRecognizer:
    """Two pocketsphinx decoders, each built on first use, used under one lock: the free-form
    one (the language model, ~90 MB) and the grammar one (no language model, ~27 MB; one search
    per phrase grammar; built with the first grammar), so that one utterance can stream
    through both searches at once.
    Thread-safe; blocking: call it from a worker thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._decoder: Any = None  # pocketsphinx.Decoder (untyped)
        self._grammar_decoder: Any = None
        self._grammars: dict[str, PhraseGrammar] = {}

    @property
    def ready(self) -> bool:
        """Whether the free-form decoder is built (the first use takes ~0.3 s and ~90 MB)."""
        return self._decoder is not None

    def load(self) -> None:
        """Build the free-form decoder now (blocking, ~0.3 s, holds the GIL): in a worker's
        setup_fnc, before any room runs, rather than on a room's first utterance. The grammar
        decoder comes with the first grammar (SphinxSTT.prewarm, at the session's start)."""
        with self._lock:
            self._get_decoder()

    @staticmethod
    def _options() -> dict[str, Any]:
        # fwdflat (a second pass over the whole utterance at end_utt) is one long C call
        # that holds the GIL; off, eSpeak speech decodes better too (84% vs 78% of words)
        return {
            "samprate": SAMPLE_RATE,
            "loglevel": "FATAL",
            "fwdflat": False,
            "maxhmmpf": _MAX_HMM_PER_FRAME,
        }

    def _get_decoder(self) -> Any:
        if self._decoder is None:
            from pocketsphinx import Decoder

            d = Decoder(**self._options())
            d.add_jsgf_string(_CMN_SEARCH, _CMN_JSGF)
            self._decoder = d
        return self._decoder

    def _get_grammar_decoder(self) -> Any:
        """Built with the first phrase grammar: a process whose rooms expect no lines (no
        `human_lines`, or no human at all) never holds its ~27 MB."""
        if self._grammar_decoder is None:
            from pocketsphinx import Decoder

            self._grammar_decoder = Decoder(lm=None, **self._options())
        return self._grammar_decoder

    @property
    def grammar_ready(self) -> bool:
        """Whether the grammar decoder is built (observability, tests)."""
        return self._grammar_decoder is not None

    def grammar_for(self, phrases: Sequence[str]) -> PhraseGrammar | None:
        """The grammar of `phrases`, registered as a search; None if none of their words is
        in the dictionary."""
        with self._lock:
            d = self._get_grammar_decoder()
            grammar = PhraseGrammar.build(phrases, lambda w: d.lookup_word(w) is not None)
            if grammar is not None:
                self._register(grammar)
            return grammar

    def _register(self, grammar: PhraseGrammar) -> None:
        """Under the lock: make `grammar` a search of the grammar decoder (again, if it was
        evicted)."""
        if grammar.key in self._grammars:
            return
        d = self._get_grammar_decoder()
        if len(self._grammars) >= _MAX_GRAMMARS:
            oldest = next(iter(self._grammars))
            d.remove_search(oldest)
            del self._grammars[oldest]
        fsg = d.create_fsg(grammar.key, 0, 1, grammar.transitions())
        d.add_fsg(grammar.key, fsg)
        self._grammars[grammar.key] = grammar

    def _utterance_cmn(self, pcm: bytes) -> str:
        """The cepstral mean for this utterance, from one pass with a one-word grammar (~6 ms
        of CPU per second of audio), for the chunked passes below, which cannot compute it
        over the whole utterance themselves (measured: 82% of the words free-form with it,
        61% from the model's initial mean). pocketsphinx blends in what it heard before, as
        in live use: a transcript can differ by a word or two with the decoder's history."""
        d = self._get_decoder()
        d.activate_search(_CMN_SEARCH)
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        return str(d.get_cmn(False))

    def _decode(self, pcm: bytes, search: str | None, cmn: str, deadline: float) -> _Hyp | None:
        """Decode `pcm` with `search` until it ends or this thread's CPU time reaches
        `deadline` (time.thread_time()); a pass cut short keeps what it heard so far."""
        d = self._get_decoder() if search is None else self._get_grammar_decoder()
        if search is not None:
            d.activate_search(search)
        else:
            d.activate_search(None)
        d.set_cmn(cmn)
        d.start_utt()
        for i in range(0, len(pcm), _CHUNK_BYTES):
            if time.thread_time() > deadline:
                log.warning(
                    "stt_decode_cut",
                    search=search or "free_form",
                    heard_s=round(i / (2 * SAMPLE_RATE), 2),
                )
                break
            # pocketsphinx holds the GIL inside each call: short calls let the loop run
            d.process_raw(pcm[i : i + _CHUNK_BYTES], full_utt=False)
        d.end_utt()
        return _hyp_of(d)

    def transcribe(self, pcm: bytes, grammar: PhraseGrammar | None = None) -> Transcript:
        """`pcm`: one utterance, 16 kHz mono int16. The grammar's expected line when one is
        given (from `grammar_for`) and its result holds, the free-form text otherwise."""
        started = time.thread_time()
        samples = np.frombuffer(pcm, dtype=np.int16)[: int(_MAX_UTTERANCE_S * SAMPLE_RATE)]
        if _no_speech(len(samples), _peak(samples)):
            return Transcript("", "none", 0.0)
        padded = _dithered(samples)
        budget = max(_MIN_BUDGET_S, _REALTIME_SHARE * len(samples) / SAMPLE_RATE)
        with self._lock:
            cmn = self._utterance_cmn(padded)
            by_grammar = None
            if grammar is not None:
                self._register(grammar)
                # half of what is left for each search: the free-form check needs its pass too
                half = (started + budget - time.thread_time()) / 2
                by_grammar = self._decode(padded, grammar.key, cmn, time.thread_time() + half)
            free = self._decode(padded, None, cmn, started + budget)
        return _chosen(grammar, by_grammar, free)

    def streaming(self, grammar: PhraseGrammar | None) -> StreamingUtterance:
        """One utterance to decode as its audio arrives (see StreamingUtterance)."""
        return StreamingUtterance(self, grammar)


class StreamingUtterance:
    """One utterance decoded while it is spoken: each piece of audio goes through the
    free-form search and the grammar search as it arrives, so at the end of speech only the
    searches' ends are left (a few ms), not the whole utterance.

    Holds the recognizer's lock from `start` to `finish`/`abort`: the process's decoders serve
    one utterance at a time (another room's waits). Bounded like `transcribe`: at most
    _MAX_UTTERANCE_S of audio, and once decoding has cost more CPU than the budget for the
    audio so far, the rest is dropped (logged once). Blocking; call every method from
    one worker thread, in order."""

    def __init__(self, recognizer: SphinxRecognizer, grammar: PhraseGrammar | None) -> None:
        self._recognizer = recognizer
        self._grammar = grammar
        self._decoders: list[Any] = []
        self._samples = 0
        self._peak = 0
        self._busy_s = 0.0  # CPU time spent decoding this utterance
        self._cut = False
        self._rng = np.random.default_rng(0)

    def start(self) -> None:
        r = self._recognizer
        r._lock.acquire()
        try:
            free = r._get_decoder()
            free.activate_search(None)
            self._decoders = [free]
            if self._grammar is not None:
                r._register(self._grammar)
                g = r._get_grammar_decoder()
                g.activate_search(self._grammar.key)
                g.set_cmn(str(free.get_cmn(False)))  # the mean the free decoder has learnt
                self._decoders.append(g)
            for d in self._decoders:
                d.start_utt()
        except BaseException:
            r._lock.release()
            raise
        self._feed(np.zeros(int(_PAD_S * SAMPLE_RATE), dtype=np.int16))

    def feed(self, pcm: bytes) -> None:
        """16 kHz mono int16 audio, the next piece of the utterance."""
        self._feed(np.frombuffer(pcm, dtype=np.int16))

    def _feed(self, samples: np.ndarray) -> None:
        room = int(_MAX_UTTERANCE_S * SAMPLE_RATE) - self._samples
        samples = samples[: max(0, room)]
        if not samples.size or self._cut:
            return
        heard_s = self._samples / SAMPLE_RATE
        if self._busy_s > max(_MIN_BUDGET_S, _REALTIME_SHARE * heard_s):
            self._cut = True
            log.warning("stt_decode_cut", search="streaming", heard_s=round(heard_s, 2))
            return
        started = time.thread_time()
        self._samples += len(samples)
        self._peak = max(self._peak, _peak(samples))
        x = samples.astype(np.float64) + self._rng.standard_normal(len(samples)) * _DITHER
        pcm = np.clip(np.rint(x), -32768, 32767).astype(np.int16).tobytes()
        for i in range(0, len(pcm), _CHUNK_BYTES):
            for d in self._decoders:
                # pocketsphinx holds the GIL inside each call: short calls let the loop run
                d.process_raw(pcm[i : i + _CHUNK_BYTES], full_utt=False)
        self._busy_s += time.thread_time() - started

    def finish(self) -> Transcript:
        """End the utterance: its transcript, as `transcribe` would choose it. No silence is
        added after it: the VAD's own end-of-speech silence went through the decoders already."""
        try:
            for d in self._decoders:
                d.end_utt()
            hyps = [_hyp_of(d) for d in self._decoders]
        finally:
            self._decoders = []
            self._recognizer._lock.release()
        speech = self._samples - int(_PAD_S * SAMPLE_RATE)
        if _no_speech(speech, self._peak):
            return Transcript("", "none", 0.0)
        return _chosen(self._grammar, hyps[1] if len(hyps) > 1 else None, hyps[0])

    def abort(self) -> None:
        """Drop the utterance (the stream closed mid-speech)."""
        if not self._decoders:
            return
        try:
            for d in self._decoders:
                d.end_utt()
        finally:
            self._decoders = []
            self._recognizer._lock.release()


def _peak(samples: np.ndarray) -> int:
    return int(np.abs(samples.astype(np.int32)).max()) if samples.size else 0


def _no_speech(samples: int, peak: int) -> bool:
    return samples < _MIN_SPEECH_S * SAMPLE_RATE or peak < _SILENT_PEAK


def _hyp_of(d: Any) -> _Hyp | None:
    """What a decoder heard in its last utterance, fillers left out."""
    hyp = d.hyp()
    if hyp is None or not hyp.hypstr.strip():
        return None
    word_frames = sum(s.end_frame - s.start_frame + 1 for s in d.seg() if not _is_filler(s.word))
    return _Hyp(tuple(hyp.hypstr.split()), word_frames)


def _chosen(
    grammar: PhraseGrammar | None, by_grammar: _Hyp | None, free: _Hyp | None
) -> Transcript:
    """The grammar's expected line when its result holds against the free-form one, the
    free-form text otherwise."""
    if grammar is not None and by_grammar is not None and _grammar_holds(by_grammar, free):
        text = grammar.text_of(by_grammar.words)
        if text is not None:
            return Transcript(text, "grammar", 0.9)
    if free is None:
        return Transcript("", "none", 0.0)
    return Transcript(" ".join(free.words), "free_form", 0.5)


def _dithered(samples: np.ndarray) -> bytes:
    """The utterance with silence around it and faint noise over it, the same every time (a
    fixed seed) so that one utterance always decodes the same way."""
    pad = np.zeros(int(_PAD_S * SAMPLE_RATE), dtype=np.float64)
    x = np.concatenate([pad, samples.astype(np.float64), pad])
    x += np.random.default_rng(0).standard_normal(len(x)) * _DITHER
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16).tobytes()


def _grammar_holds(g: _Hyp, free: _Hyp | None) -> bool:
    """A grammar always forces some expected line onto the audio; keep it only when the
    free-form decoding of the same audio finds about as much speech: an off-script utterance
    usually gets a short expected clause ("hi", "yes") with the rest left as silence."""
    return free is not None and g.word_frames >= _MIN_COVERAGE * free.word_frames


_shared: SphinxRecognizer | None = None
_shared_lock = threading.Lock()


def shared_recognizer() -> SphinxRecognizer:
    """The process's one recognizer (one ~90 MB decoder for every SphinxSTT)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SphinxRecognizer()
        return _shared


def to_pcm16k(buffer: AudioBuffer) -> bytes:
    """Any livekit audio (list of frames or one frame, any rate, any channels) as 16 kHz mono
    int16 PCM. Blocking (resampling): call it off the event loop."""
    frames = buffer if isinstance(buffer, list) else [buffer]
    frames = [f for f in frames if f.samples_per_channel > 0]
    if not frames:
        return b""
    merged = rtc.combine_audio_frames(frames)
    samples = np.frombuffer(merged.data, dtype=np.int16)
    if merged.num_channels > 1:
        samples = samples.reshape(-1, merged.num_channels).mean(axis=1).astype(np.int16)
    if merged.sample_rate == SAMPLE_RATE:
        return samples.tobytes()
    resampler = rtc.AudioResampler(
        merged.sample_rate,
        SAMPLE_RATE,
        num_channels=1,
        quality=rtc.AudioResamplerQuality.HIGH,
    )
    mono = rtc.AudioFrame(samples.tobytes(), merged.sample_rate, 1, len(samples))
    out = [*resampler.push(mono), *resampler.flush()]
    return b"".join(bytes(f.data) for f in out)


class SphinxSTT(stt.STT):
    """A livekit `stt.STT` on pocketsphinx, no interim results.

    `phrases`: the lines the speaker is expected to say (e.g. a scenario's `human_lines`);
    recognised exactly when heard, free-form decoding otherwise. With a `vad` it streams: the
    VAD finds the speech and every piece of it is decoded as it arrives (`SphinxStream`), so
    the final is ready at the end of speech; without one, livekit wraps it in its
    `stt.StreamAdapter`, which decodes each utterance after it ends."""

    def __init__(
        self,
        *,
        phrases: Sequence[str] | None = None,
        language: str = "en-US",
        recognizer: SphinxRecognizer | None = None,
        vad: VAD | None = None,
    ) -> None:
        super().__init__(
            capabilities=stt.STTCapabilities(streaming=vad is not None, interim_results=False)
        )
        self._language = language
        self._recognizer = recognizer or shared_recognizer()
        self._phrases = tuple(p for p in (phrases or ()) if p.strip())
        self._grammar: PhraseGrammar | None = None
        self._grammar_ready = not self._phrases
        self._vad = vad

    @property
    def model(self) -> str:
        return "pocketsphinx-en-us"

    @property
    def provider(self) -> str:
        return "pocketsphinx"

    @property
    def phrases(self) -> tuple[str, ...]:
        return self._phrases

    @property
    def recognizer(self) -> SphinxRecognizer:
        return self._recognizer

    def prewarm(self) -> None:
        """Start building the decoder and the grammar in the background (livekit calls this on
        the event loop when the agent starts; the first utterance waits for it if need be)."""
        threading.Thread(target=self._warm, name="sphinx-prewarm", daemon=True).start()

    def _warm(self) -> None:
        self._recognizer.load()
        self._ensure_grammar()

    def _ensure_grammar(self) -> PhraseGrammar | None:
        if not self._grammar_ready:
            self._grammar = self._recognizer.grammar_for(self._phrases)
            self._grammar_ready = True
        return self._grammar

    def recognize_pcm(self, pcm: bytes) -> Transcript:
        """Blocking: one utterance of 16 kHz mono int16 PCM (for offline use and benchmarks)."""
        return self._recognizer.transcribe(pcm, self._ensure_grammar())

    def open_utterance(self) -> StreamingUtterance:
        """Blocking: an utterance to decode as it arrives, with this STT's grammar."""
        return self._recognizer.streaming(self._ensure_grammar())

    def _recognize_blocking(self, buffer: AudioBuffer) -> Transcript:
        return self.recognize_pcm(to_pcm16k(buffer))

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        result = await asyncio.to_thread(self._recognize_blocking, buffer)
        lang = language if utils.is_given(language) else self._language
        return _final(result, lang)

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> SphinxStream:
        if self._vad is None:
            raise RuntimeError(
                "agents/sphinx_stt.py: SphinxSTT streams only with a VAD: pass vad=, or let "
                "the session wrap it in stt.StreamAdapter"
            )
        lang = language if utils.is_given(language) else self._language
        return SphinxStream(stt=self, vad=self._vad, language=lang, conn_options=conn_options)


def _final(result: Transcript, language: str) -> stt.SpeechEvent:
    data = stt.SpeechData(
        language=LanguageCode(language),
        text=result.text,
        confidence=result.confidence,
        metadata={"source": result.source},
    )
    return stt.SpeechEvent(
        type=stt.SpeechEventType.FINAL_TRANSCRIPT,
        request_id=utils.shortuuid(),
        alternatives=[data],
    )


class SphinxStream(stt.RecognizeStream):
    """The VAD's speech, decoded while it is spoken. Events as livekit's `StreamAdapter` sends
    them (start of speech; end of speech, then the final if anything was heard), but the
    decoding happens as the audio arrives, on one worker thread of this stream, never on the
    event loop: at the end of speech only the searches' ends are left."""

    def __init__(
        self, *, stt: SphinxSTT, vad: VAD, language: str, conn_options: APIConnectOptions
    ) -> None:
        # livekit resamples what is pushed to the decoder's rate; the VAD takes any rate
        super().__init__(stt=stt, conn_options=conn_options, sample_rate=SAMPLE_RATE)
        self._sphinx = stt
        self._vad = vad
        self._language = language
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sphinx-stream")
        self.decoded_s = 0.0  # speech audio through the decoders so far (observability)

    async def _run(self) -> None:
        vad_stream = self._vad.stream()

        async def forward() -> None:
            async for item in self._input_ch:
                if isinstance(item, self._FlushSentinel):
                    vad_stream.flush()
                else:
                    vad_stream.push_frame(item)
            vad_stream.end_input()

        tasks = [asyncio.create_task(forward()), asyncio.create_task(self._recognize(vad_stream))]
        try:
            await asyncio.gather(*tasks)
        finally:
            await utils.aio.cancel_and_wait(*tasks)
            await vad_stream.aclose()
            self._worker.shutdown(wait=False)

    async def _recognize(self, vad_stream: VADStream) -> None:
        loop = asyncio.get_running_loop()
        utterance: StreamingUtterance | None = None

        def on_worker(fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
            return loop.run_in_executor(self._worker, fn, *args)

        def feed(u: StreamingUtterance, frames: list[rtc.AudioFrame]) -> None:
            pcm = b"".join(bytes(f.data) for f in frames if f.samples_per_channel)
            u.feed(pcm)
            self.decoded_s += len(pcm) / (2 * SAMPLE_RATE)

        def opened() -> StreamingUtterance:
            u = self._sphinx.open_utterance()
            u.start()
            return u

        try:
            async for ev in vad_stream:
                if ev.type == VADEventType.START_OF_SPEECH:
                    self._event_ch.send_nowait(stt.SpeechEvent(stt.SpeechEventType.START_OF_SPEECH))
                    utterance = await on_worker(opened)
                    on_worker(feed, utterance, ev.frames)
                elif ev.type == VADEventType.INFERENCE_DONE and ev.speaking and utterance:
                    on_worker(feed, utterance, ev.frames)
                elif ev.type == VADEventType.END_OF_SPEECH and utterance is not None:
                    end = time.time() - ev.silence_duration - ev.inference_duration
                    self._event_ch.send_nowait(
                        stt.SpeechEvent(stt.SpeechEventType.END_OF_SPEECH, speech_end_time=end)
                    )
                    done, utterance = utterance, None
                    result = await on_worker(done.finish)  # after every feed (one thread)
                    if result.text:
                        final = _final(result, self._language)
                        final.speech_end_time = end
                        self._event_ch.send_nowait(final)
        finally:
            if utterance is not None:  # closed mid-speech: free the decoders for other rooms
                self._worker.submit(utterance.abort)
