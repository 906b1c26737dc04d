"""Who speaks next: the turn policies and addressing, as pure functions.

The floor keeps the state (who holds the floor, whom they were answering, who stands by);
these functions only decide, from persona ids and names, so they are tested directly
(tests/test_turns.py) with no sessions.

Policies (the scenario's `rules.turn_policy`):
- `alternate` / `round_robin`: the active personas in seat order, one after the other.
- `moderated`: everyone answers to the lead; the lead turns to the humans if any are
  present, else to the first other persona.
- `addressed`: whoever the speaker addresses by name; else the humans, if any are present;
  else whom the speaker was answering; else the lead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Final

# "The floor turns to the humans." Not a valid persona id (ids match ^[a-z0-9][a-z0-9_-]*$).
HUMANS: Final = "@humans"

_WORD = re.compile(r"[a-z0-9']+")
_GREETING = r"(?:hey|hi|hello|thanks|thank you|ok|okay|so|right|great)"


def repeat_key(text: str) -> str:
    """`text` as the loop guard compares it: lower-case words only."""
    return " ".join(_WORD.findall(text.lower()))


@lru_cache(maxsize=1024)
def _mention(name: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(name)}\b", re.IGNORECASE)


@lru_cache(maxsize=1024)
def _vocative(name: str) -> re.Pattern[str]:
    n = re.escape(name)
    return re.compile(
        rf"(?:^|[.!?]\s+|\b{_GREETING}\s+){n}\s*[,!?:]|,\s*{n}\s*(?:[.!?]|$)", re.IGNORECASE
    )


def addressed(text: str, names: Mapping[str, str], *, vocative_only: bool = False) -> str | None:
    """The id of the persona (of `names`: id -> name) addressed first in `text`, if any.

    A persona addresses someone by vocative use ("Chris, where are you?", "Will do, Tim."); a
    mere mention ("Alex tells me...") does not pass the floor (`vocative_only`). A human naming
    a persona anywhere is enough."""
    found: list[tuple[int, str]] = []
    for persona_id, name in names.items():
        pattern = _vocative(name) if vocative_only else _mention(name)
        m = pattern.search(text)
        if m is not None:
            found.append((m.start(), persona_id))
    return min(found, key=lambda f: f[0])[1] if found else None


def answers_human(text: str, names: Mapping[str, str], *, holder: str | None, lead: str) -> str:
    """Who answers a human's line: a persona they named (of the active `names`), else whoever
    holds the floor (when active), else the lead."""
    named = addressed(text, names)
    if named is not None:
        return named
    return holder if holder is not None and holder in names else lead


def next_speaker(
    policy: str,
    *,
    speaker: str,
    text: str,
    active: Sequence[str],
    names: Mapping[str, str],
    lead: str,
    answering: str | None,
    humans_present: bool,
) -> str:
    """Who speaks after `speaker` said `text`: a persona id of `active` (seat order; `names`
    maps each id to its name) or HUMANS. `answering` is whom the speaker was answering."""
    others = [p for p in active if p != speaker]
    if not others:  # nobody else on the floor: whoever speaks next is human
        return HUMANS
    if policy in ("alternate", "round_robin"):
        if speaker not in active:
            return active[0]
        return active[(active.index(speaker) + 1) % len(active)]
    if policy == "moderated":
        if speaker != lead:
            return lead
        return HUMANS if humans_present else others[0]
    if policy != "addressed":
        raise ValueError(f"unknown turn policy {policy!r}")
    named = addressed(text, {p: names[p] for p in others}, vocative_only=True)
    if named is not None:
        return named
    if humans_present:
        return HUMANS
    if answering is not None and answering in others:
        return answering
    return lead if lead in others else others[0]
