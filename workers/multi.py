"""`python -m workers.multi dev|start|connect`: the worker that puts several personas in a room.

The entry file, shaped like livekit's examples: `build_server` (the AgentServer and its
`rtc_session`), `prewarm` (each job process, once), `entrypoint` (one job: run the plan the
main process chose on the LiveKit stage) and `main` (the livekit CLI, after checking that
settings, catalog and LiveKit credentials are usable). What the main process decides for each
offered room is in `workers.main.admission`; its load, leases and stats endpoint in
`workers.main.worker_load`.
"""

from __future__ import annotations

import atexit
import gc
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from livekit.agents import JobContext, JobProcess, cli
from livekit.agents.worker import ServerEnvOption

from agents.endpoints import models_choice
from config.catalog import Catalog, load_catalog
from config.errors import ConfigError
from config.logging import configure_logging, get_logger
from config.settings import SETTINGS_ERRORS, Settings, describe_settings_error, get_settings
from workers.main.fd_limit import fd_limit, raise_fd_limit
from workers.main.livekit_check import (
    COMMANDS_NEEDING_LIVEKIT,
    credentials_refused,
    export_livekit_env,
    flag_value,
    missing_livekit,
)
from workers.main.worker_load import MultiPersonaServer, Worker
from workers.tokens import quiet_dev_key_warning

log = get_logger("workers.multi")

EXIT_BAD_SETUP = 2
EXIT_WORKER_FAILED = 1  # the worker ran and failed (e.g. never reached LiveKit)
# Read by livekit's forkserver warm-up (livekit/agents/ipc/_preload.py): unless it is falsy,
# the forkserver loads livekit's local VAD and its end-of-turn model (~244 MB; an idle worker
# with 2 job processes measured 610 MB PSS with them, ~350 without: bench.room_overhead).
# Neither is used here: the process's VAD is silero's, loaded in prewarm, and turn detection
# is explicit per persona (workers.room.stage.base.make_session: VAD end of speech for the persona
# that hears humans, none for the others).
PRELOAD_LOCAL_INFERENCE = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"
# What a job process needs, imported once in the forkserver: everything this module imports,
# not this module itself. Each job process runs the worker's main module again as
# `__mp_main__` (multiprocessing's preparation of a child); had the forkserver imported it
# already, runpy would print a RuntimeWarning in every job process.
# The model plugins (silero, openai: ~40 MB) and the models built on them are job-process
# code: the forkserver imports them (on its main thread, where livekit lets a plugin register)
# and the main process, which runs no model, never does (bench.room_overhead).
JOB_PRELOAD = (
    "workers.job.runner",
    "workers.main.worker_load",
    "workers.main.livekit_check",
    "agents.models",
    "agents.offline",
)


# -- main process ----------------------------------------------------------------------------


def _livekit_log_level(level: str) -> str:
    return "WARN" if level == "WARNING" else level  # livekit spells it WARN


