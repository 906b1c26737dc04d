"""The paid-model path on the real server: a pipeline lead hears a caller through the OpenAI
STT and workers/openai_server's /audio/transcriptions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from livekit import api

from tests.live.harness import (
    current_events,
    dispatch,
    human_token,
    joined,
    server_api,
    transcript_event,
    transcript_of,
    unique,
)
from tests.live.test_openai_live import served_worker
from tests.live.test_voices import microphone, speak

pytestmark = pytest.mark.live


async def test_a_pipeline_lead_hears_a_spoken_line_through_transcriptions(tmp_path: Path) -> None:
    """inbound_support with Alex (the lead) and Sam on pipeline models: the caller speaks on a
    microphone track; Alex's VAD cuts the line, the OpenAI STT sends it to
    /audio/transcriptions, and exactly one persona answers it, once."""
    modes = {"alex": "pipeline", "sam": "pipeline"}
    room = unique("hear")
    line = "Hi, my blender arrived with a cracked jar. Order 88123."
    inactive = ("jordan", "priya")
    async with served_worker(tmp_path, "inbound_support", modes, inactive) as (worker, server):
        async with server_api() as lk:
            await dispatch(lk, worker.agent_name, room, json.dumps({"scenario": "inbound_support"}))
            async with joined(human_token(room, "caller-voice")) as caller:
                source = await microphone(caller)
                await transcript_event(worker, room, "utterance", timeout=60)
                await speak(source, line)
                heard = await transcript_event(worker, room, "human", timeout=30)
                async with asyncio.timeout(60):
                    while not [
                        e
                        for e in current_events(worker, room)
                        if e["event"] == "utterance" and e["at"] > heard["at"]
                    ]:
                        await asyncio.sleep(0.1)
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        events = await transcript_of(worker, room)
        heard_by_server = list(server.heard)
    assert heard["text"] in heard_by_server  # the line came from /audio/transcriptions
    words = set(heard["text"].lower().replace(".", "").split())
    assert {"blender", "cracked", "jar"} <= words, heard["text"]
    assert len([e for e in events if e["event"] == "human"]) == 1
    replies = [e for e in events if e["event"] == "utterance" and e["at"] > heard["at"]]
    assert len({r["persona"] for r in replies}) == 1 and replies[0]["persona"] == "alex"
