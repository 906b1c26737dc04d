"""The capacity store behind the selector (issue 16): atomic claims, leases that expire unless
refreshed, Redis down or slow as one clear state that recovers by itself, and no lease counted
twice. On a real redis-server (tests/redis_server.py); the selector's own rules run on both
stores in tests/test_selector.py, many processes on one Redis in
tests/test_capacity_store_processes.py."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pytest

from config.catalog import Catalog
from config.scenario import Scenario
from tests.test_selector import campaign, make_catalog, persona, scenario, trio
from workers.capacity.memory_store import MemoryStore
from workers.capacity.open_store import open_capacity_store
from workers.capacity.redis_store import RedisStore, redact_url, settle_window
from workers.capacity.selector import NoCapacity, Selector
from workers.capacity.store import (
    CapacityStoreSettling,
    CapacityStoreUnavailable,
    Claimant,
    ClaimRefused,
    LeaseRefresher,
    Move,
    Snapshot,
    Watch,
)

pytestmark = pytest.mark.integration  # a real redis-server

WAIT_S = 5.0  # a hang guard for polling, not a performance check


def wait_for(check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll `check` until it holds; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after {timeout} s: {check.__doc__ or check}")
        time.sleep(0.01)


@dataclass
class Seat:
    """What a claim reads of a persona (the selector passes its own record)."""

    id: str
    cap: int


@dataclass
class Rotation:
    """A pool's round-robin position as a claimer saw it."""

    key: str
    cursor: int


@pytest.fixture
def stores(redis_url: str) -> Iterator[Callable[..., RedisStore]]:
    made: list[RedisStore] = []

    def make(url: str = redis_url, **options: float | str) -> RedisStore:
        made.append(RedisStore(url, **options))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for store in made:
        store.close()


def claim_when_settled(store: RedisStore, job_id: str, *seats: Seat) -> tuple[str, ...]:
    """A claim on a Redis that may still settle (new or just emptied), once it has."""
    claimed: list[tuple[str, ...]] = []

    def settled() -> bool:
        """the store's settle window is over"""
        try:
            claimed.append(store.claim(job_id, seats, [], ((), ())))
        except CapacityStoreSettling:
            return False
        return True

    wait_for(settled)
    return claimed[0]


def counts(store: RedisStore, *ids: str) -> dict[str, int]:
    return store.snapshot(ids, ()).counts


def dispatch_pair() -> tuple[Catalog, Scenario]:
    """Dispatchers d1 (cap 1), d2; drivers r1 (cap 1), r2: a two-slot cast."""
    dispatchers = [persona(pid, "dispatcher", cap=1) for pid in ("d1", "d2")]
    drivers = [persona(pid, cap=1) for pid in ("r1", "r2")]
    chain = [("d1", "primary"), ("d2", "backup"), ("r1", "primary"), ("r2", "backup")]
    cat = make_catalog([*dispatchers, *drivers], [campaign("c1", chain)])
    return cat, scenario("c1", {"role": "dispatcher"}, {"role": "driver"})


# -- the claim primitive, on both stores ------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def any_store(request: pytest.FixtureRequest) -> Iterator[MemoryStore | RedisStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    store = RedisStore(request.getfixturevalue("redis_url"))
    yield store
    store.close()


def test_a_claim_takes_every_room_or_none(any_store):
    a, b, c = Seat("a", 1), Seat("b", 2), Seat("c", 5)
    watch = (("a", "b", "c"), ())
    assert len(any_store.claim("j1", [a, b], [], watch)) == 2
    with pytest.raises(ClaimRefused) as refused:
        any_store.claim("j2", [c, b, a], [], watch)  # a is full: c and b are not taken either
    assert refused.value.snapshot.counts == {"a": 1, "b": 1, "c": 0}
    assert any_store.snapshot(("a", "b", "c"), ()).counts == {"a": 1, "b": 1, "c": 0}


def test_a_claim_moves_a_round_robin_only_from_where_the_claimer_saw_it(any_store):
    pool, seat = Rotation("c1/driver", 0), Seat("a", 9)
    watch = (("a",), ("c1/driver",))
    any_store.claim("j1", [seat], [(pool, 1)], watch)  # seen at 0, moved to 1
    with pytest.raises(ClaimRefused) as refused:
        any_store.claim("j2", [seat], [(pool, 1)], watch)  # still thinks it is at 0
    assert refused.value.snapshot.cursors == {"c1/driver": 1}
    assert refused.value.snapshot.counts == {"a": 1}  # the refused claim took no room
    any_store.claim("j3", [seat], [(Rotation("c1/driver", 1), 2)], watch)
    assert any_store.snapshot((), ("c1/driver",)).cursors == {"c1/driver": 2}


