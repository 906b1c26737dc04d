"""How agents/retry_after.py reads a server's Retry-After."""

from __future__ import annotations

import email.utils

import httpx2 as httpx  # the HTTP client the openai SDK and its livekit plugin use
import pytest

from agents.retry_after import retry_after_s


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # OpenAI's finer header first
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_in_seconds_or_milliseconds(headers: dict[str, str], expected) -> None:
    assert retry_after_s(httpx.Headers(headers)) == expected


def test_retry_after_as_an_http_date() -> None:
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert retry_after_s(httpx.Headers({"retry-after": date}), now=now) == pytest.approx(7.0)
