"""One capacity shared by every worker on one Redis (`CAPACITY_URL`).

A claim is one Lua script, atomic on the server. A lease is a member of its persona's sorted
set, scored by its expiry: a persona's count is its live members, so the leases of a worker
that dies (kill -9) vanish when they expire; the owner pushes the expiry back every
`CAPACITY_REFRESH_S` (`LeaseRefresher`). Lease ids are chosen by the client, so a claim retried
after its reply was lost counts once, and a claim whose reply never came expires.

Sync client, by choice: the selector's API is synchronous (on_request, the load callback in an
executor thread, `Lease.release()` in `finally` blocks and sync callbacks, the CLIs), so one
code path serves both stores. Each Redis call is bounded by `CAPACITY_TIMEOUT_S` (connect and
read, default 0.25 s; about 0.2 ms on loopback), retried at most once and only on a broken
connection, and after a failure the store answers `CapacityStoreUnavailable` at once for
`retry_after_s` instead of blocking again, so a worker's event loop never waits long on it.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from config.logging import get_logger
from config.settings import check_capacity_url
from workers.capacity.store import (
    DEFAULT_LEASE_TTL_S,
    DEFAULT_PREFIX,
    DEFAULT_RETRY_AFTER_S,
    DEFAULT_TIMEOUT_S,
    CapacityStoreUnavailable,
    Claimant,
    ClaimRefused,
    Move,
    Refreshed,
    Snapshot,
    Watch,
)

log = get_logger("workers.capacity.redis_store")

# Every script reads the server's clock, so workers' clocks never matter. A lease is live while
# its score (expiry, ms) is above now. Scripts prune expired members before they count.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_COUNT = """
local function live(key) return redis.call('ZCOUNT', key, '(' .. now, '+inf') end
"""

# KEYS: rooms keys..., rr hash last. ARGV: pool keys (hash fields).
_SNAPSHOT = (
    _NOW
    + _COUNT
    + """
local counts = {}
for i = 1, #KEYS - 1 do counts[i] = live(KEYS[i]) end
local cursors = {}
if #ARGV > 0 then cursors = redis.call('HMGET', KEYS[#KEYS], unpack(ARGV)) end
return {counts, cursors}
"""
)

# KEYS: rr hash, the n claimed leases' rooms keys, then the watched rooms keys.
# ARGV: ttl_ms, n, m, w, n x (lease id, cap), m x (pool key, seen, new), w watched pool keys.
_CLAIM = (
    _NOW
    + _COUNT
    + """
local ttl, n, m, w = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function lease(i) return KEYS[1 + i], ARGV[3 + 2 * i], tonumber(ARGV[4 + 2 * i]) end
local base = 4 + 2 * n
-- A retry of a claim that went through (its reply was lost): every lease is there already.
local again = n > 0
for i = 1, n do
  local key, id = lease(i)
  local score = redis.call('ZSCORE', key, id)
  if not score or tonumber(score) <= now then again = false break end
end
local ok = true
if not again then
  local pending = {}
  for i = 1, n do
    local key, id, cap = lease(i)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    pending[key] = (pending[key] or 0) + 1
    if redis.call('ZCARD', key) + pending[key] > cap then ok = false break end
  end
  for j = 1, m do
    if not ok then break end
    local seen = redis.call('HGET', KEYS[1], ARGV[base + 3 * j - 2]) or '0'
    if tonumber(seen) ~= tonumber(ARGV[base + 3 * j - 1]) then ok = false end
  end
end
if not ok then
  local counts = {}
  for i = 2 + n, #KEYS do counts[#counts + 1] = live(KEYS[i]) end
  local cursors = {}
  if w > 0 then
    cursors = redis.call('HMGET', KEYS[1], unpack(ARGV, base + 3 * m + 1, base + 3 * m + w))
  end
  return {0, counts, cursors}
end
for i = 1, n do
  local key, id = lease(i)
  redis.call('ZADD', key, now + ttl, id)
end
if not again then
  for j = 1, m do redis.call('HSET', KEYS[1], ARGV[base + 3 * j - 2], ARGV[base + 3 * j]) end
