"""What a human said, as the floor relays and records it.

Every source of a human line (speech, typed chat, a scripted caller) builds a `HumanLine`, so
the text and the identity are normalised once, here: one line, no control or format
characters, bounded, with a visible marker where it was cut.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from agents.instructions import HUMAN_CUT_MARKER

MAX_HUMAN_CHARS = 1000  # one spoken or typed turn; longer is cut, visibly
MAX_IDENTITY_CHARS = 64
_SCAN_FACTOR = 8  # never scan more than 8x the bound of a huge line: its end is cut anyway
# The most of one human line ever looked at: a reader (typed chat) stops after one more.
MAX_HUMAN_SCAN = MAX_HUMAN_CHARS * _SCAN_FACTOR
# control, format (bidi overrides, zero-width), lone surrogates, line and paragraph separators
_DROPPED = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_IDENTITY_UNSAFE = re.compile(r"[^\w.@:+-]")


def _one_line(text: str, limit: int) -> tuple[str, bool]:
    """`text` on one line: whitespace (line breaks included) collapsed to single spaces,
    control and format characters dropped; and whether it was longer than `limit`."""
    raw = text[: limit * _SCAN_FACTOR]  # MAX_HUMAN_SCAN for a human line
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in raw
        if ch.isspace() or unicodedata.category(ch) not in _DROPPED
    )
    clean = " ".join(kept.split())
    return clean, len(clean) > limit or len(raw) < len(text)


def normalise_human_text(text: str) -> str:
    """What a human said, as the floor relays and records it: one line, no control or format
    characters, at most MAX_HUMAN_CHARS with a visible marker where it was cut."""
    clean, too_long = _one_line(text, MAX_HUMAN_CHARS)
    if not too_long:
        return clean
    keep = MAX_HUMAN_CHARS - len(HUMAN_CUT_MARKER) - 1
    return f"{clean[:keep].rstrip()} {HUMAN_CUT_MARKER}"


def normalise_identity(identity: str) -> str:
    """A human's identity as the floor shows it: one token of letters, digits and ._@:+-
    (anything else becomes "_"), so it cannot close the "[human ... said]" tag."""
    clean, _ = _one_line(identity, MAX_IDENTITY_CHARS)
    return _IDENTITY_UNSAFE.sub("_", clean[:MAX_IDENTITY_CHARS]) or "human"


@dataclass(frozen=True)
class HumanLine:
    """One thing a human said. Every source (speech, typed chat, a scripted caller) builds
    one, so the text and identity are normalised here, once, whatever they came from."""

    identity: str
    text: str
    # The persona whose own model already took this line in (a realtime model hears the
    # human's audio itself): the floor relays it to everyone else, so it is there only once.
    heard_by: str = ""
    # A key the caller pressed on a phone (DTMF): the floor applies the scenario's menu.
    key: str = ""
    # When an ear heard it (wall-clock seconds): the VAD's end of speech and the final
    # transcript, for the transcript's `human` record (where a spoken answer's time goes).
    heard: Mapping[str, float] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "identity", normalise_identity(self.identity))
        object.__setattr__(self, "text", normalise_human_text(self.text))

    @classmethod
    def of(
        cls,
        identity: str,
        text: str,
        *,
        heard_by: str = "",
        key: str = "",
        heard: Mapping[str, float] | None = None,
    ) -> HumanLine | None:
        """The normalised line, or None when nothing is left to say (it is dropped)."""
        line = cls(identity, text, heard_by, key, heard)
        return line if line.text else None
