"""The Realtime WebSocket: a session's conversation items, responses (audio + its transcript,
tool calls), and its input audio buffer with a server VAD and transcription.

The items the client creates are the conversation; a response is the persona's offline model
answering that conversation (with the session's tools), spoken with eSpeak at 24 kHz."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web
from livekit.agents import llm

from workers.openai_server.chat import words
from workers.openai_server.faults import Fault
from workers.openai_server.speech import OPENAI_RATE, speak_stream

_ids = itertools.count(1)
_WINDOW = 960  # 20 ms windows for the VAD
_SPEECH_RMS = 300  # int16 RMS above which a window is speech (eSpeak speaks well above it)


def _rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


def _id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):06d}"


def _item_text(item: dict[str, Any]) -> str:
    parts = []
    for c in item.get("content") or ():
        parts.append(c.get("text") or c.get("transcript") or "")
    return "".join(parts)


def _chat_context(items: list[dict[str, Any]]) -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    for item in items:
        kind = item.get("type")
        if kind == "message" and (text := _item_text(item)):
            role = item.get("role", "user")
            ctx.add_message(role="system" if role == "developer" else role, content=text)
        elif kind == "function_call":
            ctx.items.append(
                llm.FunctionCall(
                    call_id=item.get("call_id", ""),
                    name=item.get("name", ""),
                    arguments=item.get("arguments", ""),
                )
            )
        elif kind == "function_call_output":
            ctx.items.append(
                llm.FunctionCallOutput(
                    call_id=item.get("call_id", ""),
                    output=item.get("output", ""),
                    is_error=False,
                    name="",
                )
            )
    return ctx


class RealtimeSession:
    def __init__(self, server: Any, persona: str, ws: web.WebSocketResponse) -> None:
        self.server = server
        self.persona = persona
        self.ws = ws
        self.session: dict[str, Any] = {"type": "realtime", "instructions": "", "tools": []}
        self.items: list[dict[str, Any]] = []
        self.response: asyncio.Task[None] | None = None
        # input audio and the server VAD
        self.buffer = bytearray()
        self.speaking = False
        self.silence_ms = 0
        self.buffer_ms = 0
        self.speech_item = ""

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", _id("event"))
        if not self.ws.closed:
            await self.ws.send_json(event)

    async def error(self, message: str, code: str, event_id: str | None = None) -> None:
        await self.send(
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": code,
                    "message": message,
                    "param": None,
                    "event_id": event_id,
                },
            }
        )

    # -- session and conversation ---------------------------------------------------------

    def _audio_config(self, side: str) -> dict[str, Any]:
        return (self.session.get("audio") or {}).get(side) or {}

    @property
    def voice(self) -> str:
        return self._audio_config("output").get("voice") or "marin"

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        return self._audio_config("input").get("turn_detection")

    @property
    def transcribes(self) -> bool:
        return bool(self._audio_config("input").get("transcription"))

    async def session_update(self, ev: dict[str, Any]) -> None:
        update = ev.get("session") or {}
        audio = update.pop("audio", None)
        self.session.update(update)
        if audio:
            merged = self.session.setdefault("audio", {})
            for side, config in audio.items():
                merged.setdefault(side, {}).update(config or {})
        await self.send({"type": "session.updated", "session": self.session})

    def _tail(self) -> str | None:
        return self.items[-1]["id"] if self.items else None

    async def add_item(self, item: dict[str, Any], previous: str | None = "") -> None:
        """Insert `item` after `previous` ("root": first; "" or None: at the end)."""
        if previous == "root":
            index = 0
        elif previous:
            ids = [i["id"] for i in self.items]
            index = ids.index(previous) + 1 if previous in ids else len(self.items)
        else:
            index = len(self.items)
        self.items.insert(index, item)
        prev_id = self.items[index - 1]["id"] if index > 0 else None
        await self.send(
            {"type": "conversation.item.added", "previous_item_id": prev_id, "item": item}
        )

    async def item_create(self, ev: dict[str, Any]) -> None:
        item = dict(ev.get("item") or {})
        item.setdefault("id", _id("item"))
        item.setdefault("object", "realtime.item")
        item.setdefault("status", "completed")
        if any(i["id"] == item["id"] for i in self.items):
            await self.error(
                f"item {item['id']} already exists",
                "item_create_duplicate_item_id",
                ev.get("event_id"),
            )
            return
        await self.add_item(item, ev.get("previous_item_id"))
        await self.send({"type": "conversation.item.done", "previous_item_id": None, "item": item})
        if item.get("type") == "message" and item.get("role") == "user":
            self.server.relayed.setdefault(self.persona, []).append(_item_text(item))

    async def item_delete(self, ev: dict[str, Any]) -> None:
        item_id = ev.get("item_id")
        kept = [i for i in self.items if i["id"] != item_id]
        if len(kept) == len(self.items):
            await self.error(
                f"no item {item_id}", "item_delete_invalid_item_id", ev.get("event_id")
            )
            return
        self.items = kept
        await self.send({"type": "conversation.item.deleted", "item_id": item_id})

    # -- responses ------------------------------------------------------------------------

    async def response_create(self, ev: dict[str, Any]) -> None:
        if self.response is not None and not self.response.done():
            await self.error(
                "Conversation already has an active response",
                "conversation_already_has_active_response",
                ev.get("event_id"),
            )
            return
        fault = self.server.faults.next("realtime", self.persona)
        params = ev.get("response") or {}
        self.response = asyncio.create_task(self._respond(params, fault))

    async def response_cancel(self) -> None:
        if self.response is not None and not self.response.done():
            self.response.cancel()

    async def _respond(self, params: dict[str, Any], fault: Fault | None) -> None:
        output: list[dict[str, Any]] = []
        response: dict[str, Any] = {
            "id": _id("resp"),
            "object": "realtime.response",
            "status": "in_progress",
            "output": output,
            "metadata": params.get("metadata"),
            "usage": None,
        }
        await self.send({"type": "response.created", "response": dict(response)})
        try:
            if fault is not None and fault.kind == "stall":
                await asyncio.Event().wait()
            if fault is not None and fault.kind == "status":
                kind = "rate_limit_exceeded" if fault.status == 429 else "server_error"
                details = {"type": "failed", "error": {"type": kind, "code": kind}}
                done = {**response, "status": "failed", "status_details": details}
                await self.send({"type": "response.done", "response": done})
                return
            tools = {
                t.get("name") for t in (params.get("tools") or self.session.get("tools") or [])
            }
            brain = self.server.brains[self.persona]
            reply = brain.next_reply(_chat_context(self.items), {t for t in tools if t})
            for index, call in enumerate(reply.tool_calls):
                output.append(await self._call(call, index))
            if fault is not None and fault.kind == "close" and not reply.text:
                await self.ws.close()  # mid-response, its calls sent but not its end
                raise asyncio.CancelledError
            if reply.text:
                output.append(await self._message(reply.text, len(output), fault))
            response["status"] = "completed"
            tokens = reply.completion_tokens
            response["usage"] = {
                "total_tokens": tokens,
                "input_tokens": 0,
                "output_tokens": tokens,
                "input_token_details": {"text_tokens": 0, "audio_tokens": 0, "cached_tokens": 0},
                "output_token_details": {"text_tokens": tokens, "audio_tokens": 0},
            }
            await self.send({"type": "response.done", "response": response})
        except asyncio.CancelledError:
            response["status"] = "cancelled"
            response["status_details"] = {"type": "cancelled", "reason": "client_cancelled"}
            with contextlib.suppress(Exception):
                await self.send({"type": "response.done", "response": response})
            raise

    async def _call(self, call: llm.FunctionToolCall, index: int) -> dict[str, Any]:
        item = {
            "id": _id("item"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": call.name,
            "call_id": call.call_id,
            "arguments": "",
        }
        await self.send({"type": "response.output_item.added", "output_index": index, "item": item})
        await self.add_item(item)
        item.update(arguments=call.arguments, status="completed")
        await self.send(
            {
                "type": "response.function_call_arguments.done",
                "item_id": item["id"],
                "output_index": index,
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            }
        )
        await self.send({"type": "response.output_item.done", "output_index": index, "item": item})
        return item

    async def _message(self, text: str, index: int, fault: Fault | None) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": _id("item"),
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        await self.send({"type": "response.output_item.added", "output_index": index, "item": item})
        await self.add_item(item)
        part = {"type": "audio", "transcript": ""}
        await self.send({"type": "response.content_part.added", **where, "part": part})
        for piece in words(text):
            await self.send(
                {"type": "response.output_audio_transcript.delta", **where, "delta": piece}
            )
        self.server.spoke(self.persona, text)  # its transcript is out: said, audio to follow
        n = 0
        async for chunk in speak_stream(self.server.voices.of(self.voice, self.persona), text):
            if fault is not None and fault.kind == "close" and n == 2:
                await self.ws.close()  # mid-response: the client sees the socket go
                raise asyncio.CancelledError
            n += 1
            delta = base64.b64encode(chunk).decode()
            await self.send({"type": "response.output_audio.delta", **where, "delta": delta})
        await self.send({"type": "response.output_audio.done", **where})
        await self.send(
            {"type": "response.output_audio_transcript.done", **where, "transcript": text}
        )
        part = {"type": "audio", "transcript": text}
        await self.send({"type": "response.content_part.done", **where, "part": part})
        item.update(status="completed", content=[{"type": "output_audio", "transcript": text}])
        await self.send({"type": "response.output_item.done", "output_index": index, "item": item})
        return item

    # -- input audio ------------------------------------------------------------------------

    async def append(self, ev: dict[str, Any]) -> None:
        audio = base64.b64decode(ev.get("audio", ""))
        self.server.audio_in[self.persona] = self.server.audio_in.get(self.persona, 0) + len(audio)
        self.buffer += audio
        self.buffer_ms += len(audio) * 1000 // (2 * OPENAI_RATE)
        td = self.turn_detection
        if td is None:
            return
        # the server VAD: speech by energy, its end after `silence_duration_ms` of quiet
        silence_needed = int(td.get("silence_duration_ms") or 500)
        for i in range(0, len(audio) - _WINDOW * 2 + 1, _WINDOW * 2):
            loud = _rms(audio[i : i + _WINDOW * 2]) > _SPEECH_RMS
            if loud and not self.speaking:
                self.speaking, self.silence_ms = True, 0
                self.speech_item = _id("item")
                await self.send(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": self.buffer_ms,
                        "item_id": self.speech_item,
                    }
                )
            elif self.speaking:
                self.silence_ms = 0 if loud else self.silence_ms + 20
                if self.silence_ms >= silence_needed:
                    self.speaking = False
                    await self.send(
                        {
                            "type": "input_audio_buffer.speech_stopped",
                            "audio_end_ms": self.buffer_ms,
                            "item_id": self.speech_item,
                        }
                    )
                    await self.commit(self.speech_item, td.get("create_response", True))

    async def commit(self, item_id: str | None = None, respond: bool = False) -> None:
        pcm, self.buffer = bytes(self.buffer), bytearray()
        if len(pcm) < OPENAI_RATE * 2 // 10:  # under 100 ms
            await self.error("buffer too small", "input_audio_buffer_commit_empty")
            return
        item_id = item_id or _id("item")
        previous = self._tail()
        await self.send(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": previous,
            }
        )
        content = {"type": "input_audio", "transcript": None}
        item = {"id": item_id, "object": "realtime.item", "type": "message", "status": "completed",
                "role": "user", "content": [content]}  # fmt: skip
        await self.add_item(item)
        if self.transcribes:
            text = await asyncio.to_thread(self.server.ears.hear_pcm, pcm)
            content["transcript"] = text
            self.server.heard.append(text)
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": text,
                }
            )
        if respond:
            await self.response_create({})

    async def handle(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "session.update":
            await self.session_update(ev)
        elif kind == "conversation.item.create":
            await self.item_create(ev)
        elif kind == "conversation.item.delete":
            await self.item_delete(ev)
        elif kind == "response.create":
            await self.response_create(ev)
        elif kind == "response.cancel":
            await self.response_cancel()
        elif kind == "input_audio_buffer.append":
            await self.append(ev)
        elif kind == "input_audio_buffer.commit":
            await self.commit()
        elif kind == "input_audio_buffer.clear":
            self.buffer, self.speaking = bytearray(), False
            await self.send({"type": "input_audio_buffer.cleared"})
        else:
            await self.error(f"unknown event type {kind!r}", "unknown_event", ev.get("event_id"))


async def realtime_socket(server: Any, request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization") != f"Bearer {server.key}":
        return web.json_response(
            {"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}},
            status=401,
        )
    persona = request.match_info["persona"]
    if persona not in server.brains:
        return web.json_response({"error": {"message": f"no persona {persona!r}"}}, status=404)
    ws = web.WebSocketResponse(max_msg_size=32 * 1024 * 1024)
    await ws.prepare(request)
    server.sockets.add(ws)
    session = RealtimeSession(server, persona, ws)
    await session.send({"type": "session.created", "session": session.session})
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            await session.handle(msg.json())
    finally:
        server.sockets.discard(ws)
        if session.response is not None:
            session.response.cancel()
            with contextlib.suppress(BaseException):
                await session.response
    return ws
