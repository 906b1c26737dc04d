"""Chat completions on the wire: the request's messages and tools as a livekit ChatContext for
the offline model, and its Reply as the SSE chunks OpenAI streams."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from livekit.agents import llm

from agents.scripted_llm import Reply


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def chat_context(messages: list[dict[str, Any]]) -> llm.ChatContext:
    """What the offline model reads: messages, tool calls and tool outputs, in order."""
    ctx = llm.ChatContext.empty()
    for m in messages:
        role = m.get("role")
        if role == "tool":
            ctx.items.append(
                llm.FunctionCallOutput(
                    call_id=m.get("tool_call_id", ""),
                    output=_text(m.get("content")),
                    is_error=False,
                    name="",
                )
            )
            continue
        if role in ("system", "developer", "user", "assistant"):
            text = _text(m.get("content"))
            if text:
                ctx.add_message(role="system" if role == "developer" else role, content=text)
        for tc in m.get("tool_calls") or ():
            fn = tc.get("function", {})
            ctx.items.append(
                llm.FunctionCall(
                    call_id=tc.get("id", ""),
                    name=fn.get("name", ""),
                    arguments=fn.get("arguments", ""),
                )
            )
    return ctx


def offered_tools(body: dict[str, Any]) -> set[str]:
    names = set()
    for tool in body.get("tools") or ():
        fn = tool.get("function") or tool  # chat: {"type", "function": {...}}; realtime: flat
        if fn.get("name"):
            names.add(fn["name"])
    return names


def words(text: str) -> list[str]:
    """`text` in streaming pieces (each word with its following space), joined back exactly."""
    pieces, start = [], 0
    for i, ch in enumerate(text):
        if ch == " ":
            pieces.append(text[start : i + 1])
            start = i + 1
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def sse_chunks(reply: Reply, model: str, *, usage: bool) -> Iterator[dict[str, Any]]:
    """The chat.completion.chunk objects OpenAI streams for `reply`."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": reply.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    yield chunk({"role": "assistant", "content": ""})
    for i, call in enumerate(reply.tool_calls):
        head = {"index": i, "id": call.call_id, "type": "function"}
        yield chunk({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]})
        half = len(call.arguments) // 2  # arguments arrive in pieces, as they do
        for part in (call.arguments[:half], call.arguments[half:]):
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
    for piece in words(reply.text):
        yield chunk({"content": piece})
    yield chunk({}, "tool_calls" if reply.tool_calls else "stop")
    if usage:
        yield {
            "id": reply.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            },
        }


def sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return f"data: {text}\n\n".encode()
