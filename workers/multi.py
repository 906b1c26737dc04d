"""`python -m workers.multi dev|start|connect`: the worker that puts several personas in a room.

Main process: `on_request` reads the job's scenario, casts it with the worker's one selector
(where load is known), and accepts with the opener's identity, handing the job a `JobPlan` in
accept's metadata; or rejects so LiveKit can offer the room to another worker. Leases are kept
by job id and released when the job ends. `load_fnc` reports the share of persona capacity in
use (never below the CPU load). Job process: `entrypoint` runs the plan on the LiveKit stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit.agents import AgentServer, AutoSubscribe, JobContext, JobProcess, JobRequest, cli
from livekit.agents.worker import ServerEnvOption
from livekit.plugins import silero
from pydantic import SecretStr

from agents.models import SessionModels, room_models
from agents.offline import warm_offline_voice
from config.catalog import Catalog, Persona, load_catalog
from config.errors import ConfigError
from config.logging import bind_context, configure_logging, get_logger
from config.scenario import Scenario
from config.settings import SETTINGS_ERRORS, Settings, describe_settings_error, get_settings
from workers.cpu_load import CpuLoad
from workers.job_plan import (
    MAX_METADATA_BYTES,
    BadMetadata,
    JobPlan,
    PlanError,
    parse_job_metadata,
    voicemail_plan,
)
from workers.job_signals import job_stop_requested
from workers.leases import LeaseBook, Releasable
from workers.livekit_check import credentials_refused, flag_value
from workers.plan_handoff import PlanHandoff, public_metadata
from workers.room import run_room
from workers.selector import INBOUND_STRATEGY, Lease, NoCapacity, Selector
from workers.stage import LiveKitStage
from workers.stats_server import StatsServer
from workers.tokens import persona_attributes, persona_identity

log = get_logger("workers.multi")

EXIT_BAD_SETUP = 2
# The livekit CLI takes these from the environment or from its own flags.
LIVEKIT_FLAGS = {
    "LIVEKIT_URL": "--url",
    "LIVEKIT_API_KEY": "--api-key",
    "LIVEKIT_API_SECRET": "--api-secret",
}
COMMANDS_NEEDING_LIVEKIT = ("dev", "start", "connect")


# -- on_request (main process) ---------------------------------------------------------------


@dataclass
class _Accept:
    plan: JobPlan
    leases: list[Releasable]
    metadata: str


@dataclass
class _Reject:
    problem: str
    detail: str
    bad_metadata: bool = False


def _release(leases: Iterable[Releasable]) -> None:
    for lease in leases:
        lease.release()


class RequestHandler:
    """`on_request`: cast or reject. It never raises: the worker keeps serving other rooms."""

    def __init__(
        self, settings: Settings, catalog: Catalog, selector: Selector, leasebook: LeaseBook
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.selector = selector
        self.leasebook = leasebook
        self.handoff = PlanHandoff(plan_directory(settings))

    async def handle(self, req: JobRequest) -> None:
        rlog = log.bind(job_id=req.id, room=req.room.name)
        try:
            decision = self.decide(req.job.metadata or req.room.metadata)
        except Exception as e:
            rlog.exception("job_request_failed", error=repr(e))
            decision = _Reject("internal_error", repr(e))
        if isinstance(decision, _Reject):
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
            return
        await self._accept(req, decision, rlog)

    def decide(self, metadata: str) -> _Accept | _Reject:
        """Parse and cast. An `_Accept` holds leases: the caller must hold or release them."""
        try:
            request = parse_job_metadata(
                metadata, catalog=self.catalog, scenarios_dir=self.settings.scenarios_dir
            )
        except BadMetadata as e:
            return _Reject(e.problem, e.detail, bad_metadata=True)
        scenario = request.scenario
        leases: list[Releasable] = []
        try:
            try:
                cast = self.selector.cast(scenario, INBOUND_STRATEGY if request.inbound else None)
                leases = [m.lease for m in cast.members]
                plan = JobPlan.from_cast(scenario, cast)
            except NoCapacity as exc:
                if scenario.on_no_cast != "voicemail":
                    return _Reject("no_cast", str(exc))
                lease_or_reject = self._voicemail_lease(scenario, exc)
                if isinstance(lease_or_reject, _Reject):
                    return lease_or_reject
                leases = [lease_or_reject]
                plan = voicemail_plan(scenario, self.catalog, reason=lease_or_reject.reason)
            text = plan.to_metadata()
            if len(text.encode()) > MAX_METADATA_BYTES:
                _release(leases)
                return _Reject("plan_too_large", f"the job plan is {len(text.encode())} bytes")
        except BaseException:
            _release(leases)
            raise
        return _Accept(plan, leases, text)

    def _voicemail_lease(self, scenario: Scenario, exc: NoCapacity) -> Lease | _Reject:
        persona_id = self.catalog.voicemail_persona
        if persona_id is None:
            return _Reject("no_cast", f"{exc}; and the catalog has no voicemail_persona")
        try:
            return self.selector.acquire_persona(
                persona_id,
                role="voicemail",
                campaign_id=scenario.campaign,
                reason=f"voicemail: no cast ({exc})",
            )
        except NoCapacity as vm_exc:
            return _Reject("no_cast", f"{exc}; voicemail: {vm_exc.reason}")

    async def _accept(self, req: JobRequest, decision: _Accept, rlog: Any) -> None:
        plan = decision.plan
        first = plan.first_persona
        labels = [f"{m.role}:{m.persona_id}" for m in plan.members]
        # Held BEFORE accept: once accepted the job may start (and end) at any moment.
        self.leasebook.hold(req.id, decision.leases, labels=labels)
        try:
            # the plan goes privately; the room sees only who the opener is
            self.handoff.put(req.id, decision.metadata)
            await req.accept(
                identity=persona_identity(first.id, req.room.name),
                name=first.name,
                attributes=persona_attributes(first, plan.scenario.campaign),
                metadata=public_metadata(first.id, plan.first.role, req.room.name),
            )
        except BaseException as e:
            self.leasebook.release(req.id)
            self.handoff.discard(req.id)
            if not isinstance(e, Exception):
                raise
            # e.g. the server's assignment timed out: the job will not run here
            rlog.warning("job_accept_failed", error=repr(e))
            return
        rlog.info("job_accepted", **plan.summary())


# -- load, leases and stats (main process) ---------------------------------------------------


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
        self.selector = selector if selector is not None else Selector(catalog)
        self.leasebook = leasebook if leasebook is not None else LeaseBook()
        self.requests = RequestHandler(settings, catalog, self.selector, self.leasebook)
        self._cpu_load = cpu_load if cpu_load is not None else CpuLoad()
        self.stats_server: StatsServer | None = None
        self.stats_attempted = asyncio.Event()  # set once start_stats() has succeeded or failed
        self._tasks: set[asyncio.Task[Any]] = set()

    def load(self, server: AgentServer | None = None) -> float:
        """`load_fnc` (an executor thread, every 0.5 s): drop the leases of jobs that are gone,
        then report max(persona capacity in use, CPU)."""
        if server is not None:
            self.reconcile(server)
        return max(self.selector.worker_load(), self._counted_cpu())

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
            self.requests.handoff.discard(info.job.id)  # a plan its job never took
        if info is not None and self.leasebook.release(info.job.id):
            log.info("job_leases_released", job_id=info.job.id, status=str(proc.status))

    def stats(self) -> dict[str, Any]:
        persona_load = self.selector.worker_load()
        cpu = self._cpu_load()
        return {
            "worker_load": round(max(persona_load, self._counted_cpu()), 4),
            "persona_load": round(persona_load, 4),
            "cpu_load": round(cpu, 4),
            "load_threshold": self.settings.load_threshold,
            **self.selector.stats(),
            "jobs": self.leasebook.held(),
        }

    def attach(self, server: AgentServer) -> None:
        """From `worker_started`: watch job ends, start the stats endpoint."""
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
        task = asyncio.get_running_loop().create_task(self.start_stats())
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
        released = self.leasebook.release_all()
        log.info("worker_closed", released_jobs=released)


class MultiPersonaServer(AgentServer):
    """An AgentServer whose close also releases every lease and stops the stats endpoint.
    The CLI drains (`start`: running rooms finish) and then calls aclose()."""

    def __init__(self, worker: Worker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.worker = worker

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.worker.aclose()


def _livekit_log_level(level: str) -> str:
    return "WARN" if level == "WARNING" else level  # livekit spells it WARN


def build_server(
    settings: Settings, catalog: Catalog, *, worker: Worker | None = None
) -> MultiPersonaServer:
    worker = worker if worker is not None else Worker(settings, catalog)
    kwargs: dict[str, Any] = {}
    if settings.worker_http_port is not None:
        kwargs["port"] = settings.worker_http_port
    server = MultiPersonaServer(
        worker,
        setup_fnc=prewarm,
        load_fnc=worker.load,
        # `start` only: in `dev` livekit's default (no admission control) stays, so two rooms
        # dispatched a second apart both land; the selector refuses what it cannot cast.
        load_threshold=ServerEnvOption(dev_default=math.inf, prod_default=settings.load_threshold),
        log_level=_livekit_log_level(settings.log_level),
        # imported once in the forkserver, so each job process starts warm
        preload_modules=["workers.multi"],
        **kwargs,
    )
    server.rtc_session(
        entrypoint, agent_name=settings.agent_name, on_request=worker.requests.handle
    )

    def on_started() -> None:
        # The livekit CLI installs its own root log handler before run(); ours replaces it.
        configure_logging(settings.log_format, settings.log_level)
        worker.attach(server)
        log.info(
            "worker_ready",
            agent_name=settings.agent_name,
            load_threshold=settings.load_threshold,
            personas=len(catalog.personas),
        )

    server.on("worker_started", on_started)
    return server


# -- job process -----------------------------------------------------------------------------


def prewarm(proc: JobProcess) -> None:
    """setup_fnc: once per job process, before its job."""
    ignore_stop_signals()
    settings = get_settings()
    # Job processes get the same renderer (their output goes straight to stderr).
    configure_logging(settings.log_format, settings.log_level)
    proc.userdata["vad"] = silero.VAD.load()
    if settings.openai_key() is None:
        warm_offline_voice()
    proc.userdata["catalog"] = load_catalog(settings.catalog_path)


def ignore_stop_signals() -> None:
    """A job process leaves SIGTERM and SIGINT to the worker's main process, which drains:
    sent to the whole process group (systemd's KillMode=control-group, a container stop,
    Ctrl-C in a terminal) they killed every running room at once. livekit's job module means
    to ignore them, but as it is preloaded in the forkserver it does so in the wrong process."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def plan_directory(settings: Settings) -> Path:
    """Where plans wait for their job process: beside the transcripts, which main and job
    processes both read from the same settings."""
    return settings.transcripts_dir / ".plans"


