"""Shared helpers for the bench scripts (a private module: `make bench` does not run it).

Everything here builds on the product: the shipped catalog (with capacity raised so many rooms
can be cast at once), scenarios parsed by `config.scenario`, the local stage, the offline model.
Nothing here imports `tests/`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from livekit.agents import AgentSession, llm
from livekit.agents.types import NotGivenOr

from agents.scripted_llm import Reply, ScriptedLLM, Send
from config.catalog import Catalog, parse_catalog
from config.logging import configure_logging
from config.scenario import Scenario, parse_scenario
from config.settings import Settings
from workers.room.stage import StageCast, StageEvents
from workers.room.stage.local import LocalStage

ROOT = Path(__file__).resolve().parent.parent

MB = 1024 * 1024
ROLES4 = ("dispatcher", "driver", "sales", "support")  # the mixed-ops campaign has all four
CAMPAIGN = "mixed-ops"


# ---- output -------------------------------------------------------------------------------


def quiet() -> None:
    """Logs (ours and livekit's) to stderr, errors only: stdout carries the one JSON object."""
    configure_logging("console", "ERROR", stream=sys.stderr)


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "livekit_agents": metadata.version("livekit-agents"),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, default=str))
    sys.stdout.flush()


def run_async_bench(
    parse: Callable[[list[str] | None], Any],
    run: Callable[[Any], Coroutine[Any, Any, dict[str, Any]]],
    argv: list[str] | None,
) -> int:
    """The `main()` of an asyncio benchmark: parse, run quietly, print its one JSON object."""
    args = parse(argv)
    quiet()
    started = time.perf_counter()
    result = asyncio.run(run(args))
    result["elapsed_s"] = rounded(time.perf_counter() - started, 1)
    emit(result)
    return 0


def rounded(value: float, digits: int = 3) -> float:
    return round(float(value), digits)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in 0..100."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary_ms(seconds: Sequence[float]) -> dict[str, Any]:
    """p50/p90/p99/max/mean of durations given in seconds, reported in milliseconds."""
    ms = [v * 1000.0 for v in seconds]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50_ms": rounded(percentile(ms, 50)),
        "p90_ms": rounded(percentile(ms, 90)),
        "p99_ms": rounded(percentile(ms, 99)),
        "max_ms": rounded(max(ms)),
        "mean_ms": rounded(sum(ms) / len(ms)),
    }


# ---- process figures ----------------------------------------------------------------------


def rss_mb(pid: int | None = None) -> float:
    return psutil.Process(pid).memory_info().rss / MB


def peak_rss_mb() -> float:
    """This process's high-water RSS since it started (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    """CPU seconds (user + system, all threads) this process has used so far."""
    return time.process_time()


class RssSampler:
    """Samples this process's RSS from a thread; `peak` is the highest sample."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self._interval = interval_s
        self._proc = psutil.Process()
        self.peak = self._proc.memory_info().rss / MB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def sample(self) -> float:
        now = self._proc.memory_info().rss / MB
        self.peak = max(self.peak, now)
        return now

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def settle() -> None:
    gc.collect()


