"""A persona's tool schemas are built once per tool, not on every model request, and are
exactly the schemas livekit's own OpenAI formatter builds."""

from __future__ import annotations

import pytest
from livekit.agents import llm
from livekit.agents.llm import utils as llm_utils

from agents.persona import RecordingFloor, build_agent
from agents.room_data import RoomData
from agents.tool_schemas import CachingToolContext, OpenAILLM, SchemaCache, use_schema_cache
from config.scenario import load_scenario


@pytest.fixture
def tools(catalog, scenarios_dir) -> list:
    scenario = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    tim, chris = catalog.persona("tim"), catalog.persona("chris")
    agent = build_agent(
        tim,
        room_data=RoomData(scenario, catalog),
        cast={tim.role: tim, chris.role: chris},
        floor=RecordingFloor(),
    )
    assert len(agent.tools) >= 3
    return list(agent.tools)


def test_cached_schemas_equal_livekits_own(tools) -> None:
    ctx = CachingToolContext(tools, SchemaCache())
    for strict in (True, False):
        expected = llm.ToolContext(tools).parse_function_tools("openai", strict=strict)
        assert ctx.parse_function_tools("openai", strict=strict) == expected
        assert ctx.parse_function_tools("openai", strict=strict) == expected  # from the cache


def test_each_tools_schema_is_built_once(tools, monkeypatch) -> None:
    built = []
    build = llm_utils.build_strict_openai_schema

    def counting(tool):  # what livekit's formatter calls, per tool and request
        built.append(tool)
        return build(tool)

    monkeypatch.setattr(llm_utils, "build_strict_openai_schema", counting)
    cache = SchemaCache()
    for _ in range(5):  # five requests of one persona, each with a fresh context
        CachingToolContext(tools, cache).parse_function_tools("openai", strict=True)
    assert len(built) == len(tools)
    # livekit's own context builds them all again on every request
    llm.ToolContext(tools).parse_function_tools("openai", strict=True)
    assert len(built) == 2 * len(tools)


async def test_the_plugins_stream_reads_the_cache(tools) -> None:
    """livekit's private `_tool_ctx` is what the OpenAI plugin's stream builds its request's
    tools from: this fails if livekit renames it."""
    model = OpenAILLM(model="gpt-4o-mini", api_key="sk-unused", base_url="http://127.0.0.1:9/v1")
    stream = model.chat(chat_ctx=llm.ChatContext.empty(), tools=tools)
    try:
        assert isinstance(stream._tool_ctx, CachingToolContext)
        assert stream._tool_ctx._cache is model.schemas
    finally:
        await stream.aclose()
        await model.aclose()


def test_a_stream_without_the_private_attribute_fails_loudly(tools) -> None:
    class Changed:
        pass

    with pytest.raises(RuntimeError, match="_tool_ctx"):
        use_schema_cache(Changed(), tools, SchemaCache())  # type: ignore[arg-type]
