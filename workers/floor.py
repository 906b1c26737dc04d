"""The floor: exactly one persona speaks at a time.

After each utterance the floor relays its text into every other persona's chat context (a line
tagged with the speaker's name and role: exact, instant, no speech-to-text), then asks only the
next speaker to reply. Who is next comes from the scenario's turn policy, a hand-over, or a
human. The floor also applies the stop rules: max turns, max duration, `end_conversation`, the
loop guard, and the humans having left.
"""

from __future__ import annotations

import asyncio
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from livekit.agents import AgentSession, llm, utils

from agents.persona import (
    HUMAN_CUT_MARKER,
    EndRequest,
    HandOverRequest,
    NextSpeakerRequest,
    format_human_line,
)
from config.catalog import Persona
from config.logging import get_logger
from config.scenario import Scenario

log = get_logger("workers.floor")

Emit = Callable[..., Any]  # emit(event_name, **fields), e.g. Transcript.write


class EndReason(StrEnum):
    MAX_TURNS = "max_turns"
    MAX_DURATION = "max_duration"
    END_CONVERSATION = "end_conversation"
    LOOP_GUARD = "loop_guard"
    HUMANS_LEFT = "humans_left"
    PERSONA_ERROR = "persona_error"
    CANCELLED = "cancelled"
    SHUTDOWN = "shutdown"
    START_FAILED = "start_failed"


@dataclass(frozen=True)
class Ending:
    reason: EndReason
    detail: str = ""
    persona: str | None = None


MAX_HUMAN_CHARS = 1000  # one spoken or typed turn; longer is cut, visibly
MAX_IDENTITY_CHARS = 64
_SCAN_FACTOR = 8  # never scan more than 8x the bound of a huge line: its end is cut anyway
# control, format (bidi overrides, zero-width), lone surrogates, line and paragraph separators
_DROPPED = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_IDENTITY_UNSAFE = re.compile(r"[^\w.@:+-]")


def _one_line(text: str, limit: int) -> tuple[str, bool]:
    """`text` on one line: whitespace (line breaks included) collapsed to single spaces,
    control and format characters dropped; and whether it was longer than `limit`."""
    raw = text[: limit * _SCAN_FACTOR]
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "identity", normalise_identity(self.identity))
        object.__setattr__(self, "text", normalise_human_text(self.text))

    @classmethod
    def of(cls, identity: str, text: str) -> HumanLine | None:
        """The normalised line, or None when nothing is left to say (it is dropped)."""
        line = cls(identity, text)
        return line if line.text else None


class Humans(Protocol):
    """The people in the room, as the floor sees them."""

    # Set by the room runner: called when the last human who joined has left.
    on_all_left: Callable[[], None] | None

    def pending(self) -> HumanLine | None:
        """A line already said and not yet answered (live rooms)."""

    def interject(self) -> HumanLine | None:
        """At the end of a round of persona turns: a simulated caller's next line, if any."""

    async def listen(self) -> HumanLine | None:
        """The floor turns to the humans: their next line, or None if they have all left."""

    def present(self) -> bool:
        """Whether anyone human can still speak."""

    def left(self) -> bool:
        """Every human who joined has left (ends the room)."""


class ScriptedHumans:
    """The local stage's caller: says its lines, in order, when the floor turns to it."""

    on_all_left: Callable[[], None] | None = None  # never called: the caller hangs up in listen()

    def __init__(self, lines: Sequence[str], identity: str = "caller") -> None:
        self._lines = [h for h in (HumanLine.of(identity, text) for text in lines) if h]
        self._here = bool(self._lines)  # a caller with nothing left to say hangs up

    def pending(self) -> HumanLine | None:
        return None

    def interject(self) -> HumanLine | None:
        return self._lines.pop(0) if self._lines else None

    async def listen(self) -> HumanLine | None:
        if self._lines:
            return self._lines.pop(0)
        self._here = False
        return None

    def present(self) -> bool:
        return self._here

    def left(self) -> bool:
        return False  # the floor learns it from listen(); nobody "was here" without lines


