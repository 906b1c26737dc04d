"""From the end of a caller's spoken line to the first audible frame of the answer, on a real
livekit-server, split by stage.

Run from the project root: `python -m bench.answer_latency [--lines 20] [--people 1] [--quick]`.
Prints one JSON object. Not inside the live suite's private network namespace (LIVE_NETNS !=
"1"), it re-runs itself there through `tests/live/livenet.sh run` (root and `make livekit`).

One `python -m workers.multi start` worker (the user's command: no key, so the offline model and
voice; the lead hears with silero's VAD and pocketsphinx). One room of an inline scenario whose
lead (support) answers each caller line with a short scripted line. A Python-SDK caller
publishes a microphone and keeps it running (silence between lines, as a real microphone does);
it speaks each line in eSpeak, waits for the answer to be over, then speaks the next.
`--people N` puts N-1 more people in the room, each with a silent microphone of their own (the
first answer's latency with others present).

Per line, all wall-clock times on this one machine:
- `speech_end`: when the caller's last speech sample played out of its audio source (known
  from the audio it sent: the last sample above silence, plus the source's queue);
- `way_in`: -> the last frame of the line with sound in it reached the lead's ear
  (`human.heard.sound_end`): the caller's audio over WebRTC into the worker;
- `vad`: -> the ear saw the VAD's end of speech (`human.heard.vad_end`): the end-of-speech
  silence the VAD waits for, and what it takes to notice the speech is over;
- `stt`: -> its final transcript (`human.heard.final`);
- `floor`: -> the floor asked the answering persona (`utterance.started`): the line queued,
  recorded, relayed to every persona, the responder chosen (its `floor` record in between);
- `llm`: livekit's LLM time to first token (`utterance.latency.llm_ttft_s`);
- `tts`: livekit's TTS time to first audio (`utterance.latency.tts_ttfb_s`);
- `transport`: the rest, to the first frame the caller receives on the persona's track with
  speech in it (livekit's own scheduling between those stages, the audio output and the
  WebRTC path; eSpeak's leading silence too);
- `total`: speech end -> first audible answer frame.

`extra_lines_heard` / `extra_answers`: `human` records / answers beyond the lines spoken (a
line split at a pause, or heard twice, is heard and answered more than once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._livenet import run_in_livenet

if __name__ == "__main__":
    run_in_livenet("bench.answer_latency")  # the real run happens inside the private namespace

import numpy as np
from livekit import api, rtc

from bench._common import machine, percentile, rounded, run_async_bench
from bench.live_room import LOG_DIR, Worker, start_worker

URL = os.environ.get("LIVEKIT_URL", "")
KEY = os.environ.get("LIVEKIT_API_KEY", "")
SECRET = os.environ.get("LIVEKIT_API_SECRET", "")
FRAME_S = 0.01
SPEECH_RMS = 300.0  # int16 RMS of a 10 ms frame that carries speech (eSpeak peaks ~8000)
SILENT_PEAK = 64  # |sample| at or below this is silence (eSpeak pads its lines with zeros)
MIC_QUEUE_MS = 100  # the caller's audio source buffers this much at most: a tight speech end
ANSWER_TIMEOUT_S = 60.0
QUIET_S = 0.4  # the answer is over: recorded in the transcript and its track this long silent
STAGES = ("way_in", "vad", "stt", "floor", "llm", "tts", "transport", "total")
AIMS = {"p50_s": 0.8, "p95_s": 1.2}  # issue 27, on an idle machine

LINES = (
    "Hi, my blender arrived with a cracked jar.",
    "The order number is eight eight one two three.",
    "Yes, I have photos of it.",
    "Can you send a new jar instead?",
    "How long will the replacement take?",
    "I need it before the weekend.",
    "Is shipping free for this?",
    "My account is under Jamie Rivera.",
    "Please use the same address.",
    "Will I get an email about it?",
    "Can I return the broken one?",
    "Do you need the box back too?",
    "The lid is fine, only the jar cracked.",
    "I bought it two weeks ago.",
    "Is there a warranty on the motor?",
    "What about the extra blades?",
    "Thank you, that helps a lot.",
    "Could you repeat the ticket number?",
    "Great, I will wait for the email.",
    "That's all, thank you.",
)


def scenario_json(lines: tuple[str, ...]) -> str:
    """The lead alone (support), the caller's lines as the STT's expected lines, one short
    answer per line; the room ends when the bench deletes it."""
    answers = [{"say": "Support here, how can I help?"}] + [
        {"say": f"Got it, noted point {i + 1}."} for i in range(len(lines))
    ]
    return json.dumps(
        {
            "name": "answer_latency_bench",
            "description": "Latency benchmark: a caller's lines, each answered by the lead.",
            "campaign": "inbound-support",
            "cast": [{"role": "support", "opens": True, "leads": True}],
            "rules": {
                "turn_policy": "addressed",
                "max_turns": len(answers) + 2,
                "max_duration_s": 900,
            },
            "human_lines": list(lines),
            "script": {"support": answers},
        }
    )


def token(room: str, identity: str) -> str:
    return (
        api.AccessToken(KEY, SECRET)
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )


# ---- the caller ------------------------------------------------------------------------------


@dataclass
class Mic:
    """A microphone that never stops: queued speech, else silence, 10 ms frames in real time.
    `said(end)` tells when the last speech sample of a line played out of the source."""

    source: rtc.AudioSource
    rate: int
    _queue: asyncio.Queue[tuple[np.ndarray, int, asyncio.Future[float]]] = field(
        default_factory=asyncio.Queue
    )

    async def speak(self, samples: np.ndarray) -> float:
        """Queue `samples`; returns the wall-clock time their last speech sample played out."""
        loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > SILENT_PEAK)
        last = int(loud[-1]) + 1 if loud.size else len(samples)
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        await self._queue.put((samples, last, done))
        return await done

    async def run(self) -> None:
        step = self.rate // 100
        silence = np.zeros(step, dtype=np.int16)
        while True:
            if self._queue.empty():
                await self._frame(silence)
                continue
            samples, last, done = self._queue.get_nowait()
            for i in range(0, len(samples), step):
                chunk = samples[i : i + step]
                if len(chunk) < step:
                    chunk = np.concatenate([chunk, silence[: step - len(chunk)]])
                await self._frame(chunk)
                if i < last <= i + step and not done.done():
                    # this frame ends `step - (last - i)` samples after the speech does
                    after = (i + step - last) / self.rate
                    done.set_result(time.time() + self.source.queued_duration - after)

    async def _frame(self, chunk: np.ndarray) -> None:
        frame = rtc.AudioFrame(chunk.tobytes(), self.rate, 1, len(chunk))
        await self.source.capture_frame(frame)


async def publish_mic(room: rtc.Room, rate: int) -> Mic:
    source = rtc.AudioSource(rate, 1, queue_size_ms=MIC_QUEUE_MS)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
    await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    return Mic(source, rate)


@dataclass
class Ears:
    """The caller's view of every agent track: when speech frames arrived."""

    speech: list[float] = field(default_factory=list)  # arrival times of speech frames
    last_frame: float = 0.0

    def listen(self, room: rtc.Room, tasks: set[asyncio.Task[None]]) -> None:
        async def read(track: rtc.Track) -> None:
            async for ev in rtc.AudioStream(track, sample_rate=16000, num_channels=1):
                samples = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float64)
                at = time.time()
                self.last_frame = at
                if samples.size and float(np.sqrt(np.mean(samples**2))) >= SPEECH_RMS:
                    self.speech.append(at)

        @room.on("track_subscribed")
        def _(track: rtc.Track, _pub: Any, p: rtc.RemoteParticipant) -> None:
            if (
                track.kind == rtc.TrackKind.KIND_AUDIO
                and p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
            ):
                tasks.add(asyncio.ensure_future(read(track)))

    def first_after(self, t: float) -> float | None:
        return next((s for s in self.speech if s >= t), None)

    def quiet_for(self, seconds: float) -> bool:
        return not self.speech or time.time() - self.speech[-1] >= seconds


