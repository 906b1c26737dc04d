"""The split of the page-opened -> first-audio figure (tests/live/browser/first_audio.py):
the worker's milestones put on the page's clock, and per-stage p50/p95."""

from __future__ import annotations

from typing import Any

from tests.live.browser.first_audio import STAGES, summarize, worker_marks

ORIGIN_MS = 1_796_691_544_000.0  # the page's navigation start, epoch ms


def _log(event: str, at_s: float, **fields) -> dict:
    from datetime import UTC, datetime

    stamp = datetime.fromtimestamp(ORIGIN_MS / 1000 + at_s, UTC).isoformat().replace("+00:00", "Z")
    return {"event": event, "timestamp": stamp, **fields}


def test_worker_milestones_are_on_the_pages_clock():
    logs = [
        _log("received job request", 0.5),
        _log("job_started", 0.52),
        _log("job_connecting", 0.53),
        _log("persona_connected", 0.9, persona="chris"),
        _log("job_connected", 1.0),
        _log("room_models", 1.01),  # not a milestone
    ]
    start = ORIGIN_MS / 1000
    transcript: list[dict[str, Any]] = [
        {"event": "room_started"},
        {
            "event": "session_reports",
            "reports": {
                "tim": {
                    "events": [
                        {"type": "speech_created", "created_at": start + 1.2},
                        {
                            "type": "agent_state_changed",
                            "new_state": "thinking",
                            "created_at": start + 1.3,
                        },
                        {
                            "type": "agent_state_changed",
                            "new_state": "speaking",
                            "created_at": start + 1.4,
                        },
                    ]
                },
                "chris": {"events": [{"type": "speech_created", "created_at": start + 2.0}]},
            },
        },
    ]
    marks = worker_marks(logs, transcript, ORIGIN_MS)
    rounded = {k: round(v) for k, v in marks.items()}
    assert rounded == {
        "jobReceived": 500,
        "jobStarted": 520,
        "jobConnecting": 530,
        "jobConnected": 1000,
        "personasConnected": 1000,  # the last of the cast: here the job's own connection
        "replyAsked": 1200,
        "firstFrame": 1400,  # the persona that spoke first (chris never did)
    }


def test_stages_and_milestones_have_p50_and_p95_and_skip_what_a_row_lacks():
    rows = [
        {"script": 100.0 * i, "apiSent": 100.0 * i + 50, "firstAudio": 1000.0 + i}
        for i in range(1, 11)
    ]
    rows[0].pop("apiSent")
    split = summarize(rows)
    assert list(split["milestones_s"]) == ["script", "apiSent", "firstAudio"]  # by median
    assert split["milestones_s"]["firstAudio"] == {"p50": 1.006, "p95": 1.01, "n": 10}
    page_load = split["stages_s"]["page load (navigation -> script running)"]
    assert page_load == {"p50": 0.55, "p95": 1.0, "n": 10}
    assert split["stages_s"]["scenario list (script -> create sent)"]["n"] == 9
    assert set(split["stages_s"]) <= set(STAGES)
