"""One capacity shared by every worker on one Redis (`CAPACITY_URL`).

A claim is one Lua script, atomic on the server. A lease is a member of its persona's sorted
set, scored by its expiry: a persona's count is its live members, so the leases of a worker
that dies (kill -9) vanish when they expire; the owner pushes the expiry back every
`CAPACITY_REFRESH_S` (`LeaseRefresher`). Lease ids are chosen by the client, so a claim retried
after its reply was lost counts once, and a claim whose reply never came is given back by the
next refresh (the refresher's next check, within a second).

Redis restarted empty (no persistence) loses every lease while rooms run. The first script
that finds the `settled` marker missing sets it to now + `settle_s`; until then claims are
refused (`CapacityStoreSettling`) while every worker puts back its running rooms' leases (its
refresher checks the marker every `DEFAULT_CHECK_S`), so a restart puts no persona over its
limit. A worker that could not refresh for longer than the lease TTL (paused, cut off) takes
its leases back anyway when it can: its rooms run. That is the one way past a limit, by at
most the rooms that worker held of the persona; the refresh reports it and claims stay
refused until the persona is back under its limit.

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
    DEFAULT_CHECK_S,
    DEFAULT_LEASE_TTL_S,
    DEFAULT_PREFIX,
    DEFAULT_RETRY_AFTER_S,
    DEFAULT_TIMEOUT_S,
    CapacityStoreSettling,
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

# The marker of a Redis that holds our state: missing when Redis is new or restarted empty.
# Whoever finds it missing sets it to the time (ms) claims may start again: `settle` ms from now,
# the time every live worker needs to put back the leases of its running rooms. Its value is
# also this Redis's epoch: a worker that sees it change knows Redis lost its leases.
_SETTLED = """
local function settled(key, window)
  local at = tonumber(redis.call('GET', key))
  if not at then
    at = now + window
    redis.call('SET', key, at)
  end
  return at
end
"""

# KEYS: rr hash, the settled marker, the n claimed leases' rooms keys, then the watched rooms
# keys. ARGV: ttl_ms, n, m, w, settle_ms, s, n x (lease id, cap), m x (pool key, seen, new),
# w watched pool keys, s counts the claimer saw of the watched personas (s is 0 or their
# number). Refused while the store settles: {-1, epoch, ms left}. With seen counts, the claim
# also stands only if every watched persona's count is still what the claimer chose from:
# then the choice is the one a fresh snapshot would have given, and a cast is one round trip.
_CLAIM = (
    _NOW
    + _COUNT
    + _SETTLED
    + """
local ttl, n, m, w = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local epoch = settled(KEYS[2], tonumber(ARGV[5]))
if epoch > now then return {-1, epoch, epoch - now} end
local s = tonumber(ARGV[6])
local function lease(i) return KEYS[2 + i], ARGV[5 + 2 * i], tonumber(ARGV[6 + 2 * i]) end
local base = 6 + 2 * n
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
local counts = nil
if ok and not again and s > 0 then
  counts = {}
  local at = base + 3 * m + w
  for k = 1, s do
    counts[k] = live(KEYS[2 + n + k])
    if counts[k] ~= tonumber(ARGV[at + k]) then ok = false end
  end
end
if not ok then
  if not counts then
    counts = {}
    for i = 3 + n, #KEYS do counts[#counts + 1] = live(KEYS[i]) end
  end
  local cursors = {}
  if w > 0 then
    cursors = redis.call('HMGET', KEYS[1], unpack(ARGV, base + 3 * m + 1, base + 3 * m + w))
  end
  return {0, epoch, counts, cursors}
end
for i = 1, n do
  local key, id = lease(i)
  redis.call('ZADD', key, now + ttl, id)
end
if not again then
  for j = 1, m do redis.call('HSET', KEYS[1], ARGV[base + 3 * j - 2], ARGV[base + 3 * j]) end
