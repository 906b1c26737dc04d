"""workers/job/internals.py reads livekit's job-process internals; these fail loudly if the shape
it relies on changes. What they are for (a drain timeout ends the room at once, as `shutdown`;
a job on_request accepted finds its plan or says it is missing) is tested on the real server in
tests/live/test_workers.py."""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
from types import SimpleNamespace

import pytest
from livekit import api, rtc
from livekit.agents.ipc import job_proc_lazy_main
from livekit.agents.job import (
    JobAcceptArguments,
    JobContext,
    JobExecutorType,
    JobProcess,
    RunningJobInfo,
)
from livekit.protocol import agent as agent_pb
from livekit.protocol import models

from workers.job.internals import (
    accept_metadata,
    fail_job_process,
    job_stop_requested,
    job_url,
)


def test_livekit_still_wires_the_job_contexts_shutdown_to_the_process_future():
    proc = job_proc_lazy_main._JobProc
    start_job = inspect.getsource(proc._start_job)
    assert "def _on_ctx_shutdown" in start_job
    assert "self._shutdown_fut.set_result" in start_job
    assert "on_shutdown=_on_ctx_shutdown" in start_job
    # ShutdownRequest from the worker resolves the same future
    assert "ShutdownRequest" in inspect.getsource(proc.entrypoint)
    assert "self._shutdown_fut.set_result" in inspect.getsource(proc.entrypoint)


async def test_it_finds_the_future_behind_a_shutdown_closure():
    owner = SimpleNamespace(_shutdown_fut=asyncio.get_running_loop().create_future())

    def _on_ctx_shutdown(reason: str) -> None:
        owner._shutdown_fut.set_result(reason)

    ctx = SimpleNamespace(_on_shutdown=_on_ctx_shutdown)
    assert job_stop_requested(ctx) is owner._shutdown_fut
    assert job_stop_requested(SimpleNamespace()) is None


def job_context(accepted_with: str, token: str = "") -> JobContext:
    """A JobContext as livekit's job process builds it (its constructor is private)."""
    info = RunningJobInfo(
        accept_arguments=JobAcceptArguments(
            name="Tim", identity="agent_tim", metadata=accepted_with
        ),
        job=agent_pb.Job(id="AJ_1", room=models.Room(name="room-1")),
        url="ws://127.0.0.1:7880",
        token=token,
        worker_id="w",
        fake_job=True,
    )
    proc = JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None, http_proxy=None)
    return JobContext(
        proc=proc,
        info=info,
        room=rtc.Room(),
        on_connect=lambda: None,
        on_shutdown=lambda _: None,
        inference_executor=None,  # type: ignore[arg-type]
    )


async def test_accept_metadata_reads_what_on_request_accepted_with():
    ctx = job_context('{"persona": "tim"}')
    assert accept_metadata(ctx) == '{"persona": "tim"}', (
        "livekit's JobContext no longer keeps `_info.accept_arguments`: "
        "update accept_metadata in workers/job/internals.py"
    )


async def test_accept_metadata_falls_back_to_the_token_then_to_nothing():
    token = (
        api.AccessToken("key", "a-secret-long-enough-for-hs256-signing")
        .with_identity("agent_tim")
        .with_metadata('{"persona": "tim"}')
        .to_jwt()
    )
    assert accept_metadata(job_context("", token)) == '{"persona": "tim"}'
    assert accept_metadata(job_context("")) == ""  # `connect --room`: no on_request, no token


async def test_job_url_is_the_url_the_server_assigned_the_job():
    ctx = job_context("")
    assert job_url(ctx, "ws://fallback") == "ws://127.0.0.1:7880", (
        "livekit's JobContext no longer keeps `_info.url`: update job_url in "
        "workers/job/internals.py"
    )
    # a context without livekit's private field: the fallback
    assert job_url(SimpleNamespace(), "ws://fallback") == "ws://fallback"  # type: ignore[arg-type]


def test_livekit_still_reports_a_job_status_from_its_process_exit_code():
    from livekit.agents.ipc.job_proc_executor import ProcJobExecutor

    source = inspect.getsource(ProcJobExecutor._supervise_task)
    assert "JobStatus.SUCCESS if self.exitcode == 0 else JobStatus.FAILED" in source, (
        "livekit no longer derives a job's status from its exit code: "
        "update fail_job_process in workers/job/internals.py"
    )


def _job_process(fail: bool) -> None:
    """A child's whole run: returns normally, as livekit's job process main does."""
    if fail:
        assert fail_job_process()


@pytest.mark.integration  # starts job-like processes
@pytest.mark.parametrize("fail", [False, True], ids=["ok", "failed"])
def test_a_failed_job_process_exits_1_after_its_normal_end(fail: bool) -> None:
    ctx = multiprocessing.get_context("forkserver")  # how livekit starts job processes
    proc = ctx.Process(target=_job_process, args=(fail,))
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == (1 if fail else 0)


def test_outside_a_job_process_nothing_is_changed():
    assert fail_job_process() is False  # the test process is nobody's child