class LiveHumans:
    """Humans in a LiveKit room: lines arrive from the lead's speech-to-text as they are said."""

    # Set by the room runner: the last human has left.
    on_all_left: Callable[[], None] | None = None

    def __init__(self) -> None:
        self._lines: asyncio.Queue[HumanLine] = asyncio.Queue()
        self._here: set[str] = set()
        self._seen_any = False
        self._closed = False
        self._changed = asyncio.Event()

    def close(self) -> None:
        """The room is closing: nobody will speak again; wake the floor if it is listening."""
        self._closed = True
        self._changed.set()

    def joined(self, identity: str) -> None:
        self._here.add(identity)
        self._seen_any = True
        self._changed.set()

    def gone(self, identity: str) -> None:
        self._here.discard(identity)
        self._changed.set()
        if self.left() and self.on_all_left is not None:
            self.on_all_left()  # the floor stops now, even mid-turn

    def said(self, identity: str, text: str) -> None:
        """A human's finished turn, spoken or typed (an empty one is dropped)."""
        line = HumanLine.of(identity, text)
        if line is None:
            return
        self._lines.put_nowait(line)
        self._changed.set()

    def pending(self) -> HumanLine | None:
        return None if self._lines.empty() else self._lines.get_nowait()

    def interject(self) -> HumanLine | None:
        return None

    async def listen(self) -> HumanLine | None:
        while True:
            if not self._lines.empty():
                return self._lines.get_nowait()
            # None once everyone who came has left; before anyone came, wait for them
            # (the room's time limit bounds the wait)
            if self._closed or self.left():
                return None
            self._changed.clear()
            await self._changed.wait()

    def present(self) -> bool:
        return bool(self._here)

    def left(self) -> bool:
        return self._seen_any and not self._here


@dataclass(eq=False)
class Speaker:
    """One persona on the floor: its session, its agent and its participant identity."""

    persona: Persona
    session: AgentSession
    agent: Any  # agents.persona.PersonaAgent
    identity: str
    standby: bool = False
    failures: int = 0
    last_text: str = ""
    repeats: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.persona.id

    @property
    def label(self) -> str:
        return f"{self.persona.name} ({self.persona.role})"


_HUMANS = object()  # "the floor turns to the humans"
_WORD = re.compile(r"[a-z0-9']+")


def _normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _mention(name: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(name)}\b", re.IGNORECASE)


_GREETING = r"(?:hey|hi|hello|thanks|thank you|ok|okay|so|right|great)"


def _vocative(name: str) -> re.Pattern[str]:
    n = re.escape(name)
    return re.compile(
        rf"(?:^|[.!?]\s+|\b{_GREETING}\s+){n}\s*[,!?:]|,\s*{n}\s*(?:[.!?]|$)", re.IGNORECASE
    )


async def append_user_line(agent: Any, session: AgentSession, line: str) -> None:
    """Add `line` as a user message at the end of `agent`'s chat context.

    livekit-agents has no public append: `Agent.chat_ctx` is a read-only copy and
    `update_chat_ctx()` replaces the context with a filtered copy, so relaying that way copies
    each listener's whole context twice per turn. With a pipeline LLM the context is only
    local: the line goes into the agent's own context in place, as livekit adds a user's turn
    itself (`agent._chat_ctx.items.append` in voice/agent_activity.py). A realtime model keeps
    a remote copy that only `update_chat_ctx()` syncs, so it keeps that path.
    tests/test_floor_relay.py fails if livekit renames `Agent._chat_ctx` or stops using it.
    """
    model = agent.llm if utils.is_given(agent.llm) else session.llm
    ctx = getattr(agent, "_chat_ctx", None)
    if isinstance(model, llm.LLM) and isinstance(ctx, llm.ChatContext) and not ctx.readonly:
        ctx.add_message(role="user", content=line)
        return
    updated = agent.chat_ctx.copy()
    updated.add_message(role="user", content=line)
    await agent.update_chat_ctx(updated)