def metrics_dir(settings: Settings) -> Path:
    """PROMETHEUS_MULTIPROC_DIR, else a fresh directory of this worker's, removed at exit."""
    if settings.prometheus_multiproc_dir is not None:
        return settings.prometheus_multiproc_dir
    path = Path(tempfile.mkdtemp(prefix="multi-persona-metrics-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def build_server(
    settings: Settings, catalog: Catalog, *, worker: Worker | None = None
) -> MultiPersonaServer:
    worker = worker if worker is not None else Worker(settings, catalog)
    # before the worker starts its forkserver, which inherits this environment; an operator's
    # own value is kept
    os.environ.setdefault(PRELOAD_LOCAL_INFERENCE, "0")
    worker.seat_returns.open()  # its path goes to job processes in the environment too
    worker.desk_service.open()  # the human agents' desk: likewise
    # livekit's default host "" is every address; its servers are bounded like /stats
    # (workers.main.livekit_http)
    kwargs: dict[str, Any] = {"host": settings.worker_http_host}
    if settings.worker_http_port is not None:
        kwargs["port"] = settings.worker_http_port
    if settings.prometheus_port is not None:
        kwargs["prometheus_port"] = settings.prometheus_port  # /metrics, with workers.main.metrics
        # the job processes' counters (workers/room/room_metrics.py): livekit puts this in the
        # environment before its forkserver starts, so every job process writes there
        kwargs["prometheus_multiproc_dir"] = str(metrics_dir(settings))
    # One prewarmed job process by default, not livekit's one per core: each holds a room's
    # models (~97 MB PSS, ~186 MB with the offline voice: bench.room_overhead), and the pool
    # starts the next one as soon as a room takes it, so a second only helps a room offered
    # within that start-up. Offers made while a room launches are still taken: availability
    # is our own load (MultiPersonaServer._get_effective_load), not livekit's per-process
    # estimate.
    kwargs["num_idle_processes"] = ServerEnvOption(
        dev_default=0, prod_default=settings.idle_processes
    )
    server = MultiPersonaServer(
        worker,
        setup_fnc=prewarm,
        load_fnc=worker.load,
        # `start` only: in `dev` livekit's default (no admission control) stays, so two rooms
        # dispatched a second apart both land; the selector refuses what it cannot cast.
        load_threshold=ServerEnvOption(dev_default=math.inf, prod_default=settings.load_threshold),
        log_level=_livekit_log_level(settings.log_level),
        max_retry=settings.worker_connect_retries,
        # imported once in the forkserver, so each job process starts warm
        preload_modules=list(JOB_PRELOAD),
        **kwargs,
    )
    server.rtc_session(
        entrypoint, agent_name=settings.agent_name, on_request=worker.admission.handle
    )

    def on_started() -> None:
        # The livekit CLI installs its own root log handler before run(); ours replaces it.
        configure_logging(settings.log_format, settings.log_level)
        worker.attach(server)
        log.info(
            "worker_ready",
            agent_name=settings.agent_name,
            fd_limit=fd_limit(),
            load_threshold=settings.load_threshold,
            personas=len(catalog.personas),
            **models_choice(catalog.personas, settings),
        )

    server.on("worker_started", on_started)
    return server


# -- job process -----------------------------------------------------------------------------


def prewarm(proc: JobProcess) -> None:
    """setup_fnc: once per job process, before its job."""
    from agents.models import load_vad  # job-process code (JOB_PRELOAD): not in the main
    from agents.offline import warm_offline_voice

    ignore_stop_signals()
    settings = get_settings()
    # Job processes get the same renderer (their output goes straight to stderr).
    configure_logging(settings.log_format, settings.log_level)
    quiet_dev_key_warning(settings.livekit_credentials())
    offline = settings.openai_key() is None
    proc.userdata["vad"] = load_vad(offline=offline)
    if offline:
        warm_offline_voice()
    proc.userdata["catalog"] = load_catalog(settings.catalog_path)
    start_rtc()
    freeze_heap()


def start_rtc() -> None:
    """Start livekit's native client (the FFI library and its threads) in prewarm, not on the
    job's first connection: the room waits for that one, and for the personas' joining with
    it. livekit starts it lazily, at first use, through this private singleton
    (tests/test_multi_cli.py fails loudly if that changes)."""
    from livekit.rtc._ffi_client import FfiClient

    FfiClient.instance  # noqa: B018  # the property starts it


def freeze_heap() -> None:
    """The last step of prewarm: what is alive now (imports, models, the catalog) leaves the
    cyclic garbage collector's reach. A full collection stalls the event loop, every session
    of the room with it, for as long as it walks the heap; frozen, it walks only what the room
    itself allocates. The forkserver already froze what it preloaded (livekit's
    `_preload_freeze`); this adds what prewarm built. Job processes only: with livekit's thread
    executor prewarm runs in a thread of the worker's own process, whose heap is not ours to
    pin for good."""
    if threading.current_thread() is threading.main_thread():
        gc.collect()  # no garbage frozen with the rest
        gc.freeze()


def ignore_stop_signals() -> None:
    """A job process leaves SIGTERM and SIGINT to the worker's main process, which drains:
    sent to the whole process group (systemd's KillMode=control-group, a container stop,
    Ctrl-C in a terminal) they killed every running room at once. livekit's job module means
    to ignore them, but as it is preloaded in the forkserver it does so in the wrong process."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


async def entrypoint(ctx: JobContext) -> None:
    """One job: run the cast the main process chose, each persona its own participant."""
    from workers.job.runner import run_job  # preloaded by the forkserver (JOB_PRELOAD)

    settings = get_settings()
    catalog = ctx.proc.userdata.get("catalog") or load_catalog(settings.catalog_path)
    await run_job(ctx, settings, catalog)


# -- command line ----------------------------------------------------------------------------


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
        given = settings.livekit_credentials(
            url=flag_value(argv, "--url"),
            api_key=flag_value(argv, "--api-key"),
            api_secret=flag_value(argv, "--api-secret"),
        )
        assert given is not None  # missing_livekit said every one is given
        quiet_dev_key_warning(given)
        refused = credentials_refused(given)
        if refused:
            print(f"workers.multi: {refused}", file=sys.stderr)
            return EXIT_BAD_SETUP
    raise_fd_limit()  # before livekit starts its forkserver: job processes inherit it
    return run_cli(build_server(settings, catalog), argv)


def run_cli(server: MultiPersonaServer, argv: Sequence[str]) -> int:
    """livekit's CLI, with its exit status; a worker whose run failed (livekit gave up
    connecting: the CLI logs it and would exit 0) exits EXIT_WORKER_FAILED with one line."""
    sys.argv = [sys.argv[0], *argv]  # the livekit CLI (typer) parses sys.argv
    try:
        cli.run_app(server)
        status = 0
    except SystemExit as e:  # typer ends every command with one
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if server.run_error is not None:
        print(
            f"workers.multi: the worker stopped: {server.run_error} (check LIVEKIT_URL and "
            "that the server is up; WORKER_CONNECT_RETRIES sets how long it tries)",
            file=sys.stderr,
        )
        return EXIT_WORKER_FAILED
    return status


if __name__ == "__main__":
    # Run the imported module's main, so the job entrypoint pickles as
    # `workers.multi.entrypoint` (not `__main__`) for the job processes.
    from workers.multi import main as _main

    sys.exit(_main())