# ---- the transcript --------------------------------------------------------------------------


def transcript(directory: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return events


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == name]


async def until(predicate: Callable[[], bool], limit_s: float, what: str) -> None:
    """Poll `predicate` (a file and a frame clock: nothing to await) until true or `limit_s`."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {limit_s:g} s waiting for {what}")
        await asyncio.sleep(0.02)


def split(spoken_end: float, heard: dict[str, Any], utterance: dict[str, Any], first: float):
    """One line's stages (seconds), from the caller's times and the transcript's records."""
    h = heard.get("heard") or {}
    lat = utterance.get("latency") or {}
    vad_end, final, started = h.get("vad_end"), h.get("final"), utterance["started"]
    sound_end = h.get("sound_end", spoken_end)  # a worker that does not say: all in `vad`
    llm, tts = lat.get("llm_ttft_s"), lat.get("tts_ttfb_s")
    out: dict[str, float | None] = {"total": first - spoken_end}
    out["way_in"] = sound_end - spoken_end
    out["vad"] = vad_end - sound_end if vad_end is not None else None
    out["stt"] = final - vad_end if final is not None and vad_end is not None else None
    out["floor"] = started - final if final is not None else None
    out["llm"], out["tts"] = llm, tts
    out["transport"] = first - started - (llm or 0.0) - (tts or 0.0)
    return {k: None if v is None else rounded(v, 4) for k, v in out.items()}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stage in STAGES:
        vals = [r[stage] for r in rows if r.get(stage) is not None]
        out[stage] = (
            {
                "n": len(vals),
                "p50_s": rounded(percentile(vals, 50)),
                "p95_s": rounded(percentile(vals, 95)),
                "max_s": rounded(max(vals)),
            }
            if vals
            else {"n": 0}
        )
    return out


# ---- the run ---------------------------------------------------------------------------------