end
return {1}
"""
)

# KEYS: rooms keys; ARGV: lease ids, one per key.
_RELEASE = """
for i = 1, #KEYS do redis.call('ZREM', KEYS[i], ARGV[i]) end
return #KEYS
"""

# KEYS: rooms keys; ARGV: ttl_ms, then (lease id, cap) per key. A lease Redis no longer has
# (expired while Redis was unreachable, or Redis restarted empty) is taken again if there is
# room: it belongs to a room that still runs. Otherwise it is lost.
_REFRESH = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
local restored, lost = {}, {}
for i = 1, #KEYS do
  local key, id, cap = KEYS[i], ARGV[2 * i], tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZSCORE', key, id) then
    redis.call('ZADD', key, 'XX', now + ttl, id)
  elseif redis.call('ZCARD', key) < cap then
    redis.call('ZADD', key, now + ttl, id)
    restored[#restored + 1] = id
  else
    lost[#lost + 1] = id
  end
end
return {restored, lost}
"""
)

# KEYS: rooms keys. Every live lease with its expiry, and now.
_LEASES = (
    _NOW
    + """
local out = {now}
for i = 1, #KEYS do
  out[i + 1] = redis.call('ZRANGEBYSCORE', KEYS[i], '(' .. now, '+inf', 'WITHSCORES')
end
return out
"""
)


