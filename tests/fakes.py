"""Deterministic fakes of the paid models (LLM, TTS), an offline AgentSession factory, and
small builders for test rooms.

Test-only: the product never imports this (its own offline model is agents/offline.py;
both build on agents/scripted_llm.py).

    fake = FakeLLM([call("lookup_load", load_id="HDX-2478"), say("It's in transit.")])
    session = offline_session(fake)
    await session.start(agent)
    await session.run(user_input="where is it?")
    fake.calls[1].last_item        # the function_call_output the model saw
    fake.calls[0].tool_names       # exactly the tools offered
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from livekit.agents import NOT_GIVEN, AgentSession, APIConnectOptions, llm, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NotGivenOr
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.agents.voice.turn import TurnHandlingOptions

from agents.scripted_llm import Reply, ScriptedLLM, Send
from config.catalog import Catalog, Persona
from config.scenario import Scenario, parse_scenario

# ---- the fake LLM ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One scripted generation: tool calls and/or text, or an exception.

    `wait`: the generation stays open until the event is set (to overlap generations)."""

    text: str = ""
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    raise_exc: BaseException | None = None
    wait: asyncio.Event | None = None


def say(text: str) -> Step:
    return Step(text=text)


def call(tool: str, **args: Any) -> Step:
    return Step(tool_calls=((tool, args),))


@dataclass
class FakeCall:
    """One chat() call as the fake LLM received it."""

    index: int  # 1-based
    chat_ctx: llm.ChatContext  # a copy: the framework keeps mutating the original
    tool_names: list[str]
    tool_choice: Any

    @property
    def items(self) -> list[llm.ChatItem]:
        return list(self.chat_ctx.items)

    @property
    def last_item(self) -> llm.ChatItem:
        return self.chat_ctx.items[-1]

    @property
    def instructions(self) -> str:
        """The system message text (the agent's instructions)."""
        return "\n".join(
            m.text_content or ""
            for m in self.chat_ctx.items
            if m.type == "message" and m.role in ("system", "developer")
        )

    def lines(self) -> list[str]:
        """The context as short strings, for readable assertions."""
        out = []
        for it in self.chat_ctx.items:
            if it.type == "message":
                out.append(f"{it.role}: {it.text_content}")
            elif it.type == "function_call":
                out.append(f"call {it.name} {it.arguments}")
            elif it.type == "function_call_output":
                out.append(f"output {it.name}{' ERROR' if it.is_error else ''}: {it.output}")
        return out


@dataclass
class GenerationCounter:
    """Generations running at once; share one between several FakeLLMs to measure a room."""

    active: int = 0
    max_active: int = 0
    total: int = 0

    def enter(self) -> None:
        self.active += 1
        self.total += 1
        self.max_active = max(self.max_active, self.active)

    def exit(self) -> None:
        self.active -= 1


Responder = Callable[[FakeCall], Step]


@dataclass(frozen=True)
class _FakeReply(Reply):
    wait: asyncio.Event | None = None
    raise_exc: BaseException | None = None


