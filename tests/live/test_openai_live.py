"""The paid-model path on the real server: a worker whose personas run the real OpenAI
plugins against workers/openai_server, which listens inside the suite's network namespace."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config.catalog import Catalog, load_catalog
from config.scenario import load_scenario
from config.settings import PROJECT_ROOT
from tests.live.harness import (
    WorkerProcess,
    dispatch,
    joined,
    observer_token,
    server_api,
    transcript_of,
    unique,
)
from tests.live.test_voices import MAX_OVERLAP_S, Recording, longest_overlap, record
from workers.openai_server import OpenAIServer
from workers.openai_server.rooms import KEY_ENV, brains_for, served_catalog

pytestmark = pytest.mark.live
SCENARIOS = PROJECT_ROOT / "scenarios"


@contextlib.asynccontextmanager
async def served_worker(
    tmp: Path, scenario_name: str, modes: dict[str, str], inactive: tuple[str, ...] = ()
) -> AsyncIterator[tuple[WorkerProcess, OpenAIServer]]:
    """The local OpenAI server for `modes`' personas, and a worker whose catalog puts them on
    it (their key in KEY_ENV; no OPENAI_API_KEY, so every other persona speaks offline)."""
    catalog = load_catalog()
    scenario = load_scenario(scenario_name, scenarios_dir=SCENARIOS)
    server = OpenAIServer(brains_for(catalog, scenario, *modes), human_lines=scenario.human_lines)
    await server.start()
    data = json.loads((PROJECT_ROOT / "config" / "catalog.json").read_text())
    served: Catalog = served_catalog(data, server, modes, inactive)
    path = tmp / "served-catalog.json"
    path.write_text(served.model_dump_json())
    worker = WorkerProcess.start(
        tmp,
        agent_name=unique("served"),
        CATALOG_PATH=str(path),
        **{KEY_ENV: server.key},
    )
    try:
        await worker.ready()
        yield worker, server
    finally:
        worker.kill()
        await server.stop()


async def test_dispatch_checkin_with_both_personas_realtime(tmp_path: Path) -> None:
    """The seed's configuration: Tim and Chris both on a realtime model. The room runs to
    end_conversation; a hidden observer hears each persona on its own track in its own turns,
    never two at once; each line is what the server said; each persona's model is told the
    other's lines exactly once and never sent audio to answer by itself."""
    modes = {"tim": "realtime", "chris": "realtime"}
    room = unique("rt")
    rec = Recording()
    tasks: set[asyncio.Task] = set()
    async with served_worker(tmp_path, "dispatch_checkin", modes) as (worker, server):
        models = await worker.wait_for("worker_ready")
        assert models["models"] == "openai+offline"  # the personas not on the server: offline
        assert models["endpoints"].startswith("127.0.0.1:") and server.key not in worker.tail(400)
        async with server_api() as lk:
            await dispatch(
                lk, worker.agent_name, room, json.dumps({"scenario": "dispatch_checkin"})
            )
            async with joined(observer_token(room)) as observer:
                record(observer, rec, tasks)
                events = await transcript_of(worker, room, timeout=120)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
        said = {pid: list(lines) for pid, lines in server.said.items()}
        relayed = {pid: list(lines) for pid, lines in server.relayed.items()}
        audio_in = dict(server.audio_in)
    assert events[-1]["event"] == "room_ended" and events[-1]["reason"] == "end_conversation"
    utterances = [e for e in events if e["event"] == "utterance"]
    assert [u["persona"] for u in utterances] == ["tim", "chris", "tim", "chris", "tim"]
    for pid in modes:
        assert [u["text"] for u in utterances if u["persona"] == pid] == said[pid]
    # the relay: each persona's model got every line of the other exactly once
    for pid, other in (("tim", "chris"), ("chris", "tim")):
        for line in said[other]:
            assert sum(line in r for r in relayed.get(pid, [])) == 1, (pid, line)
    assert audio_in.get("chris", 0) == 0  # chris hears the room only through the relay
    cast = {c["identity"]: c["persona"] for c in events[0]["cast"]}
    for u in utterances:
        own = rec.speaking(u["identity"])
        during = own[(own >= u["started"]) & (own <= u["at"] + 0.5)]
        assert during.size > 0, u["text"]  # audible in its own turn
    a, b = list(cast)
    assert longest_overlap(rec.speaking(a), rec.speaking(b)) <= MAX_OVERLAP_S
    assert all(x != y for x, y in itertools.pairwise(u["identity"] for u in utterances))