def accept_metadata(ctx: JobContext) -> str:
    """What on_request passed as accept(metadata=...): the opener's public metadata, empty
    when no on_request ran (`connect --room`).

    Read from the job's RunningJobInfo (`ctx._info.accept_arguments`, private), readable
    BEFORE connecting; the job token's claims are the fallback."""
    args = getattr(getattr(ctx, "_info", None), "accept_arguments", None)
    if args is not None and args.metadata:
        return str(args.metadata)
    try:
        return ctx.token_claims().metadata or ""
    except Exception:
        return ""


def _livekit_credentials(settings: Settings) -> tuple[str, str, SecretStr]:
    """The job's url, key and secret. The worker exports them (CLI flags included) to the
    environment its job processes inherit, and Settings reads the environment first."""
    return (
        settings.livekit_url or "",
        settings.livekit_api_key or "",
        settings.livekit_api_secret or SecretStr(""),
    )


async def entrypoint(ctx: JobContext) -> None:
    """Run the cast the main process chose, each persona its own participant."""
    settings = get_settings()
    # The server's name for the room (a fake job's mock room calls itself "console").
    room = ctx.job.room.name or ctx.room.name
    bind_context(room=room, job_id=ctx.job.id)
    catalog = ctx.proc.userdata.get("catalog") or load_catalog(settings.catalog_path)
    own_leases: list[Releasable] = []
    text = PlanHandoff(plan_directory(settings)).take(ctx.job.id)
    if text is None and accept_metadata(ctx):
        # on_request accepted this job, but its plan is not where it left it
        log.error("job_plan_missing", directory=str(plan_directory(settings)))
        ctx.shutdown(reason="job plan missing")
        return
    if text:
        try:
            plan = JobPlan.from_metadata(text, catalog)
        except PlanError as e:
            log.error("job_plan_invalid", error=str(e))
            ctx.shutdown(reason=f"bad job plan: {e}")
            return
    else:
        decision = cast_in_job(ctx, settings, catalog)
        if isinstance(decision, _Reject):
            log.error("job_cannot_cast", problem=decision.problem, detail=decision.detail)
            ctx.shutdown(reason=f"cannot cast: {decision.problem}")
            return
        plan, own_leases = decision.plan, decision.leases
    bind_context(scenario=plan.scenario.name)
    log.info("job_started", **plan.summary())
    reason = "room ended"
    try:
        # the stage subscribes the persona that hears humans to their audio, and nothing else
        await ctx.connect(auto_subscribe=AutoSubscribe.SUBSCRIBE_NONE)
        url, key, secret = _livekit_credentials(settings)
        # Secrets stay wrapped in this frame: unwrapped only as they are handed over.
        stage = LiveKitStage(
            ctx,
            url=url,
            api_key=key,
            api_secret=secret.get_secret_value(),
            campaign=plan.scenario.campaign,
        )
        stop = job_stop_requested(ctx)
        if stop is not None:  # drain timeout, job terminated: the floor ends now, by its rules
            stop.add_done_callback(lambda _: stage.stop())
        else:
            log.warning("job_stop_signal_unavailable", fallback="livekit cancels after 15 s")
        vad = ctx.proc.userdata.get("vad")
        openai_key = settings.openai_key()  # unwrapped inside build_models
        log.info(
            "room_models",
            models="openai" if openai_key else "offline",
            voice="catalog voices" if openai_key else "espeak-ng + pocketsphinx",
        )
        names, lead = plan.cast_names(), plan.lead_role()

        def models_for(p: Persona) -> SessionModels:
            return room_models(
                p,
                plan.scenario,
                names,
                hears_humans=p.role == lead,
                vad=vad,
                openai_api_key=openai_key,
            )

        result = await run_room(
            room=room,
            scenario=plan.scenario,
            catalog=catalog,
            seats=plan.seats(room, job_identity=ctx.room.local_participant.identity),
            stage=stage,
            models_for=models_for,
            transcripts_dir=settings.transcripts_dir,
            job_id=ctx.job.id,
        )
        reason = f"room ended: {result.reason}"
        log.info(
            "job_room_ended",
            reason=result.reason,
            detail=result.detail,
            turns=result.turns,
            transcript=str(result.transcript_path),
        )
    finally:
        _release(own_leases)
        # Ends the job process; the main process then releases this job's leases.
        with contextlib.suppress(Exception):
            ctx.shutdown(reason=reason)


