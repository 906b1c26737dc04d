"""The floor: exactly one persona speaks at a time.

After each utterance the floor relays its text into every other persona's chat context (a line
tagged with the speaker's name and role: exact, instant, no speech-to-text), then asks only the
next speaker to reply. Who is next comes from the scenario's turn policy, a hand-over, or a
human. The floor also applies the stop rules: max turns, max duration, `end_conversation`, the
loop guard, and the humans having left.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from livekit.agents import NOT_GIVEN, AgentSession, llm, utils
from livekit.agents.voice import SpeechHandle

from agents.fallback import ModelFailures, model_failures, say_apology
from agents.instructions import format_human_line
from agents.persona import (
    EndRequest,
    FloorRequest,
    HandOverRequest,
    NextSpeakerRequest,
    PersonaAgent,
    TransferRequest,
)
from config.catalog import Persona
from config.logging import get_logger
from config.scenario import DtmfChoice, Scenario
from workers.humans.transfer import Failed
from workers.room.human_line import HumanLine
from workers.room.latency import turn_latency
from workers.room.seat import Seat
from workers.room.stage.base import Humans
from workers.room.turns import HUMANS, answers_human, next_speaker, repeat_key

if TYPE_CHECKING:
    from workers.humans.room_transfer import RoomTransfer

log = get_logger("workers.room.floor")

Emit = Callable[..., Any]  # emit(event_name, **fields), e.g. Transcript.write

# Items each persona's own chat context keeps besides its instructions: the newest 200.
# livekit passes over the speaker's whole context for every reply (copies, tool filtering,
# the provider's formatting), so an unbounded context makes each turn slower than the last
# (and each request longer). 200 items is the last ~50 rounds of a four-persona room, about
# 5,000 tokens of short spoken lines; a 500-turn room (the schema's cap) would otherwise
# leave 500+ items in every context. bench.floor_latency measures the gap flat at this size
# up to turn 2,000.
CONTEXT_MAX_ITEMS = 200


# How long a room that ended mid-turn waits for livekit to say what the cut-off persona got out.
CUT_OFF_WAIT_S = 2.0

# While people are rung and the winner is briefed the caller is never left in silence: the
# transferring persona says a short hold line this often.
HOLD_EVERY_S = 8.0
# A person who hangs up within this long after joining the caller was cut off or picked up
# by mistake: the persona takes the caller back. Later, the call is over when the caller leaves.
TAKE_BACK_S = 10.0


def _spoken_text(items: Sequence[Any]) -> str:
    """What a turn said: its assistant messages' text."""
    return " ".join(
        m.text_content or ""
        for m in items
        if isinstance(m, llm.ChatMessage) and m.role == "assistant"
    ).strip()


class EndReason(StrEnum):
    MAX_TURNS = "max_turns"
    MAX_DURATION = "max_duration"
    END_CONVERSATION = "end_conversation"
    MODEL_FAILED = "model_failed"  # a required persona's models all failed (its apology said)
    LOOP_GUARD = "loop_guard"
    HUMANS_LEFT = "humans_left"
    PERSONA_ERROR = "persona_error"
    CANCELLED = "cancelled"
    SHUTDOWN = "shutdown"
    WORKER_LOST = "worker_lost"  # the worker's main process died under a running job
    START_FAILED = "start_failed"
    NO_ANSWER = "no_answer"  # the room's phone call was busy, declined or never answered


@dataclass(frozen=True)
class Ending:
    reason: EndReason
    detail: str = ""
    persona: str | None = None


@dataclass(eq=False)
class Speaker:
    """One persona on the floor: its seat, session and agent, and the floor's count of its
    turns (failures, repeats, errors). Optional seats start on standby."""

    seat: Seat
    session: AgentSession
    agent: PersonaAgent
    standby: bool = False
    closed: bool = False  # its session closed (livekit's public "close" event)
    failures: int = 0
    last_text: str = ""
    repeats: int = 0
    errors: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, seat: Seat, session: AgentSession, agent: PersonaAgent) -> Speaker:
        return cls(seat, session, agent, standby=not seat.slot.required)

    @property
    def persona(self) -> Persona:
        return self.seat.persona

    @property
    def id(self) -> str:
        return self.seat.persona.id

    @property
    def identity(self) -> str:
        return self.seat.identity

    @property
    def label(self) -> str:
        return f"{self.persona.name} ({self.persona.role})"


