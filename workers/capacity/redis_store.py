"""One capacity shared by every worker on one Redis (`CAPACITY_URL`).

A claim is one Lua script, atomic on the server. A lease is a member of one sorted set, scored
by its expiry, and counted in its persona's field of a hash that every script keeps equal to
its persona's members; each script first drops the expired members with their counts, so the
leases of a worker that dies (kill -9) vanish when they expire, and a claim reads every count
it needs in one command. The owner pushes the expiry back every
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
# its score (expiry, ms) is above now.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Numbers go to Redis as strings made once: Redis formats a Lua number with %.17g each time.
local function int(x) return string.format('%d', x) end
"""

# The layout: every lease is a member of one sorted set (`leases`), scored by its expiry and
# named "<bytes of the persona id>:<persona id>:<lease id>" (see `_member`); a hash (`counts`)
# holds each persona's number of members. Every script that changes one changes the other, so
# a count is its persona's members, expired or not; `sweep` drops the expired ones (a dead
# worker's) with their counts before any script reads a count. A claim then reads every count
# it needs in one HMGET, whatever the number of personas it watches.
_SWEEP = """
local function owner(member)
  local colon = string.find(member, ':', 1, true)
  return string.sub(member, colon + 1, colon + tonumber(string.sub(member, 1, colon - 1)))
end
local function sweep(leases, counts)
  local upto = int(now)
  local gone = redis.call('ZRANGEBYSCORE', leases, '-inf', upto)
  if #gone == 0 then return end
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', upto)
  local by = {}
  for _, member in ipairs(gone) do
    local pid = owner(member)
    by[pid] = (by[pid] or 0) + 1
  end
  for pid, k in pairs(by) do redis.call('HINCRBY', counts, pid, int(-k)) end
end
-- HMGET of ARGV[from..to], in parts: Lua's unpack takes at most a few thousand values.
local function hmget(key, from, to)
  if to - from < 4000 then return redis.call('HMGET', key, unpack(ARGV, from, to)) end
  local out = {}
  for a = from, to, 4000 do
    local part = redis.call('HMGET', key, unpack(ARGV, a, math.min(to, a + 3999)))
    for i = 1, #part do out[#out + 1] = part[i] end
  end
  return out
end
"""

# KEYS: leases, counts, rr hash. ARGV: k, k persona ids, then pool keys (rr hash fields).
# Missing counts and positions come back as nil (0).
_SNAPSHOT = (
    _NOW
    + _SWEEP
    + """
sweep(KEYS[1], KEYS[2])
local k = tonumber(ARGV[1])
local counts, cursors = {}, {}
if k > 0 then counts = hmget(KEYS[2], 2, 1 + k) end
if #ARGV > 1 + k then cursors = hmget(KEYS[3], 2 + k, #ARGV) end
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

# KEYS: rr hash, the settled marker, leases, counts. ARGV: ttl_ms, settle_ms, n, m, w, k, check,
# then n lease members, n caps, n persona ids, k watched persona ids (the ids right after the
# claimed ones: one HMGET reads both), k counts the claimer saw of the watched personas (when
# check is 1), m + w pool keys (the m moved, then the w watched), m positions seen, m new.
# Refused while the store settles: {-1, epoch, ms left}. With check, the claim also stands only
# if every watched persona's count is still what the claimer chose from: then the choice is the
# one a fresh snapshot would have given, and a cast is one round trip. Refused: {0, epoch,
# counts, positions}, as read (the claimed ones first, then the watched ones).
_CLAIM = (
    _NOW
    + _SWEEP
    + _SETTLED
    + """
local ttl, n, m = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4])
local w, k, check = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == '1'
local epoch = settled(KEYS[2], tonumber(ARGV[2]))
if epoch > now then return {-1, epoch, epoch - now} end
sweep(KEYS[3], KEYS[4])
local members, caps, ids = 8, 8 + n, 8 + 2 * n
local seen = ids + n + k
local pools = seen + (check and k or 0)
local at, to = pools + m + w, pools + 2 * m + w
local expiry = int(now + ttl)
-- A retry of a claim that went through (its reply was lost): every lease is there, live.
local again = n > 0
for i = 0, n - 1 do
  if not redis.call('ZSCORE', KEYS[3], ARGV[members + i]) then again = false break end
end
if again then
  for i = 0, n - 1 do redis.call('ZADD', KEYS[3], expiry, ARGV[members + i]) end
  return {1, epoch}
