"""One job, in its job process: find the plan, join the room, run it on the LiveKit stage.

`workers.multi.entrypoint` calls `run_job`. The plan comes from the main process (on_request
left it in the plan handoff); a job livekit built itself (`connect --room`) casts for itself.
The job's stop signal (drain timeout, the server terminating the job) ends the room at once, as
`shutdown`, also while the job is still joining. Leases the job took itself are released here;
the main process releases the ones it took when the job process ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from livekit.agents import AutoSubscribe, JobContext

from agents.endpoints import ModelClients
from agents.models import SessionModels, room_models, room_models_choice
from config.catalog import Catalog, Persona
from config.logging import bind_context, get_logger
from config.settings import Settings
from workers.capacity.leases import Releasable
from workers.capacity.seat_returns import return_seat
from workers.humans.room_transfer import RoomTransfer
from workers.job.gc_policy import room_listeners
from workers.job.human_transfer import job_transfer
from workers.job.internals import (
    accept_metadata,
    fail_job_process,
    job_stop_requested,
    job_url,
)
from workers.job.plan import JobPlan, PlanError
from workers.job.plan_handoff import PlanHandoff
from workers.job.room_ender import RoomEnder
from workers.job.worker_watch import WorkerWatch
from workers.main.admission import Reject, cast_in_job, plan_directory, release_leases
from workers.room.runner import RoomResult, run_room
from workers.room.seat import Seat
from workers.room.stage import ModelsFor
from workers.room.stage.livekit import LiveKitStage
from workers.room.tracing import RoomTrace, configure_tracing
from workers.room.transcript import Transcript
from workers.telephony.dial import dialer_for

log = get_logger("workers.job.runner")


def find_plan(
    ctx: JobContext, settings: Settings, catalog: Catalog
) -> tuple[JobPlan, list[Releasable]] | str:
    """The job's plan and the leases the job holds itself, or why there is none."""
    text = PlanHandoff(plan_directory(settings)).take(ctx.job.id)
    if text is None and accept_metadata(ctx):
        # on_request accepted this job, but its plan is not where it left it
        log.error("job_plan_missing", directory=str(plan_directory(settings)))
        return "job plan missing"
    if text:
        try:
            return JobPlan.from_handoff(text, catalog), []
        except PlanError as e:
            log.error("job_plan_invalid", error=str(e))
            return f"bad job plan: {e}"
    decision = cast_in_job(ctx, settings, catalog)
    if isinstance(decision, Reject):
        log.error("job_cannot_cast", problem=decision.problem, detail=decision.detail)
        return f"cannot cast: {decision.problem}"
    return decision.plan, list(decision.leases)


async def run_job(ctx: JobContext, settings: Settings, catalog: Catalog) -> None:
    """The whole job; the job process ends when it returns (the room ended, or the job
    could not start)."""
    # The server's name for the room (a fake job's mock room calls itself "console").
    room = ctx.job.room.name or ctx.room.name
    bind_context(room=room, job_id=ctx.job.id)
    found = find_plan(ctx, settings, catalog)
    if isinstance(found, str):
        ctx.shutdown(reason=found)
        return
    plan, own_leases = found
    bind_context(scenario=plan.scenario.name)
    log.info("job_started", **plan.summary())
    reason = "room ended"
    try:
        result = await _run_plan(ctx, settings, catalog, plan, room, own_leases)
        if result is None:
            reason = "stopped while joining"
        else:
            reason = f"room ended: {result.reason}"
    except Exception as e:
        # the room connection failed, or the stage could not even be set up
        log.error("job_failed", error=repr(e))
        reason = f"job failed: {type(e).__name__}"
        fail_job_process()  # so livekit reports the job failed, not a success
        raise
    finally:
        release_leases(own_leases)
        # Ends the job process; the main process then releases this job's leases.
        with contextlib.suppress(Exception):
            ctx.shutdown(reason=reason)