def own_context(agent: Any, session: AgentSession) -> llm.ChatContext | None:
    """The chat context livekit generates `agent`'s replies from, to change in place; None for
    a realtime model, whose remote copy only `update_chat_ctx()` keeps in step.

    The one place that reads livekit's private `Agent._chat_ctx`: livekit-agents has no public
    in-place access (`Agent.chat_ctx` is a read-only copy, and `update_chat_ctx()` replaces the
    context with a filtered copy), while it adds a user's turn to this very object itself
    (`agent._chat_ctx.items.append` in voice/agent_activity.py). tests/test_floor_relay.py and
    tests/test_bounded_context.py fail if livekit renames it or stops generating from it."""
    model = agent.llm if utils.is_given(agent.llm) else session.llm
    ctx = getattr(agent, "_chat_ctx", None)
    if isinstance(model, llm.LLM) and isinstance(ctx, llm.ChatContext) and not ctx.readonly:
        return ctx
    return None


async def append_user_line(agent: Any, session: AgentSession, line: str) -> None:
    """Add `line` as a user message at the end of `agent`'s chat context: in place with a
    pipeline LLM (relaying through `update_chat_ctx()` would copy each listener's whole
    context twice per turn), through `update_chat_ctx()` for a realtime model."""
    ctx = own_context(agent, session)
    if ctx is not None:
        ctx.add_message(role="user", content=line)
        return
    updated = agent.chat_ctx.copy()
    updated.add_message(role="user", content=line)
    await agent.update_chat_ctx(updated)


