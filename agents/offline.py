"""The offline model: a real llm.LLM that speaks a persona's scenario script, in order.

A documented demo and testing model (`workers.simulate` uses it when OPENAI_API_KEY is not
set). It needs no network and is deterministic: the same script and the same offered tools
give the same replies, tool calls and call ids every time.

Each generation takes the next script line. A line with a tool makes the model call that tool
(if it is offered to this persona here); when the framework calls the model again with the
tool's output, it says the line's `say`. A line with only `say` is said at once. With no lines
left, it says plainly that it is the offline model with nothing scripted left.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from livekit.agents import llm
from livekit.agents.types import NotGivenOr
from livekit.agents.vad import VAD

from agents.espeak_tts import EspeakTTS, espeak_voice_for, synthesize_pcm
from agents.scripted_llm import Reply, ScriptedLLM
from agents.session_models import SessionModels
from agents.sphinx_stt import SphinxSTT, shared_recognizer
from config.catalog import Persona
from config.scenario import Scenario, ScriptLine

PREFIX = "(offline model)"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class _Pending:
    call_id: str
    line: ScriptLine


def _tool_output(chat_ctx: llm.ChatContext, call_id: str) -> llm.FunctionCallOutput | None:
    for item in reversed(chat_ctx.items):
        if item.type == "function_call_output" and item.call_id == call_id:
            return item
    return None


class OfflineLLM(ScriptedLLM[Reply]):
    def __init__(self, lines: Sequence[ScriptLine], *, me: str, names: Mapping[str, str]) -> None:
        """`names`: role -> persona name, for the {dispatcher}, {driver}, ... placeholders."""
        super().__init__(model="offline-script", provider="offline")
        self._lines = tuple(lines)
        self._me = me
        self._names = {**names, "me": me}
        self._slug = re.sub(r"[^a-z0-9]+", "-", me.casefold()).strip("-") or "persona"
        self._next = 0
        self._generations = 0
        self._pending: _Pending | None = None

    @property
    def lines_left(self) -> int:
        return len(self._lines) - self._next

    def fill(self, text: str) -> str:
        """Replace {me}, {dispatcher}, ... with cast names; unknown placeholders stay as is."""
        return _PLACEHOLDER.sub(lambda m: self._names.get(m.group(1), m.group(0)), text)

    def _reply(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        tool_choice: NotGivenOr[llm.ToolChoice],
    ) -> Reply:
        return self.next_reply(chat_ctx, {t.id for t in tools})

    def next_reply(self, chat_ctx: llm.ChatContext, offered: set[str]) -> Reply:
        """The next generation for this context and these offered tool names (also what the
        tests' OpenAI-compatible server answers with, from the request it was sent)."""
        self._generations += 1
        rid = f"offline-{self._slug}-{self._generations}"
        text, tool_call = self._respond(chat_ctx, offered)
        return Reply(
            rid,
            text=text,
            tool_calls=(tool_call,) if tool_call else (),
            completion_tokens=len(text.split()),
        )

    def _respond(
        self, chat_ctx: llm.ChatContext, offered: set[str]
    ) -> tuple[str, llm.FunctionToolCall | None]:
        """The next line's text, or its tool call (then its text once the tool has run)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            out = _tool_output(chat_ctx, pending.call_id)
            if out is not None:  # the framework ran our tool call: finish the line
                if out.is_error:
                    return f"{PREFIX} {pending.line.tool} failed: {out.output}", None
                return self.fill(pending.line.say), None
            # no output (interrupted, or a tool that wants no reply): that line is over
        if self._next >= len(self._lines):
            return (
                f"{PREFIX} This is {self._me}'s offline model, and I have nothing "
                "scripted left to say.",
                None,
            )
        line = self._lines[self._next]
        self._next += 1
        if line.tool is None:
            return self.fill(line.say), None
        if line.tool not in offered:
            return f"{PREFIX} {line.tool} is not available to me here.", None
        call_id = f"offline-{self._slug}-call-{self._next}"
        self._pending = _Pending(call_id, line)
        arguments = json.dumps(line.args, sort_keys=True)
        return "", llm.FunctionToolCall(name=line.tool, arguments=arguments, call_id=call_id)


def offline_models(
    persona: Persona,
    scenario: Scenario,
    cast_names: Mapping[str, str],
    *,
    voice: bool = False,
    hears_humans: bool = False,
    vad: VAD | None = None,
) -> SessionModels:
    """The offline model speaking `persona`'s role script; `cast_names`: role -> name.

    `voice`: also the offline voice, an eSpeak NG TTS with the persona's own voice; the persona
    that `hears_humans` also gets `vad` and a pocketsphinx STT that knows the scenario's human
    lines. Without `voice`, text only (the local stage)."""
    lines = scenario.script.get(persona.role, ())
    models = SessionModels(llm=OfflineLLM(lines, me=persona.name, names=cast_names), offline=True)
    if not voice:
        return models
    models.tts = EspeakTTS(voice=persona.voice, key=persona.id)
    if hears_humans:
        if vad is None:
            raise ValueError(f"{persona.id} hears the humans: pass the process's silero VAD")
        models.vad = vad
        models.stt = SphinxSTT(phrases=scenario.human_lines, vad=vad)  # streams: see its doc
    return models


def warm_offline_voice() -> None:
    """Load eSpeak NG and the pocketsphinx decoder now (a job process's setup), not on the
    event loop at a room's first word (~0.5 s)."""
    synthesize_pcm("ready", espeak_voice_for("alloy"))
    shared_recognizer().load()
