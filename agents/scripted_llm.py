"""A scripted llm.LLM: each chat() call decides its whole reply at once, from that call alone,
and its stream sends the reply the way a provider's does: tool calls, then text, then usage.

The base of the models that answer without a provider: the offline model (agents/offline.py),
the tests' fake and the benchmarks' instant model. A subclass says only what to reply
(`_reply`) and, where it must, wraps the sending (`_deliver`: to hold a generation open, fail
it, or time it).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from livekit.agents import llm
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)

Send = Callable[[llm.ChatChunk], None]


@dataclass(frozen=True)
class Reply:
    """One generation: tool calls and/or text, and the token counts its usage chunk reports."""

    id: str  # the response id every chunk carries
    text: str = ""
    tool_calls: tuple[llm.FunctionToolCall, ...] = ()
    completion_tokens: int = 0
    prompt_tokens: int = 0

    def chunks(self) -> list[llm.ChatChunk]:
        out: list[llm.ChatChunk] = []
        if self.tool_calls:
            delta = llm.ChoiceDelta(role="assistant", tool_calls=list(self.tool_calls))
            out.append(llm.ChatChunk(id=self.id, delta=delta))
        if self.text:
            delta = llm.ChoiceDelta(role="assistant", content=self.text)
            out.append(llm.ChatChunk(id=self.id, delta=delta))
        usage = llm.CompletionUsage(
            completion_tokens=self.completion_tokens,
            prompt_tokens=self.prompt_tokens,
            total_tokens=self.completion_tokens + self.prompt_tokens,
        )
        out.append(llm.ChatChunk(id=self.id, usage=usage))
        return out


ReplyT = TypeVar("ReplyT", bound=Reply)


class ScriptedLLM(llm.LLM, Generic[ReplyT]):
    """An llm.LLM whose replies come from `_reply`, decided when chat() is called."""

    def __init__(self, *, model: str, provider: str) -> None:
        super().__init__()
        self._model = model
        self._provider = provider

    @property
    def model(self) -> str:
        return self._model

    @property
    def provider(self) -> str:
        return self._provider

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        tools = list(tools or [])
        # decided now, from this call's context: the reply does not depend on task timing
        reply = self._reply(chat_ctx=chat_ctx, tools=tools, tool_choice=tool_choice)
        return _ScriptedStream(
            self, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options, reply=reply
        )

    @abstractmethod
    def _reply(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        tool_choice: NotGivenOr[llm.ToolChoice],
    ) -> ReplyT:
        """This call's reply (called once per chat(), in call order)."""

    async def _deliver(self, reply: ReplyT, send: Send) -> None:
        """Send the reply's chunks (in the stream's task; again on a retried attempt)."""
        for chunk in reply.chunks():
            send(chunk)


class _ScriptedStream(llm.LLMStream, Generic[ReplyT]):
    def __init__(
        self,
        owner: ScriptedLLM[ReplyT],
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
        reply: ReplyT,
    ) -> None:
        super().__init__(owner, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._owner = owner
        self._reply = reply

    async def _run(self) -> None:
        await self._owner._deliver(self._reply, self._event_ch.send_nowait)
