"""Page opened -> first persona audio, over N joins, split into its stages:
`tests/live/livenet.sh run .venv/bin/python -m tests.live.browser.first_audio [--joins 10]
[--scenario dispatch_checkin]`.

One warm worker and one `workers.web`, in the live suite's namespace; each join is a fresh
page (a new browser context of one running headless chromium, or with --browser-per-join a new
chromium) opened on `/?scenario=S&name=Jamie&autojoin=1`, which creates the room through the
API and joins it. Times are seconds since the page's navigation start: the page's
own milestones (`window.webRoom.snapshot().marks`: script running, scenario list, create sent
and answered, connected, first persona seen, its track subscribed, first audio: the first 50 ms
window in which a persona's track carries audio, RMS over 0.01), and the worker's, from its log
and the room's transcript, put on the page's clock through `performance.timeOrigin` (one
machine, one clock): job received, job process running, its connection, the other personas'
connections, the opener's reply asked for and its first frame played out. Each room is then
deleted. Each join waits for the worker to have a prewarmed job process ready (the pool refills
in seconds under load; that is not what a page opened on a running worker waits for). Prints
one JSON object: the figure, every milestone and the stages between them (p50/p95 of each),
and the rows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.live.browser import Browser, browser, missing
from tests.live.harness import WorkerProcess, transcript_of, unique
from tests.live.web import web_server

# The page's marks (app.js `mark()`), in the order the page reaches them.
PAGE_MARKS = (
    "script",
    "scenarios",
    "apiSent",
    "apiAnswered",
    "connected",
    "personaSeen",
    "trackSubscribed",
    "firstAudio",
)
# The worker's milestones: log event -> name (the last one of each, for the room).
WORKER_LOG = {
    "received job request": "jobReceived",  # the main process took the server's job
    "job_started": "jobStarted",  # the job process runs the job
    "job_connecting": "jobConnecting",  # its plan read, its stage made: the connections start
    "job_connected": "jobConnected",  # the job's own connection (the first persona)
}
# Stage name -> (from, to): milestones, "nav" is navigation start (0).
STAGES = {
    "page load (navigation -> script running)": ("nav", "script"),
    "scenario list (script -> create sent)": ("script", "apiSent"),
    "create answered (sent -> answer)": ("apiSent", "apiAnswered"),
    "page connects (answer -> connected)": ("apiAnswered", "connected"),
    "dispatch (create sent -> job received)": ("apiSent", "jobReceived"),
    "job process (received -> running)": ("jobReceived", "jobStarted"),
    "job setup (running -> connecting)": ("jobStarted", "jobConnecting"),
    "job connects (connecting -> connected)": ("jobConnecting", "jobConnected"),
    "other personas connect (job connected -> last persona)": (
        "jobConnected",
        "personasConnected",
    ),
    "sessions start (personas connected -> reply asked)": ("personasConnected", "replyAsked"),
    "first frame (reply asked -> first frame played out)": ("replyAsked", "firstFrame"),
    "to the page (first frame -> first audio in the page)": ("firstFrame", "firstAudio"),
    "page: connected -> persona seen": ("connected", "personaSeen"),
    "page: persona seen -> its track subscribed": ("personaSeen", "trackSubscribed"),
    "page: track subscribed -> first audio": ("trackSubscribed", "firstAudio"),
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def epoch_s(timestamp: str) -> float:
    """A log line's ISO UTC timestamp as epoch seconds."""
    return datetime.fromisoformat(timestamp).timestamp()


def worker_marks(
    log_events: list[dict[str, Any]], transcript: list[dict[str, Any]], time_origin_ms: float
) -> dict[str, float]:
    """The worker's milestones for one room, in ms on the page's clock (0 at its navigation
    start): from the worker's log lines for that room and the room's transcript."""

    def page_ms(epoch: float) -> float:
        return epoch * 1000 - time_origin_ms

    marks: dict[str, float] = {}
    connected = []
    for e in log_events:
        name = e.get("event") or e.get("message")
        if name in WORKER_LOG:
            marks[WORKER_LOG[name]] = page_ms(epoch_s(e["timestamp"]))
        elif name == "persona_connected":
            connected.append(page_ms(epoch_s(e["timestamp"])))
    # the job's own persona is connected with the job; the others each on their own
    if connected or "jobConnected" in marks:
        marks["personasConnected"] = max([*connected, marks.get("jobConnected", 0.0)])
    spoke = _first_speech(transcript)
    if spoke is not None:
        asked, played = spoke
        marks["replyAsked"] = page_ms(asked)
        marks["firstFrame"] = page_ms(played)
    return marks