def cast_in_job(ctx: JobContext, settings: Settings, catalog: Catalog) -> _Accept | _Reject:
    """No plan came with the job: `connect --room R` builds the job itself, with no
    on_request. The job then casts for itself, with the same rules as on_request, from the
    job's metadata or the room's (`workers.dispatch` names the scenario there). Its selector
    knows only this room: the worker's capacity accounting does not see it."""
    metadata = ctx.job.metadata or ctx.job.room.metadata
    log.info("job_casts_itself", why="no plan from on_request (e.g. `connect --room`)")
    return RequestHandler(settings, catalog, Selector(catalog), LeaseBook()).decide(metadata)


# -- command line ----------------------------------------------------------------------------


def missing_livekit(argv: Sequence[str], settings: Settings) -> list[str]:
    """LiveKit settings given neither by the environment/.env nor by the CLI's flags."""
    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    return [name for name in settings.livekit_missing() if LIVEKIT_FLAGS[name] not in given]


def export_livekit_env(settings: Settings) -> None:
    """The livekit CLI reads LIVEKIT_* from the environment only: pass on the .env values."""
    values: tuple[tuple[str, str | SecretStr | None], ...] = (
        ("LIVEKIT_URL", settings.livekit_url),
        ("LIVEKIT_API_KEY", settings.livekit_api_key),
        ("LIVEKIT_API_SECRET", settings.livekit_api_secret),
    )
    for name, value in values:
        if value and not os.environ.get(name):
            # the secret is unwrapped only as it is handed to the livekit CLI
            os.environ[name] = value.get_secret_value() if isinstance(value, SecretStr) else value


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = get_settings()
    except SETTINGS_ERRORS as e:
        print(f"workers.multi: bad settings: {describe_settings_error(e)}", file=sys.stderr)
        return EXIT_BAD_SETUP
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in COMMANDS_NEEDING_LIVEKIT:
        missing = missing_livekit(argv, settings)
        if missing:
            print(
                f"workers.multi: set {', '.join(missing)} (in the environment or .env) "
                f"to run `{command}`",
                file=sys.stderr,
            )
            return EXIT_BAD_SETUP
    try:
        catalog = load_catalog(settings.catalog_path)
    except ConfigError as e:
        print(f"workers.multi: {e}", file=sys.stderr)
        return EXIT_BAD_SETUP
    export_livekit_env(settings)
    if command in COMMANDS_NEEDING_LIVEKIT:
        refused = credentials_refused(
            flag_value(argv, "--url") or settings.livekit_url or "",
            flag_value(argv, "--api-key") or settings.livekit_api_key or "",
            flag_value(argv, "--api-secret")
            or (
                settings.livekit_api_secret.get_secret_value()
                if settings.livekit_api_secret
                else ""
            ),
        )
        if refused:
            print(f"workers.multi: {refused}", file=sys.stderr)
            return EXIT_BAD_SETUP
    server = build_server(settings, catalog)
    sys.argv = [sys.argv[0], *argv]  # the livekit CLI (typer) parses sys.argv
    cli.run_app(server)
    return 0


if __name__ == "__main__":
    # Run the imported module's main, so the job entrypoint pickles as
    # `workers.multi.entrypoint` (not `__main__`) for the job processes.
    from workers.multi import main as _main

    sys.exit(_main())