def bound_context(agent: Any, session: AgentSession, max_items: int) -> None:
    """Keep `agent`'s own chat context to its instructions and at most its newest `max_items`
    items, in place, with livekit's public `ChatContext.truncate`: it keeps the leading
    instructions and never starts the kept part with a tool call or a tool output, so a call
    is never kept without its output nor an output without its call. Once past the bound, a
    context is cut a tenth below it, so the cut (a pass over the context) comes every few
    turns, not on every line. A realtime model's context is left to its server, which bounds
    its own conversation."""
    ctx = own_context(agent, session)
    if ctx is not None and len(ctx.items) > max_items + 1:  # + 1: the instructions
        ctx.truncate(max_items=max_items - max_items // 10)


def _heard(line: HumanLine) -> dict[str, Any]:
    """When an ear heard a spoken line, and its end-of-utterance delay (end of speech to the
    final transcript: the `room_end_of_utterance_delay_seconds` histogram)."""
    if not line.heard:
        return {}
    fields: dict[str, Any] = {"heard": dict(line.heard)}
    if "final" in line.heard and "speech_end" in line.heard:
        delay = max(line.heard["final"] - line.heard["speech_end"], 0.0)
        fields["latency"] = {"eou_delay_s": round(delay, 3)}
    return fields


_CALLERS_GONE = object()  # _human_line_or: every caller has left

# transfer_failed reasons, as the persona tells the caller
_NOBODY = {
    "no_one_free": "Nobody on the team is free to take the call right now.",
    "no_answer": "Nobody on the team answered.",
    "all_declined": "Nobody on the team could take the call right now.",
    "hung_up_at_once": "The colleague who answered had to drop off the call.",
}


def _key_field(line: HumanLine) -> dict[str, str]:
    return {"key": line.key} if line.key else {}


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
        context_items: int = CONTEXT_MAX_ITEMS,
        transfer: RoomTransfer | None = None,
    ) -> None:
        self.scenario = scenario
        self._transfer = transfer  # how a persona reaches a person (None: nobody can be rung)
        self.rules = scenario.rules
        self._emit = emit
        self.humans = humans
        self._max_failures = max_failures
        # items each persona's chat context keeps besides its instructions (bound_context)
        self.context_items = context_items
        self.speakers: list[Speaker] = []
        self.turns = 0
        self.ending: Ending | None = None
        self._current: Speaker | None = None
        self._holder: Speaker | None = None
        self._previous: Speaker | None = None
        self._requests: list[FloorRequest] = []
        self._loop_task: asyncio.Future[None] | None = None
        self._last_said_at: float | None = None  # when the previous line ended (latency)

    # -- set-up ---------------------------------------------------------------------------
    def seat(self, speakers: Sequence[Speaker], *, opener: str, lead: str) -> None:
        self.speakers = list(speakers)
        self._by_id = {s.id: s for s in self.speakers}
        self._opener = self._by_id[opener]
        self._lead = self._by_id[lead]
        for s in self.speakers:
            s.session.on("error", self._on_session_error(s))
            s.session.on("close", self._on_session_close(s))

    def _on_session_error(self, speaker: Speaker) -> Callable[[Any], None]:
        def handler(ev: Any) -> None:
            err = getattr(ev, "error", ev)
            if not getattr(err, "recoverable", False):
                speaker.errors.append(repr(getattr(err, "error", err)))

        return handler

    @staticmethod
    def _on_session_close(speaker: Speaker) -> Callable[[Any], None]:
        def handler(_: Any) -> None:
            speaker.closed = True

        return handler

    @property
    def active(self) -> list[Speaker]:
        return [s for s in self.speakers if not s.standby]

    # -- tool requests (called from the current speaker's tools) --------------------------
    def submit(self, request: FloorRequest) -> str:
        requester = (
            request.from_persona if isinstance(request, HandOverRequest) else request.persona
        )
        if self._current is None or requester != self._current.id:
            raise ValueError("only the persona holding the floor can do that, during its turn")
        if isinstance(request, EndRequest):
            self._requests.append(request)
            return "The conversation will end after this line. Say a short goodbye."
        if isinstance(request, TransferRequest):
            if self._transfer is None:
                raise ValueError("no person can be rung from this room; keep helping the caller")
            if any(isinstance(r, TransferRequest) for r in self._requests):
                raise ValueError("a transfer is already requested")
            self._requests.append(request)
            return (
                "A person will be rung after this line. Tell the caller now, in one short "
                "sentence, that you are connecting them to a colleague and they should hold."
            )
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

    async def _await_first_human(self) -> None:
        """In a scenario with humans, the opener greets someone: it waits (up to the scenario's
        `wait_for_human_s`) for the first human, rather than greet an empty room."""
        wait = self.scenario.human_wait_s
        if wait <= 0 or self.humans.present():
            return
        started = time.monotonic()
        arrived = await self.humans.arrival(wait)
        self._emit("human_awaited", arrived=arrived, waited_s=round(time.monotonic() - started, 3))

    async def _loop(self) -> None:
        await self._await_first_human()
        nxt = self._opener.id  # a persona id, or HUMANS
        instructions: str | None = None
        round_left = len(self.active)
        pause = False  # a round of persona turns has just ended
        while self.ending is None:
            if self.humans.left() and self.scenario.ends_when_humans_leave:
                self._end(EndReason.HUMANS_LEFT, "every human has left")
                break
            line, pause = self.humans.next_line(pause=pause), False
            if line is None and nxt == HUMANS:
                line = await self.humans.wait_line()
                if line is None:
                    self._end(EndReason.HUMANS_LEFT, "no human left to answer")
                    break
            if line is not None:
                nxt, instructions = await self._hear(line)
                continue
            if self.turns >= self.rules.max_turns:
                self._end(EndReason.MAX_TURNS, f"{self.turns} turns")
                break
            speaker = self._by_id[nxt]
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
                pause = True

    async def _turn(self, speaker: Speaker, instructions: str | None) -> str | None:
        """Ask one persona to speak; relay what it said. None when its model failed."""
        self._current = speaker
        errors_before = len(speaker.errors)
        failures = model_failures(speaker.session.llm)  # counted by type (agents/fallback.py)
        failed_before = failures.count if failures is not None else 0
        started = time.time()
        handle: SpeechHandle | None = None
        attempt = 0
        try:
            while True:
                handle = speaker.session.generate_reply(instructions=instructions or NOT_GIVEN)
                await handle
                failure = handle.exception()
                if not _response_failed(failures, failed_before, handle, failure, attempt):
                    break
                # a realtime response failed, nothing said: asked again, as the options say
                attempt += 1
                assert failures is not None
                self._emit("model_retry", persona=speaker.id, attempt=attempt, error=failures.last)
                await asyncio.sleep(failures.retry_delay_s(attempt))
                failed_before = failures.count
        except RuntimeError as e:  # the session is closed or closing: it cannot take a turn
            handle, failure = None, e
            speaker.closed = True
        except asyncio.CancelledError:  # the room ended while this persona was speaking
            if handle is not None:
                await self._record_cut_off(speaker, handle, started)
            raise
        finally:
            self._current = None
        items = list(handle.chat_items) if handle is not None else []
        self._record_tools(speaker, items)
        text = _spoken_text(items)
        if failure is None and len(speaker.errors) > errors_before:
            failure = RuntimeError(speaker.errors[-1])
        model_failed = failures is not None and failures.count > failed_before
        if model_failed and failure is None and not text and not speaker.closed:
            # a realtime response failed, nothing said: the apology, in the offline voice
            try:
                text = await say_apology(
                    speaker.session, speaker.persona, required=speaker.seat.slot.required
                )
            except RuntimeError as e:  # the session is closing after all
                failure, speaker.closed = e, True
        if failure is not None and not text:
            self._failed(speaker, failure)
            return None
        speaker.failures = 0
        if self._holder is not speaker:
            self._previous = self._holder  # whom this speaker was answering
        self._holder = speaker
        self._utterance(
            speaker, text, started, items, interrupted=bool(handle and handle.interrupted)
        )
        if text:
            await self._relay(f"{speaker.label}: {text}", exclude=speaker)
        self._loop_guard(speaker, text)
        if model_failed and speaker.seat.slot.required:  # it cannot go on: neither can the room
            self._end(EndReason.MODEL_FAILED, f"{speaker.label}: every model failed", speaker.id)
        return text

    def _utterance(
        self,
        speaker: Speaker,
        text: str,
        started: float,
        items: list[Any],
        *,
        interrupted: bool,
    ) -> None:
        self.turns += 1
        self._emit(
            "utterance",
            persona=speaker.id,
            name=speaker.persona.name,
            role=speaker.persona.role,
            identity=speaker.identity,
            text=text,
            turn=self.turns,
            interrupted=interrupted,
            started=round(started, 3),  # the turn's start; its `at` is when it was said
            latency=turn_latency(items, started, self._last_said_at),
        )
        self._last_said_at = time.time()

    async def _record_cut_off(self, speaker: Speaker, handle: SpeechHandle, started: float) -> None:
        """The room ended mid-turn: the persona is stopped, and what it got out before (as
        livekit adds it once the speech stops: the words played, where the output says) is
        recorded as an interrupted utterance. Waits at most CUT_OFF_WAIT_S for it."""
        handle.interrupt(force=True)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(CUT_OFF_WAIT_S):
                await handle.wait_for_playout()
        items = list(handle.chat_items)
        text = _spoken_text(items)
        if text:
            self._utterance(speaker, text, started, items, interrupted=True)

    def _failed(self, speaker: Speaker, failure: BaseException) -> None:
        """Log the failure; end the room if the persona's session closed or keeps failing."""
        speaker.failures += 1
        self._emit("error", persona=speaker.id, error=repr(failure), consecutive=speaker.failures)
        log.warning("persona_turn_failed", persona=speaker.id, error=repr(failure))
        if speaker.closed or speaker.failures >= self._max_failures:
            self._end(EndReason.PERSONA_ERROR, f"{speaker.label}: {failure!r}", speaker.id)
        self._requests.clear()

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
        norm = repeat_key(text)
        speaker.repeats = speaker.repeats + 1 if norm and norm == speaker.last_text else 0
        speaker.last_text = norm
        if speaker.repeats >= self.rules.loop_guard:
            self._end(EndReason.LOOP_GUARD, f"{speaker.label} repeated itself", speaker.id)

    async def _relay(self, line: str, *, exclude: Speaker | None) -> None:
        for other in self.speakers:
            if other is not exclude:
                await append_user_line(other.agent, other.session, line)
        # every context, the speaker's too (its reply has just grown it), within the bound
        for speaker in self.speakers:
            bound_context(speaker.agent, speaker.session, self.context_items)

    async def _hear(self, line: HumanLine) -> tuple[str, str | None]:
        """A human spoke (or pressed a key): every persona hears it; exactly one answers.
        Returns who speaks next and any instructions for them."""
        self._emit(
            "human", identity=line.identity, text=line.text, **_key_field(line), **_heard(line)
        )
        # a realtime lead heard it with its own model: relayed, it would be there twice
        heard_it = self._by_id.get(line.heard_by) if line.heard_by else None
        await self._relay(format_human_line(line.identity, line.text), exclude=heard_it)
        choice = self.scenario.dtmf.get(line.key) if line.key else None
        if choice is not None:
            return await self._menu_choice(choice, line.key)
        if self.scenario.rules.answered_by == "lead":
            responder = self._lead
        else:
            responder = self._by_id[
                answers_human(
                    line.text,
                    self._names(self.active),
                    holder=self._holder.id if self._holder is not None else None,
                    lead=self._lead.id,
                )
            ]
        self._emit("floor", to=responder.id, reason="answers the human")
        return responder.id, None

    async def _menu_choice(self, choice: DtmfChoice, key: str) -> tuple[str, str | None]:
        """The caller pressed a menu key: `end` ends the call; a role's key hands the caller
        to that persona through the usual hand-over (the holder keeps them if it is the one)."""
        if choice.action == "end":
            self._end(EndReason.END_CONVERSATION, f"the caller pressed {key}")
            return HUMANS, None
        holder = self._holder or self._lead
        target = next((s for s in self.speakers if s.persona.role == choice.role), None)
        if target is None or target is holder:  # not seated, or already theirs: answer
            self._emit("floor", to=holder.id, reason=f"key {key}")
            return holder.id, None
        summary = f"The caller pressed {key} ({choice.label or choice.role}) on the phone menu."
        speaker, instructions = await self._hand_over(
            holder, HandOverRequest(holder.id, target.id, summary)
        )
        return speaker.id, instructions

    @staticmethod
    def _names(speakers: Sequence[Speaker]) -> dict[str, str]:
        return {s.id: s.persona.name for s in speakers}

    async def _after(self, speaker: Speaker, text: str) -> tuple[str, str | None]:
        """Who speaks after `speaker` said `text` (a persona id or HUMANS), and any
        instructions for them."""
        requests, self._requests = self._requests, []
        for req in requests:
            if isinstance(req, EndRequest):
                self._end(EndReason.END_CONVERSATION, req.reason, req.persona)
                return HUMANS, None  # not reached: the loop stops on the ending
        for req in requests:
            if isinstance(req, HandOverRequest):
                target, instructions = await self._hand_over(speaker, req)
                return target.id, instructions
        for req in requests:
            if isinstance(req, TransferRequest):
                return await self._transfer_to_human(speaker, req)
        for req in requests:
            if isinstance(req, NextSpeakerRequest):
                target = self._by_id[req.to_persona]
                self._emit(
                    "floor", from_persona=speaker.id, to=target.id, reason="chosen by the moderator"
                )
                return target.id, None
        nxt = self._next_by_policy(speaker, text)
        if nxt != HUMANS:
            self._emit("floor", from_persona=speaker.id, to=nxt, reason=self.rules.turn_policy)
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
        bound_context(target.agent, target.session, self.context_items)
        return target, (
            f"{speaker.persona.name} just handed this conversation to you with the summary "
            f"above. Open with one short bridge line to the person you now help, then continue."
        )

    # -- a person takes the caller (workers/humans/transfer.py rings them) ------------------
    async def _transfer_to_human(
        self, speaker: Speaker, req: TransferRequest
    ) -> tuple[str, str | None]:
        """Ring people while the caller hears a hold line; then hand the caller to the one who
        answered, or, failing that, to voicemail or back to `speaker`. Returns who speaks next."""
        transfer = self._transfer
        assert transfer is not None  # submit() refused the request otherwise
        hold = asyncio.ensure_future(self._hold(speaker, transfer))
        try:
            result = await transfer.run(speaker.persona, req.reason, req.summary, speaker.session)
        finally:
            hold.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hold
        if isinstance(result, Failed):
            return await self._transfer_failed(speaker, result.reason)
        return await self._with_human(speaker, transfer, result.human.name)

    async def _hold(self, speaker: Speaker, transfer: RoomTransfer) -> None:
        """A short hold line every HOLD_EVERY_S until the transfer is done."""
        while True:
            await asyncio.sleep(HOLD_EVERY_S)
            winner = transfer.winner_name()
            text = (
                f"{winner} is taking your call and will be with you in a moment."
                if winner
                else "Thanks for holding, I'm still connecting you."
            )
            await self._say(speaker, text, kind="hold")

    async def _say(self, speaker: Speaker, text: str, *, kind: str) -> None:
        """`speaker` says a fixed line (not its model's), recorded as `persona_line`."""
        try:
            await speaker.session.say(text, add_to_chat_ctx=False)
        except RuntimeError as e:  # its session closed meanwhile
            log.warning("persona_line_not_said", persona=speaker.id, error=repr(e))
            return
        self._emit(
            "persona_line", persona=speaker.id, identity=speaker.identity, kind=kind, text=text
        )

    async def _transfer_failed(self, speaker: Speaker, reason: str) -> tuple[str, str | None]:
        """Nobody took the call: the voicemail persona (seated on standby) takes a message,
        or `speaker` tells the caller and carries on. A person who answered and dropped off
        at once: `speaker` takes the caller back."""
        vm = next((s for s in self.speakers if s.persona.role == "voicemail"), None)
        then = self.scenario.transfer.on_no_answer
        if reason == "hung_up_at_once":
            then = "carry_on"
        elif then == "voicemail" and vm is None:
            then = "carry_on"  # no voicemail persona seated in this room
            log.warning("transfer_voicemail_not_seated", persona=speaker.id)
        self._emit("transfer_failed", reason=reason, then=then, persona=speaker.id)
        why = _NOBODY.get(reason, reason)
        if then == "voicemail" and vm is not None:
            summary = f"{why} Take the caller's message for a callback."
            target, instructions = await self._hand_over(
                speaker, HandOverRequest(speaker.id, vm.id, summary)
            )
            return target.id, instructions
        return speaker.id, f"{why} Tell the caller so in one sentence, and keep helping them."

    async def _with_human(
        self, speaker: Speaker, transfer: RoomTransfer, person: str
    ) -> tuple[str, str | None]:
        """A person has the caller. `speaker` says goodbye; the personas stay silent (the
        human lines are still recorded). If the person hangs up within TAKE_BACK_S, `speaker`
        takes the caller back; after that the personas leave (or stay as note takers, per
        scenario), and the room ends when the caller leaves."""
        await self._say(speaker, f"You're now with {person}. Goodbye!", kind="goodbye")
        deadline = time.monotonic() + TAKE_BACK_S
        gone = asyncio.ensure_future(transfer.wait_gone())
        window = True  # the take-back window is open
        try:
            while True:
                if window and time.monotonic() >= deadline:
                    window = False
                    if self.scenario.transfer.after_hand_over == "leave":
                        await transfer.leave([s.id for s in self.speakers])
                if window and gone.done():
                    return await self._transfer_failed(speaker, "hung_up_at_once")
                line = await self._human_line_or(gone, deadline if window else None)
                if line is _CALLERS_GONE:
                    self._end(EndReason.HUMANS_LEFT, "the caller left")
                    return HUMANS, None
                if isinstance(line, HumanLine):
                    self._emit("human", identity=line.identity, text=line.text, **_key_field(line))
                    if not transfer.personas_left:  # note takers keep the conversation
                        await self._relay(format_human_line(line.identity, line.text), exclude=None)
        finally:
            gone.cancel()

    async def _human_line_or(
        self, gone: asyncio.Future[str], deadline: float | None
    ) -> HumanLine | object | None:
        """The next human line; None when the person hung up or `deadline` passed first;
        _CALLERS_GONE when every caller has left."""
        line = self.humans.next_line(pause=False)  # what was said before anyone left
        if line is not None:
            return line
        if self.humans.left():
            return _CALLERS_GONE
        waiting = asyncio.ensure_future(self.humans.wait_line())
        wait_for: set[asyncio.Future[Any]] = {waiting}
        if not gone.done():
            wait_for.add(gone)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait(wait_for, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not waiting.done():
                waiting.cancel()
        if waiting.done() and not waiting.cancelled():
            return waiting.result() or _CALLERS_GONE
        return None

    def _next_by_policy(self, speaker: Speaker, text: str) -> str:
        active = self.active
        return next_speaker(
            self.rules.turn_policy,
            speaker=speaker.id,
            text=text,
            active=[s.id for s in active],
            names=self._names(active),
            lead=self._lead.id,
            answering=self._previous.id if self._previous is not None else None,
            humans_present=self.humans.present(),
        )

    def chat_ctx_of(self, persona_id: str) -> llm.ChatContext:
        return self._by_id[persona_id].agent.chat_ctx


def _response_failed(
    failures: ModelFailures | None,
    failed_before: int,
    handle: SpeechHandle,
    failure: BaseException | None,
    attempt: int,
) -> bool:
    """A realtime response failed with nothing said, and it may be asked for again."""
    return (
        failures is not None
        and failures.count > failed_before
        and failure is None
        and not _spoken_text(list(handle.chat_items))
        and attempt < failures.retries
    )
