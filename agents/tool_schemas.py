"""A persona's tool schemas, built once per tool rather than on every model request.

livekit's OpenAI LLM turns each tool into its JSON schema (a pydantic model of the method's
signature, made strict) on every chat request, before the request is sent: 6-17 ms for a
persona's five tools on the 2-core test machine, on the path from the end of one line to the
next persona's first audio, and twice in a turn that calls a tool (tool call, then the line).
A tool's schema never changes, so `OpenAILLM` keeps each one.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import llm
from livekit.plugins import openai

# a persona has a handful of tools; a new agent (a hand-over) brings new tool objects
MAX_CACHED_TOOLS = 256


class SchemaCache:
    """Tool -> its schemas, per provider format and options."""

    def __init__(self) -> None:
        # id(tool) -> (tool, {(format, options): schemas}); the tool is kept so its id is not
        # reused by another object while the entry lives
        self._entries: dict[int, tuple[Any, dict[tuple[str, str], list[dict[str, Any]]]]] = {}
        self.built = 0  # schemas built (not served from the cache), for tests

    def schemas(self, tool: Any, format: str, **kwargs: Any) -> list[dict[str, Any]]:
        entry = self._entries.get(id(tool))
        if entry is None or entry[0] is not tool:
            if len(self._entries) >= MAX_CACHED_TOOLS:
                self._entries.clear()
            entry = (tool, {})
            self._entries[id(tool)] = entry
        key = (format, repr(sorted(kwargs.items())))
        if key not in entry[1]:
            one = llm.ToolContext([tool])
            entry[1][key] = one.parse_function_tools(format, **kwargs)  # type: ignore[call-overload]
            self.built += 1
        return entry[1][key]


class CachingToolContext(llm.ToolContext):
    """livekit's ToolContext, its function tools' schemas taken from a SchemaCache."""

    def __init__(self, tools: list[Any], cache: SchemaCache) -> None:
        super().__init__(tools)
        self._cache = cache

    def parse_function_tools(self, format: str, **kwargs: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for tool in self.function_tools.values():  # the order livekit's own formatters use
            out.extend(self._cache.schemas(tool, format, **kwargs))
        return out


def use_schema_cache(stream: llm.LLMStream, tools: list[Any], cache: SchemaCache) -> None:
    """Make `stream` (the OpenAI plugin's, just made by chat(), its request not yet sent: the
    request runs in a task that has not started) read its tools' schemas from `cache`. The one
    place that relies on livekit's private `_tool_ctx`; tests/test_tool_schemas.py fails if
    livekit renames it."""
    if not isinstance(getattr(stream, "_tool_ctx", None), llm.ToolContext):
        raise RuntimeError(
            f"{type(stream).__name__} has no _tool_ctx: livekit-plugins-openai changed how its "
            "LLMStream holds its tools; update agents/tool_schemas.py"
        )
    stream._tool_ctx = CachingToolContext(tools, cache)  # type: ignore[attr-defined]


class OpenAILLM(openai.LLM):
    """The plugin's LLM, each tool's schema built once (see the module's docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.schemas = SchemaCache()

    def chat(
        self, *, chat_ctx: llm.ChatContext, tools: list[Any] | None = None, **kwargs: Any
    ) -> Any:
        stream = super().chat(chat_ctx=chat_ctx, tools=tools, **kwargs)
        use_schema_cache(stream, list(tools or []), self.schemas)
        return stream