end
return {1, epoch}
"""
)

# KEYS: rooms keys; ARGV: lease ids, one per key.
_RELEASE = """
for i = 1, #KEYS do redis.call('ZREM', KEYS[i], ARGV[i]) end
return #KEYS
"""

# KEYS: the settled marker, n rooms keys of this worker's leases, then d rooms keys of leases to
# give back (claims whose answer never came). ARGV: ttl_ms, settle_ms, n, n x (lease id, cap),
# d lease ids. A lease Redis no longer has (expired while this worker could not refresh it, or
# Redis restarted empty) is taken again: its room still runs. Returns the epoch, the leases
# taken again, and (index, live rooms) of each lease whose persona is now over its limit.
_REFRESH = (
    _NOW
    + _SETTLED
    + """
local ttl, n = tonumber(ARGV[1]), tonumber(ARGV[3])
local epoch = settled(KEYS[1], tonumber(ARGV[2]))
for k = 2 + n, #KEYS do redis.call('ZREM', KEYS[k], ARGV[2 + n + k]) end
local restored, over = {}, {}
for i = 1, n do
  local key, id = KEYS[1 + i], ARGV[2 + 2 * i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if not redis.call('ZSCORE', key, id) then restored[#restored + 1] = id end
  redis.call('ZADD', key, now + ttl, id)
end
for i = 1, n do
  local key, cap = KEYS[1 + i], tonumber(ARGV[3 + 2 * i])
  local rooms = redis.call('ZCARD', key)
  if rooms > cap then over[#over + 1] = {i, rooms} end
end
return {epoch, restored, over}
"""
)

# KEYS: the settled marker; ARGV: settle_ms. The epoch (see _SETTLED).
_EPOCH = _NOW + _SETTLED + "return settled(KEYS[1], tonumber(ARGV[1]))"

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


def settle_window(timeout_s: float) -> float:
    """How long claims wait after Redis came back empty: time for every live worker's
    refresher to see it (a check period, two bounded calls) and a margin for a busy host."""
    return DEFAULT_CHECK_S + 2 * timeout_s + 0.5


def bounded_client(url: str, timeout_s: float) -> Any:
    """A Redis client whose every call gives up after `timeout_s` (connect and read) and is
    never retried by redis-py itself (it retries 3 times with backoff by default): callers
    retry once, themselves, where that is safe."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        decode_responses=True,
    )


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
        settle_s: float = 0.0,
    ) -> None:
        import redis  # only a worker with CAPACITY_URL needs the client

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
        # Claims wait this long after Redis came back empty (see _SETTLED). 0 suits a Redis
        # only this process uses (tools, benchmarks); a worker passes `settle_window()`.
        self._settled_key = f"{prefix}:settled"
        self._settle_ms = max(0, round(settle_s * 1000))
        self._epoch: int | None = None  # the marker this store last saw
        self.worker_id = worker_id or _default_worker_id()
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._broken: tuple[type[Exception], ...] = (redis.ConnectionError,)
        self._no_retry: tuple[type[Exception], ...] = (
            redis.TimeoutError,
            redis.AuthenticationError,
        )
        self._client = bounded_client(url, timeout_s)
        self._scripts = {
            name: self._client.register_script(text)
            for name, text in (
                ("snapshot", _SNAPSHOT),
                ("claim", _CLAIM),
                ("release", _RELEASE),
                ("refresh", _REFRESH),
                ("leases", _LEASES),
                ("epoch", _EPOCH),
            )
        }
        self._next = itertools.count(1).__next__
        self._lock = threading.Lock()
        self._mine: dict[str, tuple[str, int]] = {}  # lease id -> (persona id, cap)
        # Claims whose answer never came (Redis may have run them): given back by the next
        # refresh, which the refresher runs at its next check, so none outlives it.
        self._doubtful: dict[str, str] = {}  # lease id -> persona id
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
            self._put_back()
        return self._run(script, keys, args)

    def _put_back(self) -> None:
        """Refresh this worker's leases now, taking back any Redis lost (before a claim)."""
        done = self._refresh_mine()
        if done.restored:
            log.info("capacity_leases_restored", leases=done.restored)

    def _saw_epoch(self, epoch: Any) -> bool:
        """Note the store's epoch; True when it changed (Redis lost this worker's leases)."""
        epoch = int(epoch)
        changed = self._epoch is not None and epoch != self._epoch
        self._epoch = epoch
        return changed

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
        self,
        job_id: str,
        personas: Sequence[Claimant],
        moves: Sequence[Move],
        watch: Watch,
        seen: Sequence[int] | None = None,
    ) -> tuple[str, ...]:
        # Chosen here, once: a retry after a lost reply sends the same ids (counted once).
        lease_ids = tuple(self.lease_id(job_id) for _ in personas)
        ids, keys = watch
        checked = len(ids) if seen is not None else 0
        args: list[Any] = [
            self._ttl_ms,
            len(personas),
            len(moves),
            len(keys),
            self._settle_ms,
            checked,
        ]
        for lease_id, persona in zip(lease_ids, personas, strict=True):
            args += (lease_id, persona.cap)
        for pool, cursor in moves:
            args += (pool.key, pool.cursor, cursor)
        args += keys
        if seen is not None:
            args += seen
        redis_keys = [
            self._rr,
            self._settled_key,
            *(self._key(p.id) for p in personas),
            *map(self._key, ids),
        ]
        if self._down:
            self._cooling()
            self._put_back()
        try:
            reply = self._run("claim", redis_keys, args)
        except CapacityStoreUnavailable:
            # Sent, so maybe run by Redis after this worker gave up: given back by the
            # next refresh rather than left to hold a room until it expires.
            with self._lock:
                self._doubtful.update(zip(lease_ids, (p.id for p in personas), strict=True))
            raise
        lost_ours = self._saw_epoch(reply[1])
        if reply[0] == -1:
            raise self._settling(lost_ours, int(reply[2]) / 1000)
        if reply[0] == 0:
            raise ClaimRefused(_snapshot(ids, reply[2], keys, reply[3]))
        with self._lock:
            for lease_id, persona in zip(lease_ids, personas, strict=True):
                self._mine[lease_id] = (persona.id, persona.cap)
        if lost_ours:  # Redis restarted empty and settled while this worker did not look
            self._put_back()
        return lease_ids

    def _settling(self, lost_ours: bool, left_s: float) -> CapacityStoreSettling:
        """Redis came back empty: this worker's rooms go back at once, new casts wait."""
        if lost_ours or self._mine:
            self._put_back()
        return CapacityStoreSettling(
            f"capacity store {self._shown} came back empty: new casts wait {left_s:.1f} s "
            "more while every worker puts back its running rooms",
            left_s,
        )

    def release(self, leases: Sequence[tuple[str, str]]) -> None:
        with self._lock:  # first: a lease being released is never refreshed again
            for lease_id, _ in leases:
                self._mine.pop(lease_id, None)
        if leases:
            self._call("release", [self._key(pid) for _, pid in leases], [i for i, _ in leases])

    def refresh(self) -> Refreshed:
        """Push back the expiry of every lease this store holds, take back any Redis lost,
        and give back the claims whose answer never came (one script). The refresher probes
        Redis on its own schedule, through any cool-down: it is what puts this worker's
        rooms back as soon as Redis answers again."""
        return self._refresh_mine()

    def needs_refresh(self) -> bool:
        """True when Redis lost this worker's leases (its epoch changed) or a claim whose
        answer never came waits to be given back."""
        if self._doubtful or self._down:
            return True
        epoch = self._run("epoch", [self._settled_key], [self._settle_ms])
        return self._saw_epoch(epoch)

    def _refresh_mine(self) -> Refreshed:
        with self._lock:
            mine = list(self._mine.items())
            doubtful = list(self._doubtful.items())
        args: list[Any] = [self._ttl_ms, self._settle_ms, len(mine)]
        keys = [self._settled_key]
        for lease_id, (pid, cap) in mine:
            args += (lease_id, cap)
            keys.append(self._key(pid))
        for lease_id, pid in doubtful:
            args.append(lease_id)
            keys.append(self._key(pid))
        epoch, restored, over = self._run("refresh", keys, args)
        self._saw_epoch(epoch)
        with self._lock:
            for lease_id, _ in doubtful:
                self._doubtful.pop(lease_id, None)
        return Refreshed(
            len(mine),
            list(restored),
            {mine[int(i) - 1][1][0]: (int(rooms), mine[int(i) - 1][1][1]) for i, rooms in over},
        )

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
