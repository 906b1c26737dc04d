"""The aiohttp application: routes, the key check, and the injected faults."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from agents.offline import OfflineLLM
from config.catalog import Persona
from config.scenario import Scenario
from workers.openai_server.chat import chat_context, offered_tools, sse, sse_chunks
from workers.openai_server.faults import Fault, Faults
from workers.openai_server.speech import Ears, Voices, as_wav, speak, speak_stream

KEY = "sk-local-test-server"


def scripted_brains(scenario: Scenario, cast: Mapping[str, Persona]) -> dict[str, OfflineLLM]:
    """Per persona id, the offline model speaking its role's script (`cast`: role -> persona),
    exactly as agents.offline.offline_models builds it."""
    names = {role: p.name for role, p in cast.items()}
    return {
        p.id: OfflineLLM(scenario.script.get(role, ()), me=p.name, names=names)
        for role, p in cast.items()
    }


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None):
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return web.json_response(body, status=status, headers=headers)


class OpenAIServer:
    """Serves each persona of `brains` at http://127.0.0.1:PORT/<persona id>/v1."""

    def __init__(
        self,
        brains: Mapping[str, OfflineLLM],
        *,
        human_lines: Sequence[str] = (),
        key: str = KEY,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.brains = dict(brains)
        self.key = key
        self.host = host
        self.faults = Faults()
        self.said: dict[str, list[str]] = {}  # persona -> every line it spoke, in order
        self.heard: list[str] = []  # what transcriptions returned, in order
        # realtime: per persona, the text of each user message the client created (the floor's
        # relay of the other personas' lines), and the audio bytes it appended
        self.relayed: dict[str, list[str]] = {}
        self.audio_in: dict[str, int] = {}
        self.ears = Ears(human_lines)
        self.voices = Voices()
        self.sockets: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        self.port = port  # 0: a free port, chosen at start

    def base_url(self, persona: str) -> str:
        return f"http://{self.host}:{self.port}/{persona}/v1"

    async def start(self) -> None:
        from workers.openai_server.realtime import realtime_socket

        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/{persona}/v1/chat/completions", self._chat)
        app.router.add_post("/{persona}/v1/audio/speech", self._speech)
        app.router.add_post("/{persona}/v1/audio/transcriptions", self._transcriptions)

        # the realtime plugin keeps a base URL's own path: /tim/v1 (and /tim/v1/realtime)
        async def socket_route(request: web.Request) -> web.StreamResponse:
            return await realtime_socket(self, request)

        app.router.add_get("/{persona}/v1", socket_route)
        app.router.add_get("/{persona}/v1/realtime", socket_route)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.voices.aclose()

    # -- shared checks --------------------------------------------------------------------

    async def admit(self, request: web.Request, route: str) -> str | web.StreamResponse:
        """The persona the request is for; or the response instead of an answer: the error
        for a wrong key or an unknown persona, or the fault to inject."""
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        persona = request.match_info["persona"]
        if persona not in self.brains:
            return _error(404, f"no persona {persona!r} on this server", "model_not_found")
        fault = self.faults.next(route, persona)
        return persona if fault is None else await self.fault_response(request, fault)

    async def stream(
        self, request: web.Request, request_id: str, events: Iterable[dict[str, Any]]
    ) -> web.StreamResponse:
        """`events` as a 200 server-sent-events stream, then [DONE]."""
        headers = {"Content-Type": "text/event-stream", "x-request-id": request_id}
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        for event in events:
            await response.write(sse(event))
        await response.write(sse("[DONE]"))
        await response.write_eof()
        return response

    @staticmethod
    async def fault_response(request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.kind == "status":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            code = "rate_limit_exceeded" if fault.status == 429 else "server_error"
            return _error(fault.status, f"injected {fault.status}", code, headers)
        if fault.kind == "stall":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await asyncio.Event().wait()  # until the client gives up and disconnects
        if fault.kind == "malformed":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b'data: {"id": "broken", "choices": [\n\n')
            await response.write(sse("[DONE]"))
            return response
        raise ValueError(f"fault {fault.kind!r} does not apply to an HTTP route")

    def spoke(self, persona: str, text: str) -> None:
        if text:
            self.said.setdefault(persona, []).append(text)

    # -- routes ---------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        persona = await self.admit(request, "chat")
        if not isinstance(persona, str):
            return persona
        body = await request.json()
        if not body.get("stream"):
            return _error(400, "this server only streams: send stream=true", "stream_required")
        reply = self.brains[persona].next_reply(
            chat_context(body.get("messages", [])), offered_tools(body)
        )
        self.spoke(persona, reply.text)
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self.stream(
            request, reply.id, sse_chunks(reply, body.get("model", ""), usage=usage)
        )

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        persona = await self.admit(request, "speech")
        if not isinstance(persona, str):
            return persona
        body = await request.json()
        fmt = body.get("response_format", "mp3")
        if fmt not in ("pcm", "wav"):
            return _error(400, f"response_format {fmt!r}: this server makes pcm or wav", "format")
        text = body.get("input", "")
        request_id = f"speech-{persona}-{self.faults.requests['speech']}"
        if body.get("stream_format") != "sse":
            pcm = await asyncio.to_thread(speak, text, body.get("voice", ""), persona)
            audio = pcm if fmt == "pcm" else as_wav(pcm)
            headers = {"x-request-id": request_id}
            return web.Response(body=audio, content_type=f"audio/{fmt}", headers=headers)
        headers = {"Content-Type": "text/event-stream", "x-request-id": request_id}
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        size = 0
        async for chunk in speak_stream(self.voices.of(body.get("voice", ""), persona), text):
            size += len(chunk)
            delta = base64.b64encode(chunk).decode()
            await response.write(sse({"type": "speech.audio.delta", "audio": delta}))
        usage = {"input_tokens": len(text.split()), "output_tokens": size // 960}
        # OpenAI ends a speech stream with speech.audio.done, no [DONE]: the plugin stops
        # reading at a [DONE], leaving the body unfinished, so its client would drop the
        # connection and make a new one for every sentence (measured: one per request)
        await response.write(sse({"type": "speech.audio.done", "usage": usage}))
        await response.write_eof()
        return response

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        persona = await self.admit(request, "transcriptions")
        if not isinstance(persona, str):
            return persona
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return _error(400, "no file in the form", "file_required")
        text = await asyncio.to_thread(self.ears.hear_wav, upload.file.read())
        self.heard.append(text)
        return web.json_response({"text": text} if form.get("response_format") != "text" else text)
