"""The stock layout of bench.live_room: one persona as its own one-agent job, the way stock
livekit-agents runs it (a private module: `make bench` does not run it).

`AGENT_NAME=stock-driver-x python -m bench._stock_agent start` registers an AgentServer with one
rtc_session under that agent name. Each dispatch (metadata `{"persona", "name", "voice"}`) is
one job process: it joins the room, publishes `voice_<persona>` with the same offline voice
(eSpeak through an AgentSession, the project's publish-at-join output) and speaks a line when
the bench sends it one (RoomService SendData, topic `bench.say`, `{"to", "n", "text"}`); after
its playout it sets its attribute `bench.said` to n. Topic `bench.bye` ends the job.

Each job process prewarms what the project's job process does (silero VAD, eSpeak and
pocketsphinx), as a stock persona that may hear a caller would; only the speaking path runs.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from typing import Any

from livekit import rtc
from livekit.agents import (
    NOT_GIVEN,
    Agent,
    AgentServer,
    AgentSession,
    AutoSubscribe,
    JobContext,
    JobProcess,
    cli,
)
from livekit.agents.voice import room_io
from livekit.agents.voice.turn import TurnHandlingOptions

TOPIC_SAY = "bench.say"
TOPIC_BYE = "bench.bye"
SAID_ATTR = "bench.said"


def prewarm(proc: JobProcess) -> None:
    from livekit.plugins import silero

    from agents.offline import warm_offline_voice

    proc.userdata["vad"] = silero.VAD.load()
    warm_offline_voice()


def _session(persona: str, voice: str) -> AgentSession:
    from agents.espeak_tts import EspeakTTS

    # it only speaks: no LLM, no STT (NOT_GIVEN is stored as None for both)
    return AgentSession(
        llm=NOT_GIVEN,
        stt=NOT_GIVEN,
        vad=None,  # left out, livekit would build its own
        tts=EspeakTTS(voice=voice, key=persona),
        turn_handling=TurnHandlingOptions(turn_detection=None),
    )


async def entrypoint(ctx: JobContext) -> None:
    from workers.room.stage.persona_audio import persona_audio_output

    meta: dict[str, Any] = json.loads(ctx.job.metadata or "{}")
    persona, voice = str(meta["persona"]), str(meta["voice"])
    session = _session(persona, voice)
    started = asyncio.Event()
    bye = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def say(n: int, text: str) -> None:
        await started.wait()  # a line may come as soon as the track is up, before the session
        await session.say(text).wait_for_playout()
        await ctx.room.local_participant.set_attributes({SAID_ATTR: str(n)})

    def on_data(packet: rtc.DataPacket) -> None:
        if packet.topic == TOPIC_BYE:
            bye.set()
        elif packet.topic == TOPIC_SAY:
            msg = json.loads(packet.data)
            if msg.get("to") == persona:
                task = asyncio.create_task(say(int(msg["n"]), str(msg["text"])))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    ctx.room.on("data_received", on_data)  # before joining: no line is missed
    await ctx.connect(auto_subscribe=AutoSubscribe.SUBSCRIBE_NONE)  # it only speaks
    output = persona_audio_output(ctx.room, f"voice_{persona}")
    await output.start()  # published at join, as the project's personas are
    session.output.audio = output
    await session.start(
        Agent(instructions=f"You are {meta.get('name', persona)}."),
        room=ctx.room,
        room_options=room_io.RoomOptions(
            audio_input=False,
            text_input=False,
            audio_output=False,
            text_output=True,
            close_on_disconnect=False,
        ),
    )
    started.set()
    await bye.wait()
    await session.aclose()
    ctx.shutdown("bench done")


def no_cpu_load() -> float:
    """load_fnc: livekit's default reports the machine's CPU, which the bench, the server and
    the other workers fill on 2 cores; at 1.0 the server offers the worker no job and drops
    the dispatch. The project's worker runs with LOAD_COUNTS_CPU=false for the same reason."""
    return 0.0


def build_server() -> AgentServer:
    server = AgentServer(
        setup_fnc=prewarm,
        num_idle_processes=1,  # one room at a time: one warm process is enough
        load_fnc=no_cpu_load,
        load_threshold=math.inf,
        # livekit's 10 s: four workers prewarming at once on 2 cores can take longer
        initialize_process_timeout=60.0,
        port=int(os.environ.get("WORKER_HTTP_PORT", "0")),
    )
    server.rtc_session(entrypoint, agent_name=os.environ["AGENT_NAME"])
    return server


if __name__ == "__main__":
    cli.run_app(build_server())
