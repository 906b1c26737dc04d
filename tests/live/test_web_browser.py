"""The page in a real browser (Debian's chromium, headless, driven by puppeteer-core) against
the real server and worker, all inside the live suite's namespace: the page creates the room
through the API, shows a tile per persona with its name and role, plays every persona's voice
(audio energy measured in the page), gets a chat line answered, greets a person who opens a
room's link after the personas are waiting, and leaving ends the room.

Without chromium, node or puppeteer-core these tests skip with one line (`make browser`
installs them); with CI=true they fail."""

from __future__ import annotations

import asyncio
import json
import os
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from agents.espeak_tts import espeak_voice_for, synthesize_pcm
from config.catalog import load_catalog
from config.settings import PROJECT_ROOT
from tests.live.browser import Browser, browser, missing
from tests.live.harness import (
    WorkerProcess,
    current_events,
    transcript_event,
    transcript_of,
    unique,
)
from tests.live.web import WebProcess, web_server

pytestmark = pytest.mark.live

AUDIBLE_PEAK = 0.02  # RMS in the page's own meter; the fake silence of an idle track is 0
PERSONA_NAMES = {
    p.id: p.name for p in load_catalog(PROJECT_ROOT / "config" / "catalog.json").personas
}


@pytest.fixture(scope="module", autouse=True)
def _browser_installed() -> None:
    lacking = missing()
    if not lacking:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests: {lacking}")
    pytest.skip(f"browser tests skipped: {lacking}")


@pytest.fixture(scope="module")
def web(module_tmp: Path, worker: WorkerProcess) -> Iterator[WebProcess]:
    with web_server(module_tmp, worker.agent_name) as server:  # loopback, no key
        yield server


@pytest.fixture
async def page() -> AsyncIterator[Browser]:
    async with browser() as b:
        yield b


async def create_through_page(page: Browser, web: WebProcess, scenario: str) -> dict:
    """What a person does: open the page, pick the scenario, type a name, press Enter."""
    await page.call("goto", url=web.url)
    await page.until(
        "[...document.querySelectorAll('#scenario option')]"
        f".some(o => o.value === {json.dumps(scenario)})"
    )
    await page.eval(f"document.getElementById('scenario').value = {json.dumps(scenario)}")
    await page.call("type", selector="#display-name", text="Jamie")
    await page.call("press", key="Enter")
    return await page.until("window.webRoom.snapshot().connected && window.webRoom.snapshot()")


async def greeted(page: Browser, web: WebProcess, worker: WorkerProcess) -> dict:
    """An inbound_support room made through the page, once the opener's greeting is in its
    transcript (so what the human says next is a turn of its own)."""
    joined = await create_through_page(page, web, "inbound_support")
    await worker.wait_for("job_accepted", room=joined["room"])
    await page.until(
        "window.webRoom.snapshot().transcript"
        ".some(l => l.identity.startsWith('agent_') && l.final)",
        timeout=60,
    )
    return joined


ANSWERED_AFTER_YOU = (
    "(s => { const i = s.transcript.findIndex(l => l.who === 'You');"
    " return i >= 0 && s.transcript.slice(i + 1).find(l =>"
    " l.identity.startsWith('agent_') && l.final && l.text.trim()) })"
    "(window.webRoom.snapshot())"
)


async def test_page_shows_every_persona_by_name_and_role_and_plays_each_voice(
    page: Browser, web: WebProcess, worker: WorkerProcess
):
    joined = await create_through_page(page, web, "dispatch_checkin")
    room = joined["room"]
    assert room.startswith("dispatch_checkin-") and joined["identity"].startswith("web-jamie-")
    accepted = await worker.wait_for("job_accepted", room=room)
    cast: dict[str, str] = accepted["cast"]  # role -> persona id

    tiles = await page.until(
        f"(s => s.tiles.length === {len(cast)} && s.tiles.every(t => t.role !== 'persona')"
        " && s.tiles)(window.webRoom.snapshot())"
    )
    assert sorted((t["role"], t["name"]) for t in tiles) == sorted(
        (role, PERSONA_NAMES[pid]) for role, pid in cast.items()
    )
    # each persona's voice, measured from its track in the page
    heard = await page.until(
        f"(s => s.tiles.every(t => t.peak > {AUDIBLE_PEAK}) && s.tiles)(window.webRoom.snapshot())",
        timeout=90,
    )
    assert all(t["firstAudioMs"] is not None for t in heard)
    # the tiles are what a person sees: name and role in the page's text
    text = await page.eval("document.getElementById('tiles').innerText")
    for role, pid in cast.items():
        assert PERSONA_NAMES[pid] in text and role in text.lower()
    states = {t["state"] for t in heard}
    assert states <= {"listening", "thinking", "speaking", "initializing", "joining", "idle"}
    # captions: the personas' transcription streams, live and in the transcript panel
    said = await page.until(
        "(s => s.transcript.filter(l => l.final && l.text.trim()).length >= 3 && s)"
        "(window.webRoom.snapshot())",
        timeout=60,
    )
    speakers = {line["identity"] for line in said["transcript"]}
    assert speakers == {t["identity"] for t in heard}
    assert said["caption"].split(": ", 1)[0] in {PERSONA_NAMES[p] for p in cast.values()}
    if shots := os.environ.get("WEB_SCREENSHOTS"):  # the README's pictures
        await page.call("screenshot", path=f"{shots}/web-room.png", width=1100, height=720)
        await page.call("screenshot", path=f"{shots}/web-room-phone.png", width=390, height=844)