# -- leases on Redis: expiry, refresh, idempotent release -------------------------------------


def test_a_lease_nobody_refreshes_expires_and_a_refreshed_one_is_pushed_back(stores):
    store = stores(lease_ttl_s=1.0)
    (kept,) = store.claim("j1", [Seat("a", 3)], [], ((), ()))
    assert 0 < store.leases(["a"])["a"][kept] <= 1.0
    wait_for(lambda: store.leases(["a"])["a"][kept] < 0.8)  # some of its TTL has gone by
    done = store.refresh()
    assert (done.refreshed, done.restored, done.over) == (1, [], {})
    assert store.leases(["a"])["a"][kept] > 0.9  # its expiry moved on: a full TTL from now
    other = stores(lease_ttl_s=1.0)  # another worker: claims, then never refreshes
    (dropped,) = other.claim("j2", [Seat("a", 3)], [], ((), ()))
    assert counts(store, "a") == {"a": 2}

    def only_the_refreshed_lease_left() -> bool:
        store.refresh()
        return list(store.leases(["a"])["a"]) == [kept]

    wait_for(only_the_refreshed_lease_left)
    assert dropped not in store.leases(["a"])["a"]


def test_release_is_idempotent_and_only_frees_its_own_lease(stores):
    store = stores()
    first, second = (store.claim(f"j{i}", [Seat("a", 2)], [], ((), ()))[0] for i in (1, 2))
    store.release([(first, "a")])
    store.release([(first, "a")])
    assert list(store.leases(["a"])["a"]) == [second]
    assert store.held() == {"a": 1}


def test_a_refresh_takes_back_leases_redis_lost_while_there_is_room(stores, redis_server):
    store = stores()
    held = store.claim("j1", [Seat("a", 1), Seat("b", 1)], [], ((), ()))
    redis_server.flush()  # as a restart without persistence would
    done = store.refresh()
    assert done.restored == list(held) and done.over == {}
    assert counts(store, "a", "b") == {"a": 1, "b": 1}  # each room counted once


def test_a_worker_whose_leases_expired_takes_them_back_over_the_limit_and_says_so(stores, events):
    """21.1: a worker that could not refresh for longer than the TTL (paused) finds its
    personas cast meanwhile. Its rooms still run, so it takes its leases back: the persona is
    over its limit by the rooms that worker held, logged once, and no new room is cast onto it
    until it is back under its limit."""
    paused = stores(lease_ttl_s=0.3)
    (mine,) = paused.claim("j1", [Seat("a", 1)], [], ((), ()))
    other = stores()

    def expired() -> bool:
        """the paused worker's lease outlived its TTL"""
        return counts(other, "a") == {"a": 0}

    wait_for(expired)
    (theirs,) = other.claim("j2", [Seat("a", 1)], [], ((), ()))
    refresher = LeaseRefresher(paused)
    done = refresher.refresh_once()
    assert done is not None and done.restored == [mine] and done.over == {"a": (2, 1)}
    assert refresher.refresh_once() is not None  # still over: not logged again
    assert events().count("persona_over_capacity") == 1
    assert counts(other, "a") == {"a": 2} and paused.held() == {"a": 1}
    with pytest.raises(ClaimRefused):
        other.claim("j3", [Seat("a", 1)], [], ((), ()))
    other.release([(theirs, "a")])  # 1 of 1: at its limit, still no new room
    with pytest.raises(ClaimRefused):
        other.claim("j4", [Seat("a", 1)], [], ((), ()))
    paused.release([(mine, "a")])
    other.claim("j5", [Seat("a", 1)], [], ((), ()))  # under its limit again