def _first_speech(transcript: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(reply asked, first frame played out), epoch seconds, of the persona that spoke first:
    from the personas' session reports (`speech_created`; the agent state turning `speaking`,
    which livekit sets as the first frame reaches the audio output)."""
    reports: dict[str, Any] = next(
        (e["reports"] for e in transcript if e["event"] == "session_reports"), {}
    )
    best: tuple[float, float] | None = None
    for report in reports.values():
        asked = played = None
        for ev in report.get("events", []):
            if ev.get("type") == "speech_created" and asked is None:
                asked = ev["created_at"]
            if (
                ev.get("type") == "agent_state_changed"
                and ev.get("new_state") == "speaking"
                and played is None
            ):
                played = ev["created_at"]
        if asked is not None and played is not None and (best is None or played < best[1]):
            best = (asked, played)
    return best


def summarize(rows: list[dict[str, float]]) -> dict[str, Any]:
    """p50/p95 (seconds) of every milestone and of every stage between two, over the rows
    (each row: milestone -> ms since navigation start); a stage or milestone missing from a
    row is left out of that row's figures."""

    def stats(values: list[float]) -> dict[str, float]:
        return {
            "p50": round(statistics.median(values), 3),
            "p95": round(pct(values, 0.95), 3),
            "n": len(values),
        }

    names = sorted(
        {m for row in rows for m in row},
        key=lambda m: statistics.median([row[m] for row in rows if m in row]),
    )
    milestones = {m: stats([row[m] / 1000 for row in rows if m in row]) for m in names}
    stages = {}
    for stage, (start, end) in STAGES.items():
        spans = [
            (row[end] - (0.0 if start == "nav" else row[start])) / 1000
            for row in rows
            if end in row and (start == "nav" or start in row)
        ]
        if spans:
            stages[stage] = stats(spans)
    return {"milestones_s": milestones, "stages_s": stages}


async def join_once(page: Browser, url: str) -> dict[str, Any]:
    """One page opened on `url` until it hears a persona; its snapshot. The room is deleted."""
    await page.call("goto", url=url)
    snap = await page.until(
        "(s => s.firstAudioMs !== null && s)(window.webRoom.snapshot())", timeout=60
    )
    await page.eval(
        f"fetch('/api/v1/rooms/{snap['room']}', {{method: 'DELETE'}}).then(r => r.status)"
    )
    return snap


async def warm_process(worker: WorkerProcess, timeout: float = 120.0) -> None:
    """Until the worker has a prewarmed job process no job has taken: the state a worker is
    in when a page is opened, unless rooms came faster than it prewarms (seconds, under load);
    the figure is the page's and the room's, not the pool's refill."""
    async with asyncio.timeout(timeout):
        while len(worker.named("process initialized")) <= len(worker.named("job_started")):
            await asyncio.sleep(0.1)


async def run(joins: int, scenario: str, *, browser_per_join: bool = False) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="first-audio-"))
    worker = WorkerProcess.start(tmp, agent_name=unique("first-audio"))
    try:
        await worker.ready()
        with web_server(tmp, worker.agent_name) as web:
            url = f"{web.url}?scenario={scenario}&name=Jamie&autojoin=1"
            rows = []
            async with contextlib.AsyncExitStack() as stack:
                shared = None if browser_per_join else await stack.enter_async_context(browser())
                for _ in range(joins):
                    await warm_process(worker)
                    if shared is None:
                        async with browser() as page:
                            snap = await join_once(page, url)
                    else:
                        await shared.call("newPage")  # a fresh context: nothing cached
                        snap = await join_once(shared, url)
                    room = snap["room"]
                    transcript = await transcript_of(worker, room, timeout=30)
                    logged = [e for e in worker.events() if e.get("room") == room]
                    rows.append(
                        {**snap["marks"], **worker_marks(logged, transcript, snap["timeOrigin"])}
                    )
    finally:
        worker.kill()
    audio = [r["firstAudio"] / 1000 for r in rows]
    connected = [r["connected"] / 1000 for r in rows]
    return {
        "what": "page opened (navigation start) -> first persona audio in the page, seconds",
        "scenario": scenario,
        "joins": joins,
        "browser": "a new one for each join"
        if browser_per_join
        else "one, a fresh context (no cache, no storage) for each join",
        "first_audio_s": {
            "p50": round(statistics.median(audio), 3),
            "p95": round(pct(audio, 0.95), 3),
            "min": round(min(audio), 3),
            "max": round(max(audio), 3),
        },
        "connected_s": {
            "p50": round(statistics.median(connected), 3),
            "p95": round(pct(connected, 0.95), 3),
        },
        **summarize(rows),
        "rows": [{k: round(v, 1) for k, v in row.items()} for row in rows],
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.live.browser.first_audio")
    parser.add_argument("--joins", type=int, default=10)
    parser.add_argument("--scenario", default="dispatch_checkin")
    parser.add_argument(
        "--browser-per-join",
        action="store_true",
        help="launch a new chromium for each join (default: one running browser, each join in "
        "a fresh context, as a user opens the page in the browser they have open)",
    )
    args = parser.parse_args()
    if lacking := missing():
        print(f"first_audio: {lacking}", file=sys.stderr)
        return 2
    result = asyncio.run(run(args.joins, args.scenario, browser_per_join=args.browser_per_join))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