def redact_url(url: str) -> str:
    """The URL without its password (redis://:secret@host:6379/0 -> redis://:***@host:6379/0)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    scheme, _, rest = url.partition("://")
    netloc = parts.netloc
    if password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
    path, mark, query = rest[len(parts.netloc) :].partition("?")
    if mark:
        query = "&".join(
            "password=***" if item.lower().startswith("password=") else item
            for item in query.split("&")
        )
    return f"{scheme}://{netloc}{path}{mark}{query}"


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisStore:
    """One capacity for every worker on one Redis. See the module docstring."""

    name = "redis"
    shared = True

    def __init__(
        self,
        url: str,
        *,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry_after_s: float = DEFAULT_RETRY_AFTER_S,
        prefix: str = DEFAULT_PREFIX,
        worker_id: str | None = None,
    ) -> None:
        import redis  # only a worker with CAPACITY_URL needs the client
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        try:
            check_capacity_url(url)
        except ValueError as exc:
            raise ValueError(f"CAPACITY_URL {exc}") from None
        self._shown = redact_url(url)
        self._password = urlsplit(url).password or ""
        self._ttl_ms = max(1, round(lease_ttl_s * 1000))
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._prefix = prefix
        self._rr = f"{prefix}:rr"
        self.worker_id = worker_id or _default_worker_id()
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._broken: tuple[type[Exception], ...] = (redis.ConnectionError,)
        self._no_retry: tuple[type[Exception], ...] = (
            redis.TimeoutError,
            redis.AuthenticationError,
        )
        # redis-py retries 3 times with backoff by default: we retry once, ourselves.
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            decode_responses=True,
        )
        self._scripts = {
            name: self._client.register_script(text)
            for name, text in (
                ("snapshot", _SNAPSHOT),
                ("claim", _CLAIM),
                ("release", _RELEASE),
                ("refresh", _REFRESH),
                ("leases", _LEASES),
            )
        }
        self._next = itertools.count(1).__next__
        self._lock = threading.Lock()
        self._mine: dict[str, tuple[str, int]] = {}  # lease id -> (persona id, cap)
        self._down_until = 0.0
        self._down = False

    # -- keys and calls ---------------------------------------------------------------------

    def _key(self, persona_id: str) -> str:
        return f"{self._prefix}:rooms:{persona_id}"

    def _call(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script, bounded: CapacityStoreUnavailable on any failure, at once while a
        recent failure's cool-down lasts (so callers do not block on a Redis that is down).
        The first call after an outage first counts this worker's rooms again (Redis may have
        restarted empty), so what it claims next sees them."""
        if self._down:
            self._cooling()
            done = self._refresh_mine()
            if done.restored:
                log.info("capacity_leases_restored", leases=done.restored)
        return self._run(script, keys, args)

    def _cooling(self) -> None:
        if time.monotonic() < self._down_until:
            raise CapacityStoreUnavailable(
                f"capacity store {self._shown} unavailable (retrying by itself)"
            )

    def _run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        run = self._scripts[script]
        for attempt in (1, 2):
            try:
                reply = run(keys=keys, args=args)
            except self._errors as exc:
                # A broken pooled connection (Redis restarted) deserves one fresh try; a
                # timeout does not: Redis is slow, and waiting twice is what we must not do.
                if (
                    attempt == 1
                    and isinstance(exc, self._broken)
                    and not isinstance(exc, self._no_retry)
                ):
                    continue
                raise self._unavailable(exc) from None
            else:
                self._recovered()
                return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _unavailable(self, exc: Exception) -> CapacityStoreUnavailable:
        self._down_until = time.monotonic() + self._retry_after_s
        why = str(exc) or type(exc).__name__
        if self._password:
            why = why.replace(self._password, "***")
        message = (
            f"capacity store {self._shown} unavailable: {why} "
            f"(CAPACITY_TIMEOUT_S={self._timeout_s:g}); retrying by itself"
        )
        if not self._down:
            self._down = True
            log.warning("capacity_store_unavailable", store=self._shown, error=why)
        return CapacityStoreUnavailable(message)

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            log.info("capacity_store_recovered", store=self._shown)

    # -- the store --------------------------------------------------------------------------

    def lease_id(self, job_id: str = "") -> str:
        return f"{self.worker_id}:{job_id or '-'}:{self._next()}"

    def snapshot(self, persona_ids: Sequence[str], pool_keys: Sequence[str]) -> Snapshot:
        keys = [*map(self._key, persona_ids), self._rr]
        counts, cursors = self._call("snapshot", keys, list(pool_keys))
        return _snapshot(persona_ids, counts, pool_keys, cursors)

    def claim(
        self, job_id: str, personas: Sequence[Claimant], moves: Sequence[Move], watch: Watch
    ) -> tuple[str, ...]:
        # Chosen here, once: a retry after a lost reply sends the same ids (counted once).
        lease_ids = tuple(self.lease_id(job_id) for _ in personas)
        ids, keys = watch
        args: list[Any] = [self._ttl_ms, len(personas), len(moves), len(keys)]
        for lease_id, persona in zip(lease_ids, personas, strict=True):
            args += (lease_id, persona.cap)
        for pool, cursor in moves:
            args += (pool.key, pool.cursor, cursor)
        args += keys
        redis_keys = [self._rr, *(self._key(p.id) for p in personas), *map(self._key, ids)]
        reply = self._call("claim", redis_keys, args)
        if reply[0] != 1:
            raise ClaimRefused(_snapshot(ids, reply[1], keys, reply[2]))
        with self._lock:
            for lease_id, persona in zip(lease_ids, personas, strict=True):
                self._mine[lease_id] = (persona.id, persona.cap)
        return lease_ids

    def release(self, leases: Sequence[tuple[str, str]]) -> None:
        with self._lock:  # first: a lease being released is never refreshed again
            for lease_id, _ in leases:
                self._mine.pop(lease_id, None)
        if leases:
            self._call("release", [self._key(pid) for _, pid in leases], [i for i, _ in leases])

    def refresh(self) -> Refreshed:
        """Push back the expiry of every lease this store holds (one script)."""
        if self._down:
            self._cooling()
        return self._refresh_mine()

    def _refresh_mine(self) -> Refreshed:
        with self._lock:
            mine = list(self._mine.items())
        if not mine:
            return Refreshed(0)
        args: list[Any] = [self._ttl_ms]
        for lease_id, (_, cap) in mine:
            args += (lease_id, cap)
        restored, lost = self._run("refresh", [self._key(pid) for _, (pid, _) in mine], args)
        if lost:
            with self._lock:
                for lease_id in lost:
                    self._mine.pop(lease_id, None)
        return Refreshed(len(mine) - len(lost), list(restored), list(lost))

    def held(self) -> Counter[str]:
        with self._lock:
            return Counter(pid for pid, _ in self._mine.values())

    def leases(self, persona_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """Every live lease per persona, any worker's: lease id -> seconds to its expiry."""
        reply = self._call("leases", [self._key(pid) for pid in persona_ids], [])
        now = int(reply[0])
        out: dict[str, dict[str, float]] = {}
        for pid, flat in zip(persona_ids, reply[1:], strict=True):
            pairs = zip(flat[::2], flat[1::2], strict=True)
            out[pid] = {lease_id: (float(score) - now) / 1000 for lease_id, score in pairs}
        return out

    def describe(self) -> str:
        return self._shown

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisStore({self._shown!r}, worker_id={self.worker_id!r})"


def _snapshot(
    persona_ids: Sequence[str], counts: Sequence[Any], pool_keys: Sequence[str], cursors: Any
) -> Snapshot:
    return Snapshot(
        {pid: int(n) for pid, n in zip(persona_ids, counts, strict=True)},
        {key: int(c or 0) for key, c in zip(pool_keys, cursors or (), strict=True)},
    )