end
local counts, cursors = {}, {}
if n + k > 0 then counts = hmget(KEYS[4], ids, seen - 1) end
if m + w > 0 then cursors = hmget(KEYS[1], pools, pools + m + w - 1) end
local ok = true
-- Counts and positions are compared as written (canonical integers), with no conversion.
if check then
  for j = 1, k do
    if (counts[n + j] or '0') ~= ARGV[seen + j - 1] then ok = false break end
  end
end
local rooms = {}
for i = 1, n do
  if not ok then break end
  local pid = ARGV[ids + i - 1]
  rooms[pid] = (rooms[pid] or tonumber(counts[i]) or 0) + 1
  if rooms[pid] > tonumber(ARGV[caps + i - 1]) then ok = false end
end
for j = 1, m do
  if not ok then break end
  if (cursors[j] or '0') ~= ARGV[at + j - 1] then ok = false end
end
if not ok then return {0, epoch, counts, cursors} end
if n > 0 then
  local added, set = {}, {}
  for i = 0, n - 1 do
    added[2 * i + 1] = expiry
    added[2 * i + 2] = ARGV[members + i]
  end
  redis.call('ZADD', KEYS[3], unpack(added))
  for pid, r in pairs(rooms) do
    set[#set + 1] = pid
    set[#set + 1] = int(r)
  end
  redis.call('HSET', KEYS[4], unpack(set))
end
if m > 0 then
  local moved = {}
  for j = 0, m - 1 do
    moved[2 * j + 1] = ARGV[pools + j]
    moved[2 * j + 2] = ARGV[to + j]
  end
  redis.call('HSET', KEYS[1], unpack(moved))
end
return {1, epoch}
"""
)

# KEYS: leases, counts. ARGV: (lease member, persona id) pairs.
_RELEASE = """
for i = 1, #ARGV, 2 do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[i + 1], -1)
  end
end
return #ARGV / 2
"""

# KEYS: the settled marker, leases, counts. ARGV: ttl_ms, settle_ms, n, then n lease members
# of this worker, their n persona ids, their n caps, then (member, persona id) pairs of leases
# to give back (claims whose answer never came). A lease Redis no longer has (expired while
# this worker could not refresh it, or Redis restarted empty) is taken again: its room still
# runs. Returns the epoch, the (1-based) indexes of the leases taken again, and (index, rooms)
# of each lease whose persona is now over its limit.
_REFRESH = (
    _NOW
    + _SWEEP
    + _SETTLED
    + """
local ttl, n = tonumber(ARGV[1]), tonumber(ARGV[3])
local epoch = settled(KEYS[1], tonumber(ARGV[2]))
local expiry = int(now + ttl)
sweep(KEYS[2], KEYS[3])
for a = 4 + 3 * n, #ARGV, 2 do
  if redis.call('ZREM', KEYS[2], ARGV[a]) == 1 then
    redis.call('HINCRBY', KEYS[3], ARGV[a + 1], -1)
  end
end
local restored, over = {}, {}
for i = 1, n do
  if redis.call('ZADD', KEYS[2], expiry, ARGV[3 + i]) == 1 then
    restored[#restored + 1] = i
    redis.call('HINCRBY', KEYS[3], ARGV[3 + n + i], 1)
  end
end
if n > 0 then
  local rooms = hmget(KEYS[3], 4 + n, 3 + 2 * n)
  for i = 1, n do
    local r = tonumber(rooms[i]) or 0
    if r > tonumber(ARGV[3 + 2 * n + i]) then over[#over + 1] = {i, r} end
  end
end
return {epoch, restored, over}
"""
)

# KEYS: the settled marker; ARGV: settle_ms. The epoch (see _SETTLED).
_EPOCH = _NOW + _SETTLED + "return settled(KEYS[1], tonumber(ARGV[1]))"

# KEYS: leases. Now, then every live lease (member, expiry, ...).
_LEASES = (
    _NOW
    + """
return {now, redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')}
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
        self._leases = f"{prefix}:leases"
        self._counts = f"{prefix}:counts"
        # Claims wait this long after Redis came back empty (see _SETTLED). 0 suits a Redis
        # only this process uses (tools, benchmarks); a worker passes `settle_window()`.
        self._settled_key = f"{prefix}:settled"
        self._settle_ms = max(0, round(settle_s * 1000))
        self._epoch: int | None = None  # the marker this store last saw
        self.worker_id = worker_id or _default_worker_id()
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._broken: tuple[type[Exception], ...] = (redis.ConnectionError,)
        self._no_script = redis.exceptions.NoScriptError
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
        for attempt in (1, 2):
            try:
                reply = self._eval(self._scripts[script], keys, args)
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

    def _eval(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA of a registered script on a pooled connection, packed here in one pass:
        redis-py's command path (its packer, retries, observability) costs more client time
        than the script costs Redis. Loads the script when Redis lost it (restarted)."""
        pool = self._client.connection_pool
        packed = [pack_command(b"EVALSHA", script.sha, len(keys), *keys, *args)]
        conn = pool.get_connection()
        try:  # redis-py's connection drops itself on a socket error or timeout
            conn.send_packed_command(packed, check_health=False)
            try:
                return conn.read_response()
            except self._no_script:
                conn.send_packed_command(
                    [pack_command(b"SCRIPT", b"LOAD", script.script)], check_health=False
                )
                conn.read_response()
                conn.send_packed_command(packed, check_health=False)
                return conn.read_response()
        finally:
            pool.release(conn)

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
        keys = (self._leases, self._counts, self._rr)
        counts, cursors = self._call("snapshot", keys, [len(persona_ids), *persona_ids, *pool_keys])
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
        n, m = len(personas), len(moves)
        args: list[Any] = [
            self._ttl_ms,
            self._settle_ms,
            n,
            m,
            len(keys),
            len(ids),
            0 if seen is None else 1,
        ]
        pids = [p.id for p in personas]
        args += map(_member, pids, lease_ids)
        args += [p.cap for p in personas]
        args += pids
        args += ids
        if seen is not None:
            args += seen
        args += [pool.key for pool, _ in moves]
        args += keys
        args += [pool.cursor for pool, _ in moves]
        args += [cursor for _, cursor in moves]
        redis_keys = (self._rr, self._settled_key, self._leases, self._counts)
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
            raise ClaimRefused(_snapshot(ids, reply[2][n:], keys, reply[3][m:]))
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
            args: list[str] = []
            for lease_id, pid in leases:
                args += (_member(pid, lease_id), pid)
            self._call("release", (self._leases, self._counts), args)

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
        args += (_member(pid, lease_id) for lease_id, (pid, _) in mine)
        args += (pid for _, (pid, _) in mine)
        args += (cap for _, (_, cap) in mine)
        for lease_id, pid in doubtful:
            args += (_member(pid, lease_id), pid)
        keys = (self._settled_key, self._leases, self._counts)
        epoch, restored, over = self._run("refresh", keys, args)
        self._saw_epoch(epoch)
        with self._lock:
            for lease_id, _ in doubtful:
                self._doubtful.pop(lease_id, None)
        return Refreshed(
            len(mine),
            [mine[int(i) - 1][0] for i in restored],
            {mine[int(i) - 1][1][0]: (int(rooms), mine[int(i) - 1][1][1]) for i, rooms in over},
        )

    def held(self) -> Counter[str]:
        with self._lock:
            return Counter(pid for pid, _ in self._mine.values())

    def leases(self, persona_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """Every live lease per persona, any worker's: lease id -> seconds to its expiry."""
        now, flat = self._call("leases", (self._leases,), [])
        out: dict[str, dict[str, float]] = {pid: {} for pid in persona_ids}
        for member, score in zip(flat[::2], flat[1::2], strict=True):
            pid, lease_id = _owner(member)
            if pid in out:
                out[pid][lease_id] = (float(score) - int(now)) / 1000
        return out

    def describe(self) -> str:
        return self._shown

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisStore({self._shown!r}, worker_id={self.worker_id!r})"


def pack_command(*parts: str | bytes | int) -> bytes:
    """One Redis command in the wire protocol (RESP), as redis-py's packer writes it: each
    part is bytes, or a str or int sent as its UTF-8 text."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _member(persona_id: str, lease_id: str) -> str:
    """A lease's name in the leases set: its persona's id (prefixed by its length in bytes, so
    any id parses back) and the lease id."""
    return f"{len(persona_id.encode())}:{persona_id}:{lease_id}"


def _owner(member: str) -> tuple[str, str]:
    """(persona id, lease id) of a lease's name in the leases set (see `_member`)."""
    size, _, rest = member.partition(":")
    raw = rest.encode()
    end = int(size)
    return raw[:end].decode(), raw[end + 1 :].decode()


def _snapshot(
    persona_ids: Sequence[str], counts: Sequence[Any], pool_keys: Sequence[str], cursors: Any
) -> Snapshot:
    return Snapshot(
        {pid: int(n or 0) for pid, n in zip(persona_ids, counts, strict=True)},
        {key: int(c or 0) for key, c in zip(pool_keys, cursors or (), strict=True)},
    )
