"""The worker's main-process state: its load, its leases by job, and the stats endpoint.

One `Worker` per process holds the one selector and the lease book. `load` is livekit's
`load_fnc`: it reports the share of persona capacity in use (never below the CPU share, when
counted), after dropping the leases of jobs the server no longer runs (`reconcile`). A job
that ends, normally or by crashing, gives its leases back at once through the process pool's
`process_closed`; `reconcile` is the backstop. `MultiPersonaServer` is the AgentServer whose
close releases whatever is still held.

With a shared capacity store (`CAPACITY_URL`, Redis) the counts are every worker's: `load`
re-reads them each time livekit asks (every 0.5 s, in an executor thread), a `LeaseRefresher`
keeps this worker's leases alive (and puts them back at once when Redis came back empty).
While the store cannot answer, offers wait for it (`CAPACITY_WHEN_UNAVAILABLE=wait`, see
admission.py) and the load reported is the last known one, for up to CAPACITY_WAIT_S; after
that (or at once with `refuse`) the worker reports itself full (load 1.0), so LiveKit sends
rooms elsewhere, until the store answers again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from livekit.agents import AgentServer

from config.catalog import Catalog
from config.logging import get_logger
from config.settings import Settings
from workers.capacity.leases import LeaseBook
from workers.capacity.open_store import open_capacity_store
from workers.capacity.seat_returns import SeatReturns
from workers.capacity.selector import Selector
from workers.capacity.store import CapacityStoreUnavailable, LeaseRefresher
from workers.humans.availability import open_availability
from workers.humans.claims import HumanClaims
from workers.humans.core import DeskCore, per_tenant
from workers.humans.service import DeskService
from workers.main.admission import RequestHandler
from workers.main.bounded_http import summarize_accept_errors
from workers.main.cpu_load import CpuLoad
from workers.main.livekit_http import bound_livekit_http_servers
from workers.main.metrics import WorkerMetrics, shipped_scenarios
from workers.main.stats_server import StatsServer

log = get_logger("workers.main.worker_load")


class Worker:
    """The main process's state: the one selector, the leases by job, the load it reports."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        *,
        selector: Selector | None = None,
        leasebook: LeaseBook | None = None,
        cpu_load: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        if selector is None:
            selector = Selector(catalog, store=open_capacity_store(settings))
        self.selector = selector
        self.leasebook = leasebook if leasebook is not None else LeaseBook()
        # optional personas' leases handed back by job processes (opened by build_server)
        self.seat_returns = SeatReturns(self.leasebook)
        # human agents: their claims in the same store as the personas' leases (under the
        # selector's lock), their seats held in the lease book under the job (opened by
        # build_server, answering job processes from attach)
        self.desk = DeskCore(
            catalog,
            HumanClaims(self.selector.store, lock=self.selector.store_lock),
            open_availability(settings),
        )
        self.desk_service = DeskService(self.desk, self.leasebook)
        self.metrics = WorkerMetrics(
            catalog,
            self.selector.stats,
            shipped_scenarios(settings.scenarios_dir),
            humans=self.desk.overview,
        )
        self.admission = RequestHandler(
            settings, catalog, self.selector, self.leasebook, self.metrics
        )
        # None until the store was asked; False while a shared store cannot answer
        self.store_up: bool | None = None
        self._down_since = 0.0
        self._cpu_load = cpu_load if cpu_load is not None else CpuLoad()
        self.stats_server: StatsServer | None = None
        self.stats_attempted = asyncio.Event()  # set once start_stats() has succeeded or failed
        self._tasks: set[asyncio.Task[Any]] = set()

    def load(self, server: AgentServer | None = None) -> float:
        """`load_fnc` (an executor thread, every 0.5 s): drop the leases of jobs that are gone,
        then report max(persona capacity in use, CPU)."""
        if server is not None:
            self.reconcile(server)
        if self.selector.store.shared:
            try:
                self.selector.sync_counts()  # every worker's rooms, bounded by the timeout
            except CapacityStoreUnavailable as e:
                self._store_state(False, e)
                if not self._waits_for_store():
                    return 1.0  # full: LiveKit offers rooms to the workers that can cast them
            else:
                self._store_state(True)
        return max(self.selector.worker_load(), self._counted_cpu())

    def _waits_for_store(self) -> bool:
        """Whether offers still come here while the store cannot answer: with `wait`, for
        CAPACITY_WAIT_S into an outage (offers then wait for it); a longer outage is not short,
        and rooms go to workers that can cast them."""
        s = self.settings
        return (
            s.capacity_when_unavailable == "wait"
            and time.monotonic() - self._down_since < s.capacity_wait_s
        )

    def _store_state(self, up: bool, error: Exception | None = None) -> None:
        """Log the shared store going away and coming back, once each time."""
        if up == self.store_up:
            return
        self.store_up = up
        if not up:
            self._down_since = time.monotonic()
        store = self.selector.store.describe()
        if up:
            log.info("capacity_store_available", store=store)
        else:
            log.error("capacity_store_unavailable", store=store, error=str(error))

    def _counted_cpu(self) -> float:
        return self._cpu_load() if self.settings.load_counts_cpu else 0.0

    def reconcile(self, server: AgentServer) -> list[str]:
        try:
            # Public path. The list is built on the loop thread's data from this thread;
            # a stale read only delays a release to the next call.
            active = {info.job.id for info in server.active_jobs}
        except AttributeError:  # the process pool exists only once run() started
            return []
        return self.leasebook.reconcile(active)

    def on_process_closed(self, proc: Any) -> None:
        """The pool's `process_closed`: one process runs one job, so its job has ended
        (normally or by crashing); `running_job` is still set at this point."""
        info = getattr(proc, "running_job", None)
        if info is not None:
            self.admission.handoff.discard(info.job.id)  # a plan its job never took
        if info is not None and self.leasebook.release(info.job.id):
            log.info("job_leases_released", job_id=info.job.id, status=str(proc.status))

    def stats(self) -> dict[str, Any]:
        """`/stats`: with a shared store, the counts are every worker's and `own_rooms` this
        worker's share; a store that cannot answer is said, not raised."""
        try:
            selector: dict[str, Any] = self.selector.stats()
            store_state = "available"
        except CapacityStoreUnavailable as e:
            selector, store_state = {"error": str(e)}, "unavailable"
        persona_load = self.selector.worker_load() if store_state == "available" else 1.0
        cpu = self._cpu_load()
        return {
            "worker_load": round(max(persona_load, self._counted_cpu()), 4),
            "persona_load": round(persona_load, 4),
            "cpu_load": round(cpu, 4),
            "load_threshold": self.settings.load_threshold,
            "capacity_store": {
                "store": self.selector.store.describe(),
                "shared": self.selector.store.shared,
                "state": store_state,
            },
            **selector,
            "own_rooms": self.selector.own_rooms(),
            "jobs": self.leasebook.held(),
            "humans": self.humans_stats(),
        }

    def humans_stats(self) -> dict[str, Any]:
        """Human agents per tenant (available / busy / offline, seats taken) and each one's
        state and seats; with a shared store, every worker's seats. A store that cannot
        answer is said, not raised."""
        if not self.catalog.human_agents:
            return {"tenants": {}, "agents": []}
        try:
            rows = self.desk.overview()
        except CapacityStoreUnavailable as e:
            return {"error": str(e)}
        return {"tenants": per_tenant(rows), "agents": [row.to_dict() for row in rows]}

    def attach(self, server: AgentServer) -> None:
        """From `worker_started`: watch job ends, start the stats endpoint."""
        summarize_accept_errors(asyncio.get_running_loop())
        # Private API (livekit-agents 1.8): the pool only exists once run() started, and its
        # `process_closed` is the only immediate "job ended" signal, crashes included.
        # `reconcile()` over the public `server.active_jobs` in load() is the backstop.
        pool = getattr(server, "_proc_pool", None)
        if pool is not None:
            pool.on("process_closed", self.on_process_closed)
        else:
            log.warning("job_end_hook_unavailable", fallback="reconcile with active_jobs")
        if self.settings.openai_key() is None:
            log.warning(
                "openai_key_missing",
                models="offline",
                hint="personas speak their script lines; set OPENAI_API_KEY for real models",
            )
        self._start(self.start_stats())
        self.seat_returns.listen()
        self._start(self.desk_service.listen())
        if self.selector.store.shared:
            refresher = LeaseRefresher(
                self.selector.store,
                self.settings.capacity_refresh_s,
                on_error=lambda e: self._store_state(False, e),
            )
            self._start(refresher.run())
        if self.settings.prometheus_port is not None:
            self.metrics.register()  # on livekit's /metrics (AgentServer prometheus_port)

    def _start(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start_stats(self) -> None:
        s = self.settings
        server = StatsServer(
            self.stats, host=s.stats_host, port=s.stats_port, log_interval_s=s.stats_log_interval_s
        )
        try:
            await server.start()
            self.stats_server = server
        except OSError as e:  # a busy port must not stop the worker from taking rooms
            log.error(
                "stats_server_failed",
                error=str(e),
                hint="set STATS_PORT to a free port (0 picks one) for each worker on a host",
            )
        finally:
            self.stats_attempted.set()

    async def aclose(self) -> None:
        """Worker closed: every job process is gone, so nothing may stay reserved."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.stats_server is not None:
            await self.stats_server.aclose()
            self.stats_server = None
        self.seat_returns.close()
        await self.desk_service.aclose()
        released = self.leasebook.release_all()
        self.desk.states.close()
        self.metrics.unregister()
        self.selector.close()  # a shared store's connections; its leases were released above
        log.info("worker_closed", released_jobs=released)


@bound_livekit_http_servers
class MultiPersonaServer(AgentServer):
    """An AgentServer whose close also releases every lease and stops the stats endpoint, and
    whose own HTTP servers (health, Prometheus) are bounded like `/stats`.
    The CLI drains (`start`: running rooms finish) and then calls aclose()."""

    def __init__(self, worker: Worker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.worker = worker
        # Why run() ended, if it failed (e.g. livekit gave up connecting): livekit's CLI logs
        # it and exits 0, so the command reads it here to exit non-zero.
        self.run_error: Exception | None = None

    def _get_effective_load(self) -> float:
        """The load livekit compares with `load_threshold` before it answers an offer
        (`_is_available`) and in the status it reports (`_update_worker_status`): ours alone.

        Private API (livekit-agents 1.8.9, tests/test_worker_availability.py fails loudly if it
        changes). livekit adds, for each room accepted but not yet launched (`_reserved_slots`,
        taken before our request_fnc runs), an estimate of its load: `load_threshold /
        num_idle_processes` while no room runs, so with one prewarmed process the worker reads
        as full while its first room launches and a room offered meanwhile goes elsewhere or
        nowhere. No estimate is needed here: our load (`Worker.load`, re-read by livekit just
        before each answer) counts a room's personas from the moment the selector casts it,
        synchronously inside request_fnc and before accept; a room not cast yet has no known
        cost (it depends on its scenario), and the selector refuses, under its lock, a cast
        that does not fit, so offers racing each other cannot overbook the personas. Adding
        livekit's estimate would count each cast-but-not-launched room twice."""
        return self._worker_load

    async def run(self, *, devmode: bool = False, unregistered: bool = False) -> None:
        try:
            await super().run(devmode=devmode, unregistered=unregistered)
        except Exception as e:
            self.run_error = e
            raise

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.worker.aclose()