def test_after_redis_restarts_empty_no_claim_goes_through_before_running_rooms_are_back(
    own_redis_server, stores
):
    """21.1: Redis restarted without persistence forgets every lease while rooms run. The
    first claim after it waits for the settle window, in which every worker's refresher puts
    its rooms back; so a worker that never held the persona cannot cast it over its limit."""
    url = own_redis_server.url
    holder = stores(url, settle_s=1.0, retry_after_s=0.05)
    newcomer = stores(url, settle_s=1.0, retry_after_s=0.05)
    (held,) = claim_when_settled(holder, "j1", Seat("a", 1))  # a new Redis settles too
    own_redis_server.stop()
    own_redis_server.start()  # empty
    with pytest.raises(CapacityStoreSettling) as settling:
        newcomer.claim("j2", [Seat("a", 1)], [], ((), ()))
    assert 0 < settling.value.left_s <= 1.0
    # the holder's refresher, at its next check, sees Redis lost its leases and puts them back
    assert LeaseRefresher(holder).due()
    assert holder.refresh().restored == [held]
    assert counts(newcomer, "a") == {"a": 1}

    def refused_as_full() -> bool:
        """once settled, the newcomer's claim is refused: a is full"""
        try:
            newcomer.claim("j3", [Seat("a", 1)], [], ((), ()))
        except CapacityStoreSettling:
            return False
        except ClaimRefused:
            return True
        pytest.fail("a claim went through while the holder's room runs")

    wait_for(refused_as_full)
    assert counts(newcomer, "a") == {"a": 1}


async def test_running_refreshers_keep_every_limit_through_a_redis_restart(
    own_redis_server, stores
):
    """21.1, end to end in one process: two workers' refreshers run, one worker's rooms fill
    persona a; Redis restarts empty; the other worker keeps trying to cast a from the moment
    Redis answers. It is never let through (0 over-limit moments)."""
    url = own_redis_server.url
    holder = stores(url, settle_s=settle_window(0.25))
    newcomer = stores(url, settle_s=settle_window(0.25))
    for job in ("j1", "j2"):
        claim_when_settled(holder, job, Seat("a", 2))
    tasks = [asyncio.create_task(LeaseRefresher(s, 5.0).run()) for s in (holder, newcomer)]
    try:
        own_redis_server.stop()
        own_redis_server.start()
        outcomes: list[str] = []
        deadline = time.monotonic() + 3 * settle_window(0.25)
        while time.monotonic() < deadline and outcomes[-1:] != ["refused"]:
            try:
                await asyncio.to_thread(newcomer.claim, "j3", [Seat("a", 2)], [], ((), ()))
            except CapacityStoreUnavailable:
                outcomes.append("waiting")
            except ClaimRefused:
                outcomes.append("refused")
            else:
                outcomes.append("cast")
            await asyncio.sleep(0.05)
        assert "cast" not in outcomes and outcomes[-1] == "refused", outcomes
        assert counts(newcomer, "a") == {"a": 2}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_lease_ids_name_the_worker_and_the_job(stores, redis_url):
    sel = Selector(trio("primary_first"), store=stores(worker_id="w-7"))
    lease = sel.acquire("c1", "driver", job_id="AJ_1")
    assert lease.id.startswith("w-7:AJ_1:")
    assert sel.own_rooms() == {"a": 1}


# -- selectors sharing one Redis --------------------------------------------------------------


def test_workers_share_one_capacity(stores):
    cat = trio("primary_first", caps=(1, 1, 1))
    one, two = (Selector(cat, store=stores()) for _ in range(2))
    assert one.acquire("c1", "driver").persona.id == "a"
    lease = two.acquire("c1", "driver")
    assert (lease.persona.id, lease.reason) == ("b", "backup: primary at capacity")
    assert two.stats()["summary"]["total_active_rooms"] == 2  # everyone's rooms
    assert (one.own_rooms(), two.own_rooms()) == ({"a": 1}, {"b": 1})
    assert one.active_rooms("b") == 1
    one.sync_counts()
    assert one.worker_load() == pytest.approx(2 / 3)


def test_round_robin_and_least_loaded_see_every_worker(stores):
    rr = [Selector(trio("round_robin", caps=(9, 9, 9)), store=stores()) for _ in range(2)]
    got = [rr[i % 2].acquire("c1", "driver").persona.id for i in range(7)]
    assert got == ["a", "b", "c", "a", "b", "c", "a"]
    ll = [Selector(trio("least_loaded", caps=(9, 9, 9)), store=stores(prefix="{ll}"))]
    ll.append(Selector(trio("least_loaded", caps=(9, 9, 9)), store=stores(prefix="{ll}")))
    for pid in ("a", "a", "b"):
        ll[0].acquire_persona(pid)
    lease = ll[1].acquire("c1", "driver")
    assert (lease.persona.id, lease.reason) == ("c", "least loaded (0 of 9)")


