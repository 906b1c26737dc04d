"""Page opened -> first persona audio, over N joins: `tests/live/livenet.sh run
.venv/bin/python -m tests.live.browser.first_audio [--joins 10] [--scenario dispatch_checkin]`.

One warm worker and one `workers.web`, in the live suite's namespace; each join is a fresh
headless chromium page opened on `/?scenario=S&name=Jamie&autojoin=1`, which creates the room
through the API and joins it. Times are the page's own clock (performance.now(), 0 at
navigation start): connected, and the first 50 ms window in which a persona's track in the page
carries audio (RMS over 0.01). Each room is then deleted. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.live.browser import browser, missing
from tests.live.harness import WorkerProcess, unique
from tests.live.web import web_server


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(joins: int, scenario: str) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="first-audio-"))
    worker = WorkerProcess.start(tmp, agent_name=unique("first-audio"))
    try:
        await worker.ready()
        with web_server(tmp, worker.agent_name) as web:
            rows = []
            for _ in range(joins):
                async with browser() as page:
                    await page.call(
                        "goto", url=f"{web.url}?scenario={scenario}&name=Jamie&autojoin=1"
                    )
                    snap = await page.until(
                        "(s => s.firstAudioMs !== null && s)(window.webRoom.snapshot())",
                        timeout=60,
                    )
                    rows.append(
                        {"connected_ms": snap["joinedAtMs"], "audio_ms": snap["firstAudioMs"]}
                    )
                    await page.eval(
                        f"fetch('/api/v1/rooms/{snap['room']}', {{method: 'DELETE'}})"
                        ".then(r => r.status)"
                    )
    finally:
        worker.kill()
    audio = [r["audio_ms"] / 1000 for r in rows]
    connected = [r["connected_ms"] / 1000 for r in rows]
    return {
        "what": "page opened (navigation start) -> first persona audio in the page, seconds",
        "scenario": scenario,
        "joins": joins,
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
        "rows": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.live.browser.first_audio")
    parser.add_argument("--joins", type=int, default=10)
    parser.add_argument("--scenario", default="dispatch_checkin")
    args = parser.parse_args()
    if lacking := missing():
        print(f"first_audio: {lacking}", file=sys.stderr)
        return 2
    print(json.dumps(asyncio.run(run(args.joins, args.scenario)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