async def test_a_chat_line_is_answered_and_leaving_ends_the_room(
    page: Browser, web: WebProcess, worker: WorkerProcess
):
    joined = await greeted(page, web, worker)
    room = joined["room"]

    await page.call("type", selector="#chat", text="Hi, my order has not arrived")
    await page.call("press", key="Enter")
    answer = await page.until(ANSWERED_AFTER_YOU, timeout=60)
    assert answer["text"].strip()
    events = current_events(worker, room)
    human = [e for e in events if e["event"] == "human"]
    assert [e["text"] for e in human] == ["Hi, my order has not arrived"]
    assert human[0]["identity"] == joined["identity"]

    await page.call("click", selector="#leave")
    await page.until("window.webRoom.snapshot().left")
    ended = await transcript_of(worker, room, timeout=30)
    assert ended[-1]["event"] == "room_ended" and ended[-1]["reason"] == "humans_left"


async def test_a_person_who_opens_the_link_late_is_greeted_once(
    page: Browser, web: WebProcess, worker: WorkerProcess
):
    """The room is made first (the rooms API) and the personas are in it, waiting; only then
    does the person open the room's link. The opener greets them, once."""
    room = unique("late")
    body = {"scenario": "inbound_support", "identity": "web-early", "room": room}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{web.url}api/v1/rooms/create", json=body) as res:
            assert res.status == 201, await res.text()
        accepted = await worker.wait_for("job_accepted", room=room)
        async with asyncio.timeout(60):  # every persona joined and waiting for a human
            while True:
                async with http.get(f"{web.url}api/v1/rooms/{room}") as res:
                    people = (await res.json()).get("participants", [])
                if len([p for p in people if p["kind"] == "agent"]) == len(accepted["cast"]):
                    break
                await asyncio.sleep(0.2)
    assert not [e for e in current_events(worker, room) if e["event"] == "utterance"]

    await page.call("goto", url=f"{web.url}?room={room}")
    await page.until("document.getElementById('link-room').textContent.length > 0")
    await page.call("type", selector="#display-name", text="Jamie")
    await page.call("press", key="Enter")
    await page.until("window.webRoom.snapshot().connected")
    greeting = await page.until(
        "window.webRoom.snapshot().transcript"
        ".find(l => l.identity.startsWith('agent_') && l.final && l.text.trim())",
        timeout=60,
    )
    assert greeting["text"].strip()
    await page.call("click", selector="#leave")
    events = await transcript_of(worker, room, timeout=30)
    assert events[-1]["reason"] == "humans_left"
    (awaited,) = [e for e in events if e["event"] == "human_awaited"]
    assert awaited["arrived"] is True and awaited["waited_s"] > 0
    spoken = [e for e in events if e["event"] == "utterance"]
    assert len(spoken) == 1, spoken  # one greeting, to the person who came
    assert spoken[0]["persona"] == accepted["cast"]["support"]


def _spoken_wav(path: Path, text: str) -> Path:
    """`text` in a caller's eSpeak voice as a mono WAV, the way a person speaks once the
    microphone is on: 2 s of silence first (Chromium's fake microphone plays from the moment
    the page opens it, before the track is published), 2 s after (the listener's VAD needs
    the end of speech). Chromium plays it once."""
    rate, pcm = synthesize_pcm(text, espeak_voice_for("fable", "caller"))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        silence = bytes(2 * rate * 2)  # 2 s of 16-bit samples
        out.writeframes(silence + pcm + silence)
    return path


async def test_a_line_spoken_into_the_pages_microphone_is_heard_and_answered(
    module_tmp: Path, web: WebProcess, worker: WorkerProcess
):
    line = "Hi, my blender arrived with a cracked jar. Order 88123."
    wav = _spoken_wav(module_tmp / "browser-line.wav", line)
    async with browser(wav) as page:
        joined = await greeted(page, web, worker)
        room = joined["room"]
        said = (
            "window.webRoom.snapshot().transcript.filter(l => l.identity.startsWith('agent_')"
            " && l.final && l.text.trim()).length"
        )
        before = await page.eval(said)
        # the fake microphone starts playing when the page opens it: after the greeting
        await page.call("click", selector="#mic")
        await page.until("window.webRoom.snapshot().micEnabled")
        heard = await transcript_event(worker, room, "human", timeout=60)
        assert heard["text"] == line and heard["identity"] == joined["identity"]
        await page.until(f"{said} > {before}", timeout=60)  # the answer, heard in the page
        await page.call("click", selector="#leave")
    events = await transcript_of(worker, room, timeout=30)
    assert [e["text"] for e in events if e["event"] == "human"] == [line]
    replies = [e for e in events if e["event"] == "utterance" and e["at"] > heard["at"]]
    assert replies and replies[0]["text"].strip()
