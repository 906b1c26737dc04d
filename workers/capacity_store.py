"""Where the personas' room counts and the round-robin positions live: the capacity store.

The selector's rules (workers/selector.py) choose from counts; a store keeps them. Both stores
offer the same primitive, **claim with check**: "reserve these leases and move these
round-robin positions, provided every persona still has a free room and every position is
still where I saw it". Either all of it happens or none of it does, and a refused claim comes
back with fresh counts to choose again from.

- `MemoryStore`: one worker's counts in this process, the embedded default. Only its own
  selector writes them (under the selector's lock), so its claims never lose a race.
- `RedisStore`: one capacity shared by every worker on one Redis (`CAPACITY_URL`). A claim is
  one Lua script, atomic on the server. A lease is a member of its persona's sorted set, scored
  by its expiry: a persona's count is its live members, so the leases of a worker that dies
  (kill -9) vanish when they expire; the owner pushes the expiry back every
  `CAPACITY_REFRESH_S` (`LeaseRefresher`). Lease ids are chosen by the client, so a claim
  retried after its reply was lost counts once, and a claim whose reply never came expires.

Sync client, by choice: the selector's API is synchronous (on_request, the load callback in an
executor thread, `Lease.release()` in `finally` blocks and sync callbacks, the CLIs), so one
code path serves both stores. Each Redis call is bounded by `CAPACITY_TIMEOUT_S` (connect and
read, default 0.25 s; about 0.2 ms on loopback), retried at most once and only on a broken
connection, and after a failure the store answers `CapacityStoreUnavailable` at once for
`retry_after_s` instead of blocking again, so a worker's event loop never waits long on it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from config.logging import get_logger
from config.settings import check_capacity_url

__all__ = [
    "CapacityStore",
    "CapacityStoreUnavailable",
    "ClaimRefused",
    "Claimant",
    "LeaseRefresher",
    "MemoryStore",
    "Move",
    "Position",
    "RedisStore",
    "Refreshed",
    "Snapshot",
    "Watch",
    "open_capacity_store",
    "redact_url",
]

log = get_logger("workers.capacity_store")

DEFAULT_LEASE_TTL_S = 20.0
DEFAULT_REFRESH_S = 5.0
DEFAULT_TIMEOUT_S = 0.25
DEFAULT_RETRY_AFTER_S = 1.0
# One hash tag for every key: a Redis Cluster keeps them in one slot, so a script may use them all.
DEFAULT_PREFIX = "{capacity}"

# (persona ids, pool keys) whose fresh values a refused claim returns.
Watch = tuple[Sequence[str], Sequence[str]]


class Claimant(Protocol):
    """What a claim reads of each persona it asks a room of (the selector's record of it)."""

    @property
    def id(self) -> str: ...

    @property
    def cap(self) -> int: ...


class Position(Protocol):
    """A pool's round robin: where the store keeps it (`key`, "campaign/role") and the
    position the claimer saw (`cursor`)."""

    @property
    def key(self) -> str: ...

    @property
    def cursor(self) -> int: ...


# (pool, new position): one round-robin move a claim makes, if the position is still as seen.
Move = tuple[Position, int]


class CapacityStoreUnavailable(Exception):
    """The capacity store cannot answer now (Redis down, slow or refusing). Not NoCapacity: a
    persona may well be free, this worker just cannot know, so another worker may serve."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Counts of live leases per persona and round-robin positions per pool, read at once."""

    counts: dict[str, int]
    cursors: dict[str, int] = field(default_factory=dict)


class ClaimRefused(Exception):
    """A claim lost a race (a persona filled up, or a round robin moved, since the claimer
    looked): nothing was claimed, and `snapshot` holds the watched counts and positions now."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__(snapshot)
        self.snapshot = snapshot


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What a refresh did with this worker's leases: `restored` had expired (or Redis lost
    them) and were taken again; `lost` had expired and their persona is now full."""

    refreshed: int
    restored: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


class CapacityStore(Protocol):
    """What the selector needs from a store. Every method is thread-safe."""

    name: str
    # Other processes change the counts: the selector reads a snapshot before it chooses.
    shared: bool

    def snapshot(self, persona_ids: Sequence[str], pool_keys: Sequence[str]) -> Snapshot: ...

    def claim(
        self, job_id: str, personas: Sequence[Claimant], moves: Sequence[Move], watch: Watch
    ) -> tuple[str, ...]:
        """One room of each persona and every round-robin move, all or nothing, provided each
        persona still has a free room and each position is still as seen: the lease ids, one
        per persona. ClaimRefused (with `watch`'s counts now) when that no longer holds."""
        ...

    def release(self, leases: Sequence[tuple[str, str]]) -> None:
        """Give back (lease id, persona id) pairs. Idempotent."""
        ...

    def refresh(self) -> Refreshed: ...

    def held(self) -> Counter[str]:
        """This store's own live leases per persona (this worker's share)."""
        ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


# -- in memory ---------------------------------------------------------------------------------


class MemoryStore:
    """The counts of one worker, in this process: today's selector, no network. Its selector
    calls it under its own lock, which is also what keeps it consistent: a MemoryStore
    belongs to exactly one selector. Nothing expires and no reply is lost in memory, so it
    keeps counts, not lease ids: the selector's Lease makes each release count once."""

    name = "memory"
    shared = False

    def __init__(self) -> None:
        self._rooms: defaultdict[str, int] = defaultdict(int)
        self._cursors: defaultdict[str, int] = defaultdict(int)

    def snapshot(self, persona_ids: Sequence[str], pool_keys: Sequence[str]) -> Snapshot:
        rooms, cursors = self._rooms, self._cursors
        return Snapshot(
            {pid: rooms[pid] for pid in persona_ids}, {key: cursors[key] for key in pool_keys}
        )

    def claim(
        self, job_id: str, personas: Sequence[Claimant], moves: Sequence[Move], watch: Watch
    ) -> tuple[str, ...]:
        rooms = self._rooms
        for persona in personas:
            pid = persona.id
            n = rooms[pid]
            if n >= persona.cap:
                self._undo(personas, persona)
                raise ClaimRefused(self.snapshot(*watch))
            rooms[pid] = n + 1
        if moves:
            positions = self._cursors
            for pool, _ in moves:
                if positions[pool.key] != pool.cursor:
                    self._undo(personas, None)
                    raise ClaimRefused(self.snapshot(*watch))
            for pool, cursor in moves:
                positions[pool.key] = cursor
        return (job_id,) * len(personas)  # in memory, a lease is known by its job

    def _undo(self, personas: Sequence[Claimant], upto: Claimant | None) -> None:
        """Give back the rooms a refused claim took (before `upto`): all or nothing."""
        for persona in personas:
            if persona is upto:
                return
            self._rooms[persona.id] -= 1

    def release(self, leases: Sequence[tuple[str, str]]) -> None:
        rooms = self._rooms
        for _, pid in leases:
            rooms[pid] -= 1

    def refresh(self) -> Refreshed:
        return Refreshed(sum(self._rooms.values()))  # nothing expires in memory

    def held(self) -> Counter[str]:
        return Counter({pid: n for pid, n in self._rooms.items() if n})

    def describe(self) -> str:
        return "memory"

    def close(self) -> None:
        return None


# -- Redis -------------------------------------------------------------------------------------

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


# -- keeping leases alive ----------------------------------------------------------------------


class LeaseRefresher:
    """Refreshes a store's leases every `interval_s` while the worker runs: `await run()` in
    the worker's main process (each refresh runs in a thread, never on the event loop).
    `on_lost` hears of leases that expired and could not be taken again; `on_error` of a
    store that could not be reached (the next round tries again)."""

    def __init__(
        self,
        store: CapacityStore,
        interval_s: float = DEFAULT_REFRESH_S,
        *,
        on_lost: Callable[[list[str]], None] | None = None,
        on_error: Callable[[CapacityStoreUnavailable], None] | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"LeaseRefresher interval_s must be above 0, not {interval_s}")
        self.store = store
        self.interval_s = interval_s
        self._on_lost = on_lost
        self._on_error = on_error

    def refresh_once(self) -> Refreshed | None:
        """One refresh; None when the store could not be reached."""
        try:
            done = self.store.refresh()
        except CapacityStoreUnavailable as exc:
            if self._on_error is not None:
                self._on_error(exc)
            return None
        if done.restored:
            log.info("capacity_leases_restored", leases=done.restored)
        if done.lost:
            log.warning("capacity_leases_lost", leases=done.lost)
            if self._on_lost is not None:
                self._on_lost(done.lost)
        return done

    async def run(self) -> None:
        """Refresh until cancelled."""
        while True:
            await asyncio.to_thread(self.refresh_once)
            await asyncio.sleep(self.interval_s)


def open_capacity_store(settings: Any, *, worker_id: str | None = None) -> CapacityStore:
    """The store `settings` name: Redis when CAPACITY_URL is set, else in memory."""
    url = settings.capacity_url
    if url is None:
        return MemoryStore()
    return RedisStore(
        url.get_secret_value(),
        lease_ttl_s=settings.capacity_lease_ttl_s,
        timeout_s=settings.capacity_timeout_s,
        worker_id=worker_id,
    )