async def _run_plan(
    ctx: JobContext,
    settings: Settings,
    catalog: Catalog,
    plan: JobPlan,
    room: str,
    own_leases: list[Releasable],
) -> RoomResult | None:
    """Join and run the room; None when the job was stopped while it was still joining."""
    livekit = settings.livekit_credentials()
    url = job_url(ctx, livekit.url if livekit else "")
    # Secrets stay wrapped in this frame: unwrapped only as they are handed over.
    stage = LiveKitStage(
        ctx,
        url=url,
        api_key=livekit.api_key if livekit else "",
        api_secret=livekit.api_secret.get_secret_value() if livekit else "",
        campaign=plan.scenario.campaign,
        hear_everyone=plan.scenario.rules.hear == "everyone",
        interruption=settings.interruption_mode,
        dialer=dialer_for(
            catalog,
            plan.scenario,
            url=url,
            api_key=livekit.api_key if livekit else "",
            api_secret=livekit.api_secret.get_secret_value() if livekit else "",
        ),
    )
    people = job_transfer(
        job_id=ctx.job.id,
        room=room,
        catalog=catalog,
        plan=plan,
        stage=stage,
        url=url,
        api_key=livekit.api_key if livekit else "",
        api_secret=livekit.api_secret.get_secret_value() if livekit else "",
    )
    # the stage subscribes the persona that hears humans to their audio, and nothing else
    log.info("job_connecting")
    joining = asyncio.ensure_future(ctx.connect(auto_subscribe=AutoSubscribe.SUBSCRIBE_NONE))
    # the other personas connect meanwhile, each on its own connection
    stage.join_early(_others(plan, room, ctx.job.id), listener=_listener(plan))
    ender = RoomEnder(stage, joining)
    stop = job_stop_requested(ctx)
    if stop is not None:  # drain timeout, job terminated: the floor ends now, by its rules
        stop.add_done_callback(ender.stop_signalled)
    else:
        log.warning("job_stop_signal_unavailable", fallback="livekit cancels after 15 s")
    watch = WorkerWatch(ender.worker_lost)
    watch.start()
    try:
        return await _run_joined(
            ctx, settings, catalog, plan, room, stage, joining, ender, own_leases,
            people[0] if people is not None else None,
        )  # fmt: skip
    finally:
        watch.stop()
        if people is not None:  # the room has ended: any seat it still held goes back
            with contextlib.suppress(Exception):
                await people[1].aclose()


async def _run_joined(
    ctx: JobContext,
    settings: Settings,
    catalog: Catalog,
    plan: JobPlan,
    room: str,
    stage: LiveKitStage,
    joining: asyncio.Future[Any],
    ender: RoomEnder,
    own_leases: list[Releasable],
    transfer: Callable[[Transcript], RoomTransfer] | None = None,
) -> RoomResult | None:
    try:
        await joining
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not ender.stopped or (task is not None and task.cancelling()):
            raise
        log.info("job_stopped_while_joining")
        return None
    log.info("job_connected")
    log.info("room_models", **room_models_choice(plan.personas.values(), settings))
    tracing = configure_tracing(
        settings.otel_exporter_otlp_endpoint,
        service=settings.agent_name,
        capture_content=settings.otel_capture_content,
    )
    listeners = list(room_listeners())  # one room per job process: short GC pauses
    if tracing is not None:
        listeners.append(RoomTrace(tracing, capture_content=settings.otel_capture_content))
    clients = ModelClients()  # the plugins' HTTP clients, closed when the room ends
    try:
        result = await run_room(
            room=room,
            scenario=plan.scenario,
            catalog=catalog,
            seats=plan.seats(
                room, job_id=ctx.job.id, job_identity=ctx.room.local_participant.identity
            ),
            stage=stage,
            models_for=_models_for(ctx, settings, plan, clients),
            transcripts_dir=settings.transcripts_dir,
            job_id=ctx.job.id,
            listeners=listeners,
            on_floor=ender.seat,
            on_seat_failed=seat_giver(ctx.job.id, own_leases),
            transfer=transfer,
        )
    finally:
        await clients.aclose()  # after run_room: its stage has closed every session
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)  # sends the room's last spans
    log.info(
        "job_room_ended",
        reason=result.reason,
        detail=result.detail,
        turns=result.turns,
        transcript=str(result.transcript_path),
    )
    return result


def _others(plan: JobPlan, room: str, job_id: str) -> list[Seat]:
    """The seats of the personas that join on connections of their own (all but the job's)."""
    own = plan.job_member.persona_id
    return [s for s in plan.seats(room, job_id=job_id) if s.persona.id != own]


def _listener(plan: JobPlan) -> str:
    """The persona that hears the humans (the lead role's)."""
    lead = plan.lead_role()
    return next(m.persona_id for m in plan.members if m.role == lead)


def seat_giver(job_id: str, own_leases: list[Releasable]) -> Callable[[Seat], None]:
    """`on_seat_failed` for a job: an optional persona that failed to start gives its lease
    back at once, released here if the job took it itself, else by the main process that
    holds it (asked through workers/capacity/seat_returns.py)."""

    def give_back(seat: Seat) -> None:
        own = [lease for lease in own_leases if lease.persona.id == seat.persona.id]
        for lease in own:
            lease.release()
            own_leases.remove(lease)
        if not own:
            return_seat(job_id, seat.persona.id)

    return give_back


def _models_for(
    ctx: JobContext, settings: Settings, plan: JobPlan, clients: ModelClients
) -> ModelsFor:
    vad = ctx.proc.userdata.get("vad")
    names, lead = plan.cast_names(), plan.lead_role()

    def models_for(p: Persona) -> SessionModels:
        return room_models(
            p,
            plan.scenario,
            names,
            hears_humans=p.role == lead,
            vad=vad,
            settings=settings,  # the key is unwrapped only at the plugin
            clients=clients,
        )

    return models_for