class FakeLLM(ScriptedLLM[_FakeReply]):
    """Replies with scripted Steps in order (or from `script(call)` if it is a function);
    then `default` text. `fail_on={n: exc}` makes the n-th chat() call (1-based) raise."""

    def __init__(
        self,
        script: Iterable[Step] | Responder = (),
        *,
        default: str = "ok",
        fail_on: Mapping[int, BaseException] | None = None,
        counter: GenerationCounter | None = None,
    ) -> None:
        super().__init__(model="fake-llm", provider="fake")
        self._responder: Responder | None = script if callable(script) else None
        self._steps: list[Step] = [] if callable(script) else list(script)
        self._default = default
        self._fail_on = dict(fail_on or {})
        self.counter = counter or GenerationCounter()
        self.calls: list[FakeCall] = []

    @property
    def max_concurrent_generations(self) -> int:
        return self.counter.max_active

    @property
    def steps_left(self) -> int:
        return len(self._steps)

    def _reply(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        tool_choice: NotGivenOr[llm.ToolChoice],
    ) -> _FakeReply:
        record = FakeCall(
            index=len(self.calls) + 1,
            chat_ctx=chat_ctx.copy(),
            tool_names=[t.id for t in tools],
            tool_choice=tool_choice,
        )
        self.calls.append(record)
        if record.index in self._fail_on:
            step = Step(raise_exc=self._fail_on[record.index])
        elif self._responder is not None:
            step = self._responder(record)
        elif self._steps:
            step = self._steps.pop(0)
        else:
            step = Step(text=self._default)
        n = record.index
        calls = tuple(
            llm.FunctionToolCall(name=name, arguments=json.dumps(args), call_id=f"call-{n}-{i}")
            for i, (name, args) in enumerate(step.tool_calls)
        )
        return _FakeReply(
            f"fake-{n}",
            text=step.text,
            tool_calls=calls,
            completion_tokens=1,
            prompt_tokens=1,
            wait=step.wait,
            raise_exc=step.raise_exc,
        )

    async def _deliver(self, reply: _FakeReply, send: Send) -> None:
        """Counted while it runs: holds until `Step.wait` is set, then raises
        `Step.raise_exc` or sends the reply."""
        self.counter.enter()
        try:
            if reply.wait is not None:
                await reply.wait.wait()
            if reply.raise_exc is not None:
                raise reply.raise_exc
            await super()._deliver(reply, send)
        finally:
            self.counter.exit()


# ---- the fake TTS ---------------------------------------------------------------------------


class FakeTTS(tts.TTS):
    """Silence, `ms_per_char` long per character of text; records what it was asked to say."""

    def __init__(self, *, sample_rate: int = 24000, ms_per_char: int = 10) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=sample_rate,
            num_channels=1,
        )
        self.ms_per_char = ms_per_char
        self.synthesized: list[str] = []

    @property
    def model(self) -> str:
        return "fake-tts"

    @property
    def provider(self) -> str:
        return "fake"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        self.synthesized.append(text)
        return _FakeChunkedStream(
            tts=self, input_text=text, conn_options=conn_options, n=len(self.synthesized)
        )


class _FakeChunkedStream(tts.ChunkedStream):
    def __init__(
        self, *, tts: FakeTTS, input_text: str, conn_options: APIConnectOptions, n: int
    ) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._fake = tts
        self._n = n

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        fake = self._fake
        output_emitter.initialize(
            request_id=f"fake-tts-{self._n}",
            sample_rate=fake.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
        )
        samples = fake.sample_rate * fake.ms_per_char * max(1, len(self.input_text)) // 1000
        output_emitter.push(b"\x00\x00" * samples)  # 16-bit mono silence
        output_emitter.flush()


# ---- sessions -------------------------------------------------------------------------------

# no retries, no back-off: a failing fake fails at once instead of after ~6 s of retries
FAST_FAIL = SessionConnectOptions(
    llm_conn_options=APIConnectOptions(max_retry=0, retry_interval=0),
    tts_conn_options=APIConnectOptions(max_retry=0, retry_interval=0),
)


def offline_session(
    fake_llm: llm.LLM, *, tts: tts.TTS | None = None, **kwargs: Any
) -> AgentSession:
    """An AgentSession that needs no room, no network and no VAD/STT."""
    # the session stores `stt or None`: NOT_GIVEN means no model here, as None did
    return AgentSession(
        llm=fake_llm,
        tts=tts if tts is not None else NOT_GIVEN,
        stt=NOT_GIVEN,
        vad=None,
        turn_handling=TurnHandlingOptions(turn_detection=None),
        conn_options=kwargs.pop("conn_options", FAST_FAIL),
        **kwargs,
    )


# ---- rooms ----------------------------------------------------------------------------------


def scenario_for(campaign: str, *cast_roles: str, **fields: Any) -> Scenario:
    """A valid inline scenario: `cast_roles` in order (the first opens), all required."""
    data: dict[str, Any] = {
        "name": "test",
        "campaign": campaign,
        "cast": [{"role": r, "opens": i == 0} for i, r in enumerate(cast_roles)],
        "rules": {"turn_policy": "round_robin"},
        **fields,
    }
    return parse_scenario(json.dumps(data))


def cast_of(catalog: Catalog, *persona_ids: str) -> dict[str, Persona]:
    """role -> persona for the given persona ids."""
    return {p.role: p for p in map(catalog.persona, persona_ids)}