class RacingStore(RedisStore):
    """A real store that lets `rival` run between a snapshot and the claim that follows it:
    the lost race, made to happen on cue."""

    rival: Callable[[], object] | None = None

    def snapshot(self, persona_ids: Sequence[str], pool_keys: Sequence[str]) -> Snapshot:
        seen = super().snapshot(persona_ids, pool_keys)
        rival, self.rival = self.rival, None
        if rival is not None:
            rival()
        return seen


def test_a_claim_that_lost_the_race_chooses_again_from_fresh_counts(redis_url, stores):
    cat = trio("primary_first", caps=(1, 1, 1))
    racing = RacingStore(redis_url)
    mine, rival = Selector(cat, store=racing), Selector(cat, store=stores())
    racing.rival = lambda: rival.acquire("c1", "driver")  # takes a, the last room I saw free
    lease = mine.acquire("c1", "driver")
    assert (lease.persona.id, lease.reason) == ("b", "backup: primary at capacity")
    assert mine.stats()["summary"]["total_active_rooms"] == 2
    racing.close()


def test_a_cast_is_claimed_whole_or_not_at_all_when_a_rival_takes_its_last_room(redis_url, stores):
    cat, pair = dispatch_pair()
    racing = RacingStore(redis_url)
    mine, rival = Selector(cat, store=racing), Selector(cat, store=stores())
    rival.acquire_persona("r2")
    racing.rival = lambda: rival.acquire_persona("r1")  # the last driver, after my snapshot
    with pytest.raises(NoCapacity) as info:
        mine.cast(pair)
    assert info.value.role == "driver"
    assert mine.active_rooms("d1") == 0 and mine.own_rooms() == {}  # no dispatcher kept
    racing.close()


class AlwaysBeatenStore(RedisStore):
    """A real store whose every claim comes just after a rival's round-robin acquire."""

    rival: Selector | None = None

    def claim(
        self,
        job_id: str,
        personas: Sequence[Claimant],
        moves: Sequence[Move],
        watch: Watch,
        seen: Sequence[int] | None = None,
    ) -> tuple[str, ...]:
        if self.rival is not None:
            self.rival.acquire("c1", "driver")
        return super().claim(job_id, personas, moves, watch, seen)


def test_a_worker_that_always_loses_the_race_gives_up_as_no_capacity(redis_url, stores):
    cat = trio("round_robin", caps=(99, 99, 99))
    beaten = AlwaysBeatenStore(redis_url)
    beaten.rival = Selector(cat, store=stores())
    sel = Selector(cat, store=beaten)
    with pytest.raises(NoCapacity, match=r"8 times in a row \(capacity store contended\)"):
        sel.acquire("c1", "driver")
    assert sel.own_rooms() == {}
    assert beaten.rival.stats()["summary"]["total_active_rooms"] == 8  # the rival's, only
    beaten.close()


# -- Redis down or slow -----------------------------------------------------------------------


def test_no_redis_is_unavailable_at_once_not_no_capacity(stores):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sel = Selector(trio("primary_first"), store=stores(f"redis://127.0.0.1:{port}/0"))
    assert not issubclass(CapacityStoreUnavailable, NoCapacity)
    started = time.monotonic()
    with pytest.raises(CapacityStoreUnavailable, match=f"redis://127.0.0.1:{port}/0 unavailable"):
        sel.acquire("c1", "driver")
    with pytest.raises(CapacityStoreUnavailable, match="retrying by itself"):
        sel.cast(scenario("c1", {"role": "driver"}))  # within the cool-down: no new attempt
    assert time.monotonic() - started < 1.0
    assert sel.worker_load() == 0.0 and sel.own_rooms() == {}  # nothing half-taken