async def run_room(worker: Worker, agent: str, args: argparse.Namespace, tmp: Path) -> dict:
    from agents.espeak_tts import espeak_voice_for, synthesize_pcm

    lines = LINES[: args.lines]
    room_name = f"bench-answer-{secrets.token_hex(3)}"
    transcripts = tmp / "transcripts"
    lk = api.LiveKitAPI(URL.replace("ws://", "http://"), KEY, SECRET)
    tasks: set[asyncio.Task[None]] = set()
    rooms: list[rtc.Room] = []
    try:
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(
                agent_name=agent, room=room_name, metadata=scenario_json(lines)
            )
        )
        voice = espeak_voice_for("fable", "caller")
        clips = []
        for text in lines:
            rate, pcm = synthesize_pcm(text, voice)
            clips.append(np.frombuffer(pcm, dtype=np.int16))
        caller = rtc.Room()
        rooms.append(caller)
        ears = Ears()
        ears.listen(caller, tasks)
        await caller.connect(URL, token(room_name, "caller-bench"))
        mic = await publish_mic(caller, rate)
        tasks.add(asyncio.ensure_future(mic.run()))
        for n in range(1, args.people):  # silent people, each with a microphone running
            other = rtc.Room()
            rooms.append(other)
            await other.connect(URL, token(room_name, f"listener-{n}"))
            tasks.add(asyncio.ensure_future((await publish_mic(other, rate)).run()))

        def answered(count: int) -> bool:
            return len(named(transcript(transcripts), "utterance")) >= count

        def over(count: int) -> bool:
            """`count` answers recorded, the last one's track quiet since."""
            return answered(count) and ears.quiet_for(QUIET_S)

        await until(functools.partial(over, 1), 90, "the greeting")
        spoken: list[float] = []
        firsts: list[float | None] = []
        for i, clip in enumerate(clips):
            spoken.append(await mic.speak(clip))
            await until(
                functools.partial(over, i + 2),
                ANSWER_TIMEOUT_S,
                f"the answer to line {i + 1}",
            )
            firsts.append(ears.first_after(spoken[-1]))
        events = transcript(transcripts)
    finally:
        with contextlib.suppress(api.TwirpError):
            await lk.room.delete_room(api.DeleteRoomRequest(room=room_name))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for r in rooms:
            with contextlib.suppress(Exception):
                await r.disconnect()
        await lk.aclose()

    humans = named(events, "human")
    utterances = named(events, "utterance")[1:]  # after the greeting
    rows = []
    for i, (end, first) in enumerate(zip(spoken, firsts, strict=True)):
        heard = next((h for h in humans if h["at"] >= end), None)
        reply = next((u for u in utterances if heard and u["started"] >= heard["at"]), None)
        if heard is None or reply is None or first is None:
            rows.append({"line": i + 1, "missing": True})
            continue
        humans.remove(heard)
        utterances.remove(reply)
        rows.append(
            {"line": i + 1, "exact": heard["text"] == lines[i], **split(end, heard, reply, first)}
        )
    return {
        "lines": rows,
        "human_records": len(named(events, "human")),
        "answers": len(named(events, "utterance")) - 1,  # the greeting is not an answer
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    agent = f"bench-answer-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="bench-answer-") as tmpdir:
        tmp = Path(tmpdir)
        worker = start_worker(
            ["-m", "workers.multi", "start"],
            {"AGENT_NAME": agent, "TRANSCRIPTS_DIR": str(tmp / "transcripts")},
            LOG_DIR / "bench-answer-latency-worker.log",
        )
        try:
            await worker.ready()
            result = await run_room(worker, agent, args, tmp)
        finally:
            worker.kill()
    rows = [r for r in result["lines"] if not r.get("missing")]
    stages = summarise(rows)
    total = stages["total"]
    return {
        "bench": "answer_latency",
        "params": {"lines": args.lines, "people": args.people},
        "stages": stages,
        "lines_answered": len(rows),
        "lines_heard_exactly": sum(1 for r in rows if r.get("exact")),
        "lines_missing": len(result["lines"]) - len(rows),
        # a line the ear split, or heard twice, is more than one `human` record; each is answered
        "extra_lines_heard": result["human_records"] - len(result["lines"]),
        "extra_answers": result["answers"] - len(result["lines"]),
        "aims": AIMS,
        "meets_idle_aims": bool(
            total.get("n") and total["p50_s"] <= AIMS["p50_s"] and total["p95_s"] <= AIMS["p95_s"]
        ),
        "per_line": result["lines"],
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--lines",
        type=int,
        default=20,
        choices=range(1, len(LINES) + 1),
        metavar=f"1..{len(LINES)}",
        help="caller lines spoken (default 20)",
    )
    p.add_argument(
        "--people",
        type=int,
        default=1,
        choices=(1, 2, 3, 4),
        help="people in the room: the caller, plus silent ones (default 1)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 3 lines")
    args = p.parse_args(argv)
    if args.quick:
        args.lines = min(args.lines, 3)
    return args


def main(argv: list[str] | None = None) -> int:
    return run_async_bench(parse, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
