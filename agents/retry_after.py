"""A server's `Retry-After`, honoured: the HTTP client every OpenAI plugin object of a persona uses.

livekit retries a failed model request after its own fixed interval (MODEL_RETRY_INTERVAL_S),
whatever the server asked for, and the plugins turn the OpenAI SDK's own retries off. A 429
(or 503) that says when to come back is waited for here instead, once per request, if the
wait is at most MODEL_RETRY_AFTER_MAX_S; a longer one fails the attempt at once, so livekit
retries and then falls back as it would without the header, and the room is never held longer
than that bound.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import ssl
import time
from typing import Any

import httpx2 as httpx  # the HTTP client the openai SDK and its livekit plugin use
import openai

from config.logging import get_logger

log = get_logger("agents.retry_after")

RETRYABLE_STATUSES = frozenset({429, 503})


def retry_after_s(headers: httpx.Headers, now: float | None = None) -> float | None:
    """The wait a response asks for: `retry-after-ms` (OpenAI's), else `Retry-After` in seconds
    or as an HTTP date; None when it asks for none or says something unreadable."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


class RetryAfterTransport(httpx.AsyncBaseTransport):
    """Sends a request again, once, after the wait its 429 or 503 asked for (bounded)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, max_wait_s: float) -> None:
        self._inner = inner
        self._max_wait_s = max_wait_s

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if response.status_code not in RETRYABLE_STATUSES:
            return response
        wait = retry_after_s(response.headers)
        if wait is None or wait > self._max_wait_s:
            return response
        await response.aclose()
        log.info(
            "model_retry_after",
            endpoint=request.url.host,
            status=response.status_code,
            wait_s=round(wait, 3),
        )
        await asyncio.sleep(wait)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's TLS settings for model servers, made once: httpx builds a new one for each
    transport, loading the system's CA certificates again (47 ms each on the test machine,
    blocking the event loop: a pipeline persona has three plugins)."""
    return httpx.create_ssl_context()


def openai_client(*, api_key: str, base_url: str | None, max_wait_s: float) -> Any:
    """An OpenAI client as the plugins build their own (no SDK retries, their timeouts and
    limits), over a transport that honours Retry-After."""
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50, keepalive_expiry=120)
    transport = RetryAfterTransport(
        httpx.AsyncHTTPTransport(verify=tls_context(), limits=limits), max_wait_s=max_wait_s
    )
    return openai.AsyncClient(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        http_client=httpx.AsyncClient(
            timeout=httpx.Timeout(connect=15.0, read=5.0, write=5.0, pool=5.0),
            follow_redirects=True,
            transport=transport,
        ),
    )