def test_a_slow_redis_times_out_and_the_claim_it_ran_late_is_given_back_at_once(
    own_redis_server, stores
):
    """21.2: a claim whose answer comes late (Redis slow, a slow network) may still run on
    Redis after the worker gave up on it. That phantom lease must not hold a room until it
    expires (20 s): the refresher's next check (every 0.5 s) gives it back."""
    store = stores(own_redis_server.url, retry_after_s=0.0)
    store.release([(store.claim("j0", [Seat("a", 3)], [], ((), ()))[0], "a")])  # scripts loaded
    own_redis_server.pause()
    started = time.monotonic()
    with pytest.raises(CapacityStoreUnavailable, match="Timeout"):
        store.claim("j1", [Seat("a", 3)], [], ((), ()))
    assert time.monotonic() - started < 1.0  # CAPACITY_TIMEOUT_S (0.25 s), no second try
    own_redis_server.resume()
    watcher = stores(own_redis_server.url)

    def ran_late() -> bool:
        """Redis ran the claim once it could: a lease nobody thinks it holds"""
        return counts(watcher, "a") == {"a": 1}

    wait_for(ran_late)
    assert store.held() == {}  # the worker never thought it held it
    refresher = LeaseRefresher(store)
    assert refresher.due()  # without waiting for the refresh period
    assert refresher.refresh_once() is not None
    assert counts(watcher, "a", "b", "c") == {"a": 0, "b": 0, "c": 0}
    assert not refresher.due()


def test_redis_stopped_mid_run_recovers_by_itself_with_no_double_count(
    own_redis_server, stores, events
):
    cat, pair = dispatch_pair()
    store = stores(own_redis_server.url, retry_after_s=0.05)
    sel = Selector(cat, store=store)
    held = sel.cast(pair)
    own_redis_server.stop()
    started = time.monotonic()
    with pytest.raises(CapacityStoreUnavailable):
        sel.cast(pair)
    assert time.monotonic() - started < 1.0
    own_redis_server.start()  # empty: no persistence

    def casts_again() -> bool:
        """the first call after the outage counts the rooms still running, then casts"""
        try:
            sel.cast(pair)
        except CapacityStoreUnavailable:
            return False
        return True

    wait_for(casts_again)
    assert [m.persona.id for m in held.members] == ["d1", "r1"]
    by_id = {row["id"]: row["active"] for row in sel.stats()["personas"]}
    assert by_id == {"d1": 1, "d2": 1, "r1": 1, "r2": 1}  # each lease once
    logged = events()
    assert logged.count("capacity_store_unavailable") == 1  # once per outage, not per call
    assert "capacity_leases_restored" in logged and "capacity_store_recovered" in logged


class DroppingProxy:
    """A TCP relay to Redis that drops the reply to the first request containing `marker`
    (once armed) and closes that connection: a claim that ran on the server while its answer
    was lost on the way."""

    def __init__(self, port: int) -> None:
        self._upstream = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.marker: bytes | None = None
        self.dropped = threading.Event()
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._upstream))
            self._sockets += [client, server]
            doomed = threading.Event()  # this connection's next reply is to be lost
            for src, dst, replies in ((client, server, False), (server, client, True)):
                args = (src, dst, replies, doomed)
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, replies: bool, doomed: threading.Event
    ) -> None:
        try:
            while data := src.recv(65536):
                if not replies and self.marker is not None and self.marker in data:
                    self.marker = None
                    doomed.set()
                if replies and doomed.is_set():
                    self.dropped.set()
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):  # shutdown first: it wakes the other direction's recv
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        for s in self._sockets:
            s.close()


def test_a_claim_whose_reply_was_lost_counts_once(redis_server, stores):
    proxy = DroppingProxy(redis_server.port)
    try:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        store = stores(url, worker_id="w-lost")
        sel = Selector(trio("primary_first", caps=(1, 1, 1)), store=store)
        sel.acquire("c1", "driver").release()  # connected, scripts loaded
        proxy.marker = b"w-lost:"  # in the claim's lease ids only
        # Sent again on a new connection, with the same lease id: a's one room is that
        # lease's already, not a full persona (which would send the room to b as well).
        lease = sel.acquire("c1", "driver")
        assert proxy.dropped.is_set() and lease.persona.id == "a"
        leases = stores().leases(["a", "b", "c"])
        assert leases == {"a": {lease.id: pytest.approx(20.0, abs=1.0)}, "b": {}, "c": {}}
        assert sel.active_rooms("a") == 1
    finally:
        proxy.close()


def test_a_release_while_redis_is_down_is_logged_and_left_to_expire(
    own_redis_server, stores, events
):
    sel = Selector(trio("primary_first"), store=stores(own_redis_server.url))
    lease = sel.acquire("c1", "driver")
    own_redis_server.stop()
    lease.release()  # never raises: a room's end must not fail on the store
    assert lease.released and sel.own_rooms() == {}
    assert "capacity_release_deferred" in events()


