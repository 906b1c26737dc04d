"""Admission: whether this worker takes a room LiveKit offers it, and with which cast.

`RequestHandler.handle` is the worker's `on_request` (main process, where load is known). It
parses the job's metadata (an inline scenario, or a scenario name resolved only inside
`scenarios/`), asks the worker's one selector for a cast, and decides:
- `Accept`: the cast's leases are held under the job id BEFORE accepting, the plan is left for
  the job process (`PlanHandoff`), and the job participant takes the opener's identity, name
  and attributes; a failed accept gives the leases back.
- `Reject`: bad metadata, no cast (and no voicemail persona free), a plan too large for the job,
  or a shared capacity store that cannot answer (`capacity_store_unavailable`); rejected with
  terminate=False so LiveKit may offer the room to another worker. A store that cannot answer
  is waited for first, up to CAPACITY_WAIT_S (`CAPACITY_WHEN_UNAVAILABLE=wait`, the default):
  livekit-server gives an offer 3 s (psrpc's default request timeout) and drops a room every
  worker refused, so a Redis outage (or a Redis settling after it came back empty) shorter
  than the wait loses no room.
`handle` never raises: any error is logged and becomes a reject, so the worker keeps serving
other rooms. `cast_in_job` applies the same rules inside a job that came with no plan.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit.agents import JobContext, JobRequest

from config.catalog import Catalog
from config.logging import get_logger
from config.scenario import Scenario
from config.settings import Settings
from workers.capacity.leases import LeaseBook, Releasable
from workers.capacity.selector import (
    INBOUND_STRATEGY,
    CapacityStoreUnavailable,
    Lease,
    NoCapacity,
    Selector,
)
from workers.job.plan import (
    BadMetadata,
    JobPlan,
    parse_job_metadata,
    voicemail_plan,
)
from workers.job.plan_handoff import PlanHandoff, public_metadata
from workers.main.metrics import WorkerMetrics
from workers.tokens import persona_attributes, persona_identity

log = get_logger("workers.main.admission")

STORE_POLL_S = 0.1  # how often an offer waiting for the capacity store asks again


@dataclass
class Accept:
    """A cast for the room. It holds leases: whoever gets it must hold or release them."""

    plan: JobPlan
    leases: list[Releasable]
    plan_text: str  # the plan as the job process reads it (private: never accept's metadata)


@dataclass
class Reject:
    """No room here: `problem` is a short code for logs, `detail` says why."""

    problem: str
    detail: str
    bad_metadata: bool = False
    scenario: str = ""  # when the metadata named one


def release_leases(leases: Iterable[Releasable]) -> None:
    for lease in leases:
        lease.release()


def plan_directory(settings: Settings) -> Path:
    """Where plans wait for their job process: beside the transcripts, which main and job
    processes both read from the same settings."""
    return settings.transcripts_dir / ".plans"


class RequestHandler:
    """`on_request`: cast or reject. It never raises: the worker keeps serving other rooms."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        selector: Selector,
        leasebook: LeaseBook,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.selector = selector
        self.leasebook = leasebook
        self.metrics = metrics
        self.handoff = PlanHandoff(plan_directory(settings))

    async def handle(self, req: JobRequest) -> None:
        rlog = log.bind(job_id=req.id, room=req.room.name)
        metadata = req.job.metadata or req.room.metadata
        try:
            if self.selector.store.shared:
                decision = await self._decide_when_store_answers(metadata, req.id, rlog)
            else:
                decision = self.decide(metadata, req.id)
        except Exception as e:
            rlog.exception("job_request_failed", error=repr(e))
            decision = Reject("internal_error", repr(e))
        if isinstance(decision, Reject):
            self._count(decision.scenario, "rejected", decision.problem)
            await self._reject(req, decision, rlog)
            return
        await self._accept(req, decision, rlog)

    async def _decide_when_store_answers(
        self, metadata: str, job_id: str, rlog: Any
    ) -> Accept | Reject:
        """`decide` on a shared store: over the network (each call bounded by
        CAPACITY_TIMEOUT_S), off the event loop, which keeps serving the running jobs. While
        the store cannot answer, ask again until CAPACITY_WAIT_S has passed (`wait`)."""
        s = self.settings
        wait_s = s.capacity_wait_s if s.capacity_when_unavailable == "wait" else 0.0
        deadline = time.monotonic() + wait_s
        waited = False
        while True:
            decision = await asyncio.to_thread(self.decide, metadata, job_id)
            unavailable = (
                isinstance(decision, Reject) and decision.problem == "capacity_store_unavailable"
            )
            left = deadline - time.monotonic()
            if not unavailable or left <= 0:
                if waited:
                    rlog.info(
                        "capacity_store_waited",
                        answered=not unavailable,
                        waited_s=round(wait_s - max(0.0, left), 2),
                    )
                return decision
            waited = True
            await asyncio.sleep(min(STORE_POLL_S, left))

    def _count(self, scenario: str, outcome: str, reason: str = "") -> None:
        if self.metrics is not None:
            self.metrics.offered(scenario, outcome, reason)

    def decide(self, metadata: str, job_id: str = "") -> Accept | Reject:
        """Parse and cast. An `Accept` holds leases: the caller must hold or release them."""
        try:
            request = parse_job_metadata(
                metadata, catalog=self.catalog, scenarios_dir=self.settings.scenarios_dir
            )
        except BadMetadata as e:
            return Reject(e.problem, e.detail, bad_metadata=True)
        scenario = request.scenario
        leases: list[Releasable] = []
        try:
            try:
                cast = self.selector.cast(
                    scenario, INBOUND_STRATEGY if request.inbound else None, job_id=job_id
                )
                leases = [m.lease for m in cast.members]
                plan = JobPlan.from_cast(scenario, cast)
            except CapacityStoreUnavailable as exc:
                # another worker may reach the store, or it may be back by the next offer
                return Reject("capacity_store_unavailable", str(exc), scenario=scenario.name)
            except NoCapacity as exc:
                if scenario.on_no_cast != "voicemail":
                    return Reject("no_cast", str(exc), scenario=scenario.name)
                lease_or_reject = self._voicemail_lease(scenario, exc, job_id)
                if isinstance(lease_or_reject, Reject):
                    return lease_or_reject
                leases = [lease_or_reject]
                plan = voicemail_plan(scenario, self.catalog, reason=lease_or_reject.reason)
            # no size check: the plan goes by file (see workers/job/plan.py)
            text = plan.to_handoff()
        except BaseException:
            release_leases(leases)
            raise
        return Accept(plan, leases, text)

    def _voicemail_lease(self, scenario: Scenario, exc: NoCapacity, job_id: str) -> Lease | Reject:
        persona_id = self.catalog.voicemail_persona
        if persona_id is None:
            return Reject(
                "no_cast",
                f"{exc}; and the catalog has no voicemail_persona",
                scenario=scenario.name,
            )
        try:
            return self.selector.acquire_persona(
                persona_id,
                role="voicemail",
                campaign_id=scenario.campaign,
                reason=f"voicemail: no cast ({exc})",
                job_id=job_id,
            )
        except CapacityStoreUnavailable as store_exc:
            return Reject("capacity_store_unavailable", str(store_exc), scenario=scenario.name)
        except NoCapacity as vm_exc:
            return Reject("no_cast", f"{exc}; voicemail: {vm_exc.reason}", scenario=scenario.name)

    async def _reject(self, req: JobRequest, decision: Reject, rlog: Any) -> None:
        event = rlog.warning if decision.bad_metadata else rlog.info
        event(
            "job_rejected",
            problem=decision.problem,
            detail=decision.detail,
            bad_metadata=decision.bad_metadata,
        )
        try:
            # terminate=False: LiveKit may offer the room to another worker
            await req.reject(terminate=False)
        except Exception as e:
            rlog.warning("job_reject_failed", error=repr(e))

    async def _accept(self, req: JobRequest, decision: Accept, rlog: Any) -> None:
        plan = decision.plan
        own = plan.job_persona
        labels = [f"{m.role}:{m.persona_id}" for m in plan.members]
        # Held BEFORE accept: once accepted the job may start (and end) at any moment.
        self.leasebook.hold(req.id, decision.leases, labels=labels)
        try:
            # the plan goes privately; the room sees only who the opener is
            self.handoff.put(req.id, decision.plan_text)
            await req.accept(
                identity=persona_identity(own.id, req.room.name, req.id),
                name=own.name,
                attributes=persona_attributes(own, plan.scenario.campaign),
                metadata=public_metadata(own.id, own.role, req.room.name),
            )
        except BaseException as e:
            self.leasebook.release(req.id)
            self.handoff.discard(req.id)
            if not isinstance(e, Exception):
                raise
            # e.g. the server's assignment timed out: the job will not run here
            rlog.warning("job_accept_failed", error=repr(e))
            return
        self._count(plan.scenario.name, "voicemail" if plan.voicemail else "accepted")
        rlog.info("job_accepted", **plan.summary())


def cast_in_job(ctx: JobContext, settings: Settings, catalog: Catalog) -> Accept | Reject:
    """No plan came with the job: `connect --room R` builds the job itself, with no
    on_request. The job then casts for itself, with the same rules as on_request, from the
    job's metadata or the room's (`workers.dispatch` names the scenario there). Its selector
    knows only this room: the worker's capacity accounting does not see it."""
    metadata = ctx.job.metadata or ctx.job.room.metadata
    log.info("job_casts_itself", why="no plan from on_request (e.g. `connect --room`)")
    return RequestHandler(settings, catalog, Selector(catalog), LeaseBook()).decide(metadata)
