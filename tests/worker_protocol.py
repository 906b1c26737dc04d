"""livekit-server's side of the agent worker protocol (the `/agent` websocket), on loopback:
it registers one worker, offers it jobs, assigns them and records every message the worker
sends. Enough to drive a real AgentServer through its availability path with no server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import WSMsgType, web
from livekit.protocol import agent, models

from tests.loopback_app import served

TIMEOUT_S = 20.0  # a hang guard, not a performance check


class FakeAgentService:
    """Offers jobs to the one worker connected to it and waits on what the worker answers."""

    def __init__(self) -> None:
        self.url = ""
        self.received: list[agent.WorkerMessage] = []
        self._ws: web.WebSocketResponse | None = None
        self._registered = asyncio.Event()
        self._changed = asyncio.Condition()

    async def _agent(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        first = agent.WorkerMessage()
        first.ParseFromString(await ws.receive_bytes())
        assert first.HasField("register"), first
        reply = agent.ServerMessage()
        reply.register.worker_id = "AW_fake"
        await ws.send_bytes(reply.SerializeToString())
        self._ws = ws
        self._registered.set()
        async for frame in ws:
            if frame.type != WSMsgType.BINARY:
                continue
            msg = agent.WorkerMessage()
            msg.ParseFromString(frame.data)
            async with self._changed:
                self.received.append(msg)
                self._changed.notify_all()
        return ws

    async def _send(self, msg: agent.ServerMessage) -> None:
        async with asyncio.timeout(TIMEOUT_S):
            await self._registered.wait()
        assert self._ws is not None
        await self._ws.send_bytes(msg.SerializeToString())

    @staticmethod
    def job(job_id: str, room: str, metadata: str, agent_name: str) -> agent.Job:
        return agent.Job(
            id=job_id,
            type=agent.JobType.JT_ROOM,
            room=models.Room(sid=f"RM_{job_id}", name=room),
            agent_name=agent_name,
            metadata=metadata,
        )

    async def offer(self, job: agent.Job) -> None:
        msg = agent.ServerMessage()
        msg.availability.job.CopyFrom(job)
        await self._send(msg)

    async def assign(self, job: agent.Job) -> None:
        msg = agent.ServerMessage()
        msg.assignment.job.CopyFrom(job)
        msg.assignment.token = "unused"  # the test's jobs never connect to a room
        await self._send(msg)

    async def wait_for(
        self, found: Callable[[agent.WorkerMessage], bool], *, after: int = 0
    ) -> agent.WorkerMessage:
        """The first message (from index `after` on) for which `found` is true."""
        async with asyncio.timeout(TIMEOUT_S), self._changed:
            while True:
                for msg in self.received[after:]:
                    if found(msg):
                        return msg
                await self._changed.wait()

    async def answer(self, job_id: str) -> agent.AvailabilityResponse:
        """The worker's answer to the offer of `job_id`."""

        def is_answer(msg: agent.WorkerMessage) -> bool:
            return msg.HasField("availability") and msg.availability.job_id == job_id

        return (await self.wait_for(is_answer)).availability

    async def job_ended(self, job_id: str) -> int:
        """How the job the worker launched for `job_id` ended (success or failure)."""
        ended = (agent.JobStatus.JS_SUCCESS, agent.JobStatus.JS_FAILED)

        def is_end(msg: agent.WorkerMessage) -> bool:
            return (
                msg.HasField("update_job")
                and msg.update_job.job_id == job_id
                and msg.update_job.status in ended
            )

        return (await self.wait_for(is_end)).update_job.status

    async def next_status(self) -> agent.UpdateWorkerStatus:
        """The next status the worker reports (livekit sends one every 2.5 s)."""
        after = len(self.received)
        msg = await self.wait_for(lambda m: m.HasField("update_worker"), after=after)
        return msg.update_worker


@contextlib.asynccontextmanager
async def fake_agent_service() -> AsyncIterator[FakeAgentService]:
    service = FakeAgentService()
    app = web.Application()
    app.router.add_get("/agent", service._agent)
    async with served(app) as port:
        service.url = f"ws://127.0.0.1:{port}"
        try:
            yield service
        finally:
            if service._ws is not None:
                await service._ws.close()