# -- the refresher, the factory, the URL ------------------------------------------------------


async def test_the_refresher_keeps_going_through_errors(own_redis_server):
    store = RedisStore(own_redis_server.url, retry_after_s=0.0)
    store.claim("j", [Seat("a", 1)], [], ((), ()))
    own_redis_server.stop()  # a lease to refresh, and no Redis to refresh it on
    errors: list[CapacityStoreUnavailable] = []
    seen = asyncio.Event()

    def on_error(exc: CapacityStoreUnavailable) -> None:
        errors.append(exc)
        if len(errors) == 3:
            seen.set()

    task = asyncio.create_task(LeaseRefresher(store, 0.01, on_error=on_error).run())
    await asyncio.wait_for(seen.wait(), WAIT_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    store.close()
    assert all("unavailable" in str(e) for e in errors)


def test_the_refresher_refuses_a_zero_interval():
    with pytest.raises(ValueError, match="interval_s must be above 0"):
        LeaseRefresher(MemoryStore(), 0)


def test_the_store_comes_from_the_settings(redis_url):
    from config.settings import Settings

    assert isinstance(open_capacity_store(Settings(_env_file=None)), MemoryStore)
    settings = Settings(
        _env_file=None, capacity_url=redis_url, capacity_lease_ttl_s=9, capacity_refresh_s=3
    )
    store = open_capacity_store(settings, worker_id="w1")
    try:
        assert isinstance(store, RedisStore) and store.describe() == redis_url
        # a Redis just emptied: the worker's store waits out the settle window before casting
        with pytest.raises(CapacityStoreSettling):
            store.claim("j", [Seat("a", 1)], [], ((), ()))
        (lease_id,) = claim_when_settled(store, "j", Seat("a", 1))
        assert store.leases(["a"])["a"][lease_id] == pytest.approx(9.0, abs=0.5)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://user:s3cret@host/1", "rediss://user:***@host/1"),
        ("unix://user:s3cret@/run/redis.sock?db=0", "unix://user:***@/run/redis.sock?db=0"),
        ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock?db=0&password=***"),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_a_url_is_shown_without_its_password(url, shown):
    assert redact_url(url) == shown


def test_a_store_url_that_is_not_redis_is_refused_without_repeating_it():
    with pytest.raises(ValueError, match="CAPACITY_URL must be a redis://") as info:
        RedisStore("http://:s3cret@host/")
    assert "s3cret" not in str(info.value)


class CountingStore(RedisStore):
    """A real store that counts the calls a selector makes to it (each one round trip)."""

    calls: list[str]

    def snapshot(self, persona_ids: Sequence[str], pool_keys: Sequence[str]) -> Snapshot:
        self.calls.append("snapshot")
        return super().snapshot(persona_ids, pool_keys)

    def claim(
        self,
        job_id: str,
        personas: Sequence[Claimant],
        moves: Sequence[Move],
        watch: Watch,
        seen: Sequence[int] | None = None,
    ) -> tuple[str, ...]:
        self.calls.append("claim")
        return super().claim(job_id, personas, moves, watch, seen)


def test_a_cast_from_known_counts_is_one_round_trip_and_still_sees_every_worker(redis_url, stores):
    """27.4: once a selector knows the counts (as `load` reads them every 0.5 s), a cast is one
    claim: no snapshot first. A claim chosen from counts another worker changed meanwhile is
    refused and chosen again from the fresh counts, as a snapshot would have chosen."""
    cat = trio("least_loaded", caps=(3, 3, 3))
    store = CountingStore(redis_url)
    store.calls = []
    mine, other = Selector(cat, store=store), Selector(cat, store=stores())
    mine.sync_counts()
    store.calls.clear()
    first = mine.cast(scenario("c1", {"role": "driver"}))
    assert store.calls == ["claim"]
    taken = first.members[0].persona.id
    for pid in sorted({"a", "b", "c"} - {taken}):
        other.acquire_persona(pid)  # every driver at 1: by my counts the others are still 0
    store.calls.clear()
    second = mine.cast(scenario("c1", {"role": "driver"}))
    assert store.calls == ["claim", "claim"]  # refused with fresh counts, then chosen again
    assert mine.stats()["summary"]["total_active_rooms"] == 4  # every worker's rooms, once
    first.release()
    second.release()
    store.close()