class GcPauses:
    """Collections of the oldest generation (2) and how long each paused the loop."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._t0)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *_: Any) -> None:
        gc.callbacks.remove(self)

    def summary(self) -> dict[str, Any]:
        ms = [p * 1000 for p in self.pauses]
        return {
            "collections": len(ms),
            "max_pause_ms": rounded(max(ms)) if ms else 0.0,
            "total_pause_ms": rounded(sum(ms)),
        }


# ---- the product's catalog and scenarios, shaped for benchmarks ----------------------------


def bench_catalog(capacity: int = 10_000) -> Catalog:
    """The shipped catalog with every persona's capacity raised, so one selector can cast
    hundreds of rooms at once (capacity is a policy figure, not a resource limit)."""
    data = json.loads((ROOT / "config" / "catalog.json").read_text(encoding="utf-8"))
    for persona in data["personas"]:
        persona["max_concurrent"] = capacity
    return parse_catalog(json.dumps(data), "bench catalog")


def _all_four() -> dict[str, Any]:
    return json.loads((ROOT / "scenarios" / "all_four.json").read_text(encoding="utf-8"))


def bench_scenario(
    personas: int,
    turns: int,
    *,
    name: str | None = None,
    tools: bool = True,
    loop_guard: int = 1000,
) -> Scenario:
    """A round-robin room of 1..4 personas of the mixed-ops campaign (dispatcher, driver,
    sales, support) that runs exactly `turns` turns with the offline model.

    Each role's script starts with its lines from the shipped `all_four` scenario (tool calls
    included, when `tools`), then distinct filler lines, so the loop guard never fires and
    every turn is a real generation. A lone persona talks with a scripted caller (a persona
    with nobody else on the floor turns to the humans), one caller line per turn."""
    if not 1 <= personas <= len(ROLES4):
        raise ValueError(f"personas must be 1..{len(ROLES4)}")
    base = _all_four()
    roles = ROLES4[:personas]
    per_role = turns // personas + 2
    script: dict[str, list[dict[str, Any]]] = {}
    for role in roles:
        lines = [dict(ln) if tools else {"say": ln["say"]} for ln in base["script"][role]]
        k = 0
        while len(lines) < per_role:
            k += 1
            lines.append({"say": f"{{me}} here, update {k} on HDX-2478: all on track so far."})
        script[role] = lines
    cast = [{"role": r, "opens": r == roles[0], "leads": r == roles[0]} for r in roles]
    data = {
        "name": name or f"bench_p{personas}_t{turns}",
        "description": f"Benchmark room: {personas} persona(s), {turns} turns, round robin.",
        "campaign": CAMPAIGN,
        "cast": cast,
        "context": base["context"],
        "rules": {
            "turn_policy": "round_robin",
            "max_turns": turns,
            "max_duration_s": 3600,
            "loop_guard": loop_guard,
        },
        "script": script,
        "human_lines": [f"Caller here, question {k}?" for k in range(1, turns + 1)]
        if personas == 1
        else [],
    }
    return parse_scenario(json.dumps(data), "bench scenario")


def offline_settings(transcripts_dir: Path) -> Settings:
    """Settings that keep `workers.simulate` on the offline model whatever the environment."""
    return Settings(openai_api_key=None, transcripts_dir=transcripts_dir)


# ---- a model that answers instantly (floor latency) ----------------------------------------


class InstantLLM(ScriptedLLM[Reply]):
    """Answers every chat() at once with a distinct one-line reply; calls `on_chat` first and
    `on_done` after its last chunk (time hooks for the floor benchmark)."""

    def __init__(
        self,
        name: str,
        *,
        on_chat: Callable[[str], None] | None = None,
        on_done: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(model="bench-instant", provider="bench")
        self.name = name
        self.calls = 0
        self._on_chat = on_chat
        self._on_done = on_done

    def _reply(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        tool_choice: NotGivenOr[llm.ToolChoice],
    ) -> Reply:
        if self._on_chat is not None:
            self._on_chat(self.name)
        self.calls += 1
        text = f"{self.name} here, line {self.calls}: the load is on schedule."
        return Reply(f"instant-{self.calls}", text=text, completion_tokens=8)

    async def _deliver(self, reply: Reply, send: Send) -> None:
        await super()._deliver(reply, send)
        if self._on_done is not None:
            self._on_done(self.name)


# ---- the local stage, observed ---------------------------------------------------------------


class ObservedStage(LocalStage):
    """The product's LocalStage; records when `open` returned (every persona's session
    started) and lets a benchmark attach to the sessions it started."""

    def __init__(
        self,
        human_lines: Iterable[str] = (),
        *,
        on_open: Callable[[StageCast, dict[str, AgentSession]], None] | None = None,
    ) -> None:
        super().__init__(tuple(human_lines))
        self.opened_at: float | None = None
        self._on_open = on_open

    async def open(self, cast: StageCast, events: StageEvents) -> dict[str, AgentSession]:
        sessions = await super().open(cast, events)
        self.opened_at = time.perf_counter()
        if self._on_open is not None:
            self._on_open(cast, sessions)
        return sessions


def lstsq(rows: Sequence[Sequence[float]], ys: Sequence[float]) -> list[float]:
    """Ordinary least squares (numpy), coefficients in column order."""
    import numpy as np

    coef, *_ = np.linalg.lstsq(np.asarray(rows, float), np.asarray(ys, float), rcond=None)
    return [float(c) for c in coef]