class Floor:
    """Runs the conversation of one room. Also receives the personas' floor tool requests
    (it implements agents.persona.FloorRequests)."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        emit: Emit,
        humans: Humans,
        max_failures: int = 2,
    ) -> None:
        self.scenario = scenario
        self.rules = scenario.rules
        self._emit = emit
        self.humans = humans
        self._max_failures = max_failures
        self.speakers: list[Speaker] = []
        self.turns = 0
        self.ending: Ending | None = None
        self._current: Speaker | None = None
        self._holder: Speaker | None = None
        self._previous: Speaker | None = None
        self._requests: list[HandOverRequest | EndRequest | NextSpeakerRequest] = []
        self._loop_task: asyncio.Future[None] | None = None

    # -- set-up ---------------------------------------------------------------------------
    def seat(self, speakers: Sequence[Speaker], *, opener: str, lead: str) -> None:
        self.speakers = list(speakers)
        self._by_id = {s.id: s for s in self.speakers}
        self._opener = self._by_id[opener]
        self._lead = self._by_id[lead]
        for s in self.speakers:
            s.session.on("error", self._on_session_error(s))

    def _on_session_error(self, speaker: Speaker) -> Callable[[Any], None]:
        def handler(ev: Any) -> None:
            err = getattr(ev, "error", ev)
            if not getattr(err, "recoverable", False):
                speaker.errors.append(repr(getattr(err, "error", err)))

        return handler

    @property
    def active(self) -> list[Speaker]:
        return [s for s in self.speakers if not s.standby]

    # -- tool requests (called from the current speaker's tools) --------------------------
    def submit(self, request: HandOverRequest | EndRequest | NextSpeakerRequest) -> str:
        requester = (
            request.from_persona if isinstance(request, HandOverRequest) else request.persona
        )
        if self._current is None or requester != self._current.id:
            raise ValueError("only the persona holding the floor can do that, during its turn")
        if isinstance(request, EndRequest):
            self._requests.append(request)
            return "The conversation will end after this line. Say a short goodbye."
        target = self._by_id.get(request.to_persona)
        if target is None or target is self._current:
            others = ", ".join(s.label for s in self.speakers if s is not self._current)
            raise ValueError(f"{request.to_persona!r} is not someone else in this room ({others})")
        if isinstance(request, NextSpeakerRequest) and target.standby:
            raise ValueError(f"{target.label} is standing by; hand over to bring them in")
        self._requests.append(request)
        if isinstance(request, HandOverRequest):
            return f"{target.label} takes over after your line. Say a short goodbye now."
        return f"{target.label} speaks next."

    # -- personas leaving -------------------------------------------------------------------
    def persona_lost(self, persona_id: str, required: bool) -> None:
        """A persona's connection is gone: a required one ends the room; an optional one
        stands by from now on, so the floor goes on without it."""
        speaker = self._by_id.get(persona_id) if self.speakers else None
        label = speaker.label if speaker is not None else persona_id
        self._emit("persona_lost", persona=persona_id, required=required)
        if required:
            self.request_end(EndReason.PERSONA_ERROR, f"{label} left the room", persona_id)
        elif speaker is not None:
            speaker.standby = True

    # -- humans ---------------------------------------------------------------------------
    def human_started_speaking(self) -> None:
        """A human barged in: the persona speaking now stops."""
        if self._current is not None:
            self._emit("interrupted", persona=self._current.id, by="human")
            self._current.session.interrupt()

    # -- the conversation -----------------------------------------------------------------
    async def run(self) -> Ending:
        """Run turns until a stop rule fires. Cancellation propagates to the caller."""
        self._loop_task = asyncio.ensure_future(self._loop())
        try:
            async with asyncio.timeout(self.rules.max_duration_s):
                await self._loop_task
        except TimeoutError:
            if self._current is not None:
                self._current.session.interrupt()
            self._end(EndReason.MAX_DURATION, f"{self.rules.max_duration_s:g} s elapsed")
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.ending is None or (task is not None and task.cancelling()):
                raise  # this task was cancelled, not the loop by request_end()
        finally:
            self._loop_task.cancel()
        assert self.ending is not None
        return self.ending

    def request_end(self, reason: EndReason, detail: str = "", persona: str | None = None) -> None:
        """End from outside (the job shutting down, the room deleted): whoever speaks is cut
        off and the floor stops at once, also while it waits for a human to speak."""
        self._end(reason, detail, persona)
        if self._current is not None:
            self._current.session.interrupt()
        if self._loop_task is not None:
            self._loop_task.cancel()

    def _end(self, reason: EndReason, detail: str = "", persona: str | None = None) -> None:
        if self.ending is None:
            self.ending = Ending(reason, detail, persona)

    async def _loop(self) -> None:
        nxt: Any = self._opener
        instructions: str | None = None
        round_left = len(self.active)
        while self.ending is None:
            if self.humans.left():
                self._end(EndReason.HUMANS_LEFT, "every human has left")
                break
            line = self.humans.pending()
            if line is None and nxt is _HUMANS:
                line = await self.humans.listen()
                if line is None:
                    self._end(EndReason.HUMANS_LEFT, "no human left to answer")
                    break
            if line is not None:
                nxt, instructions = await self._hear(line), None
                continue
            if self.turns >= self.rules.max_turns:
                self._end(EndReason.MAX_TURNS, f"{self.turns} turns")
                break
            speaker: Speaker = nxt
            text = await self._turn(speaker, instructions)
            if self.ending is not None:
                break
            if text is None:  # the model failed: skip this persona's turn
                nxt, instructions = self._next_by_policy(speaker, ""), None
                continue
            nxt, instructions = await self._after(speaker, text)
            round_left -= 1
            if round_left <= 0 and self.rules.turn_policy in ("alternate", "round_robin"):
                round_left = len(self.active)
                extra = self.humans.interject()
                if extra is not None:
                    nxt, instructions = await self._hear(extra), None

    async def _turn(self, speaker: Speaker, instructions: str | None) -> str | None:
        """Ask one persona to speak; relay what it said. None when its model failed."""
        self._current = speaker
        errors_before = len(speaker.errors)
        started = time.time()
        try:
            handle = speaker.session.generate_reply(instructions=instructions or None)
            await handle
            failure = handle.exception()
        except RuntimeError as e:  # the session is closing
            handle, failure = None, e
        finally:
            self._current = None
        items = list(handle.chat_items) if handle is not None else []
        self._record_tools(speaker, items)
        text = " ".join(
            m.text_content or ""
            for m in items
            if getattr(m, "type", "") == "message" and m.role == "assistant"
        ).strip()
        if failure is None and len(speaker.errors) > errors_before:
            failure = RuntimeError(speaker.errors[-1])
        if failure is not None and not text:
            return self._failed(speaker, failure)
        speaker.failures = 0
        self.turns += 1
        if self._holder is not speaker:
            self._previous = self._holder  # whom this speaker was answering
        self._holder = speaker
        self._emit(
            "utterance",
            persona=speaker.id,
            name=speaker.persona.name,
            role=speaker.persona.role,
            identity=speaker.identity,
            text=text,
            turn=self.turns,
            interrupted=bool(handle is not None and handle.interrupted),
            started=round(started, 3),  # the turn's start; its `at` is when it was said
        )
        if text:
            await self._relay(f"{speaker.label}: {text}", exclude=speaker)
        self._loop_guard(speaker, text)
        return text

    def _failed(self, speaker: Speaker, failure: BaseException) -> None:
        """Log the failure; end the room if the persona's session closed or keeps failing."""
        speaker.failures += 1
        closed = not getattr(speaker.session, "_started", True) or getattr(
            speaker.session, "_closing", False
        )
        self._emit("error", persona=speaker.id, error=repr(failure), consecutive=speaker.failures)
        log.warning("persona_turn_failed", persona=speaker.id, error=repr(failure))
        if closed or speaker.failures >= self._max_failures:
            self._end(EndReason.PERSONA_ERROR, f"{speaker.label}: {failure!r}", speaker.id)
        self._requests.clear()
        return None

    def _record_tools(self, speaker: Speaker, items: list[Any]) -> None:
        calls = {i.call_id: i for i in items if getattr(i, "type", "") == "function_call"}
        for out in (i for i in items if getattr(i, "type", "") == "function_call_output"):
            call = calls.get(out.call_id)
            self._emit(
                "tool_call",
                persona=speaker.id,
                tool=out.name,
                args=call.arguments if call is not None else None,
                output=out.output,
                is_error=out.is_error,
            )

    def _loop_guard(self, speaker: Speaker, text: str) -> None:
        norm = _normalise(text)
        speaker.repeats = speaker.repeats + 1 if norm and norm == speaker.last_text else 0
        speaker.last_text = norm
        if speaker.repeats >= self.rules.loop_guard:
            self._end(EndReason.LOOP_GUARD, f"{speaker.label} repeated itself", speaker.id)

    async def _relay(self, line: str, *, exclude: Speaker | None) -> None:
        for other in self.speakers:
            if other is not exclude:
                await append_user_line(other.agent, other.session, line)

    async def _hear(self, line: HumanLine) -> Speaker:
        """A human spoke: every persona hears it; exactly one answers."""
        self._emit("human", identity=line.identity, text=line.text)
        await self._relay(format_human_line(line.identity, line.text), exclude=None)
        responder = (
            self._named_in(line.text, self.active)
            or (self._holder if self._holder and not self._holder.standby else None)
            or self._lead
        )
        self._emit("floor", to=responder.id, reason="answers the human")
        return responder

    def _named_in(
        self, text: str, candidates: Sequence[Speaker], *, vocative_only: bool = False
    ) -> Speaker | None:
        """The first candidate addressed in `text`. A persona addresses someone by vocative
        use ("Chris, where are you?", "Will do, Tim."); a mere mention ("Alex tells me...")
        does not pass the floor. A human naming a persona anywhere is enough."""
        found: list[tuple[int, Speaker]] = []
        for s in candidates:
            pattern = _vocative(s.persona.name) if vocative_only else _mention(s.persona.name)
            m = pattern.search(text)
            if m is not None:
                found.append((m.start(), s))
        return min(found, key=lambda f: f[0])[1] if found else None

    async def _after(self, speaker: Speaker, text: str) -> tuple[Any, str | None]:
        """Who speaks after `speaker` said `text`, and any instructions for them."""
        requests, self._requests = self._requests, []
        for req in requests:
            if isinstance(req, EndRequest):
                self._end(EndReason.END_CONVERSATION, req.reason, req.persona)
                return None, None
        for req in requests:
            if isinstance(req, HandOverRequest):
                return await self._hand_over(speaker, req)
        for req in requests:
            if isinstance(req, NextSpeakerRequest):
                target = self._by_id[req.to_persona]
                self._emit(
                    "floor", from_persona=speaker.id, to=target.id, reason="chosen by the moderator"
                )
                return target, None
        nxt = self._next_by_policy(speaker, text)
        if nxt is not _HUMANS:
            self._emit("floor", from_persona=speaker.id, to=nxt.id, reason=self.rules.turn_policy)
        return nxt, None

    async def _hand_over(self, speaker: Speaker, req: HandOverRequest) -> tuple[Speaker, str]:
        target = self._by_id[req.to_persona]
        target.standby = False
        self._holder = target
        self._emit(
            "hand_over", from_persona=speaker.id, to=target.id, summary=req.summary, turn=self.turns
        )
        await append_user_line(
            target.agent,
            target.session,
            f"[hand-over] {speaker.label} hands the conversation to you. Summary: {req.summary}",
        )
        return target, (
            f"{speaker.persona.name} just handed this conversation to you with the summary "
            f"above. Open with one short bridge line to the person you now help, then continue."
        )

    def _next_by_policy(self, speaker: Speaker, text: str) -> Any:
        active = self.active
        others = [s for s in active if s is not speaker]
        if not others:  # nobody else on the floor: whoever speaks next is human
            return _HUMANS
        policy = self.rules.turn_policy
        if policy in ("alternate", "round_robin"):
            if speaker not in active:
                return active[0]
            return active[(active.index(speaker) + 1) % len(active)]
        if policy == "moderated":
            if speaker is not self._lead:
                return self._lead
            return _HUMANS if self.humans.present() else others[0]
        # addressed: whoever is named; else the humans if any; else whom the speaker answered
        named = self._named_in(text, others, vocative_only=True)
        if named is not None:
            return named
        if self.humans.present():
            return _HUMANS
        if self._previous is not None and self._previous in others:
            return self._previous
        return self._lead if self._lead in others else others[0]

    def chat_ctx_of(self, persona_id: str) -> llm.ChatContext:
        return self._by_id[persona_id].agent.chat_ctx
