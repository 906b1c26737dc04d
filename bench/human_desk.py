"""The human agents' desk as a job uses it: the round trip of `ringable`, `claim` and `release`
from a job's client through the worker main process's desk service (its private Unix socket,
workers/humans/service.py), on the in-memory store and on Redis; and two claims of one call
sent at once, counting winners (there must be exactly one each time).

Run from the project root: `python -m bench.human_desk [--quick]`. Prints one JSON object.
The Redis is a `redis-server` this script starts on a free loopback port (no persistence), or
CAPACITY_URL when set. Without either the Redis figures say why they are missing. The worker
and the job's client share this process (one event loop), so a figure is the socket round
trip plus the store, as a job process sees it less the scheduling of a second process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench._common import emit, machine, quiet
from bench.selector_redis import redis_url
from config.catalog import Catalog, parse_catalog
from config.settings import PROJECT_ROOT, Settings
from workers.capacity.redis_store import RedisStore
from workers.humans.client import DeskClient
from workers.humans.service import HUMAN_DESK_ENV
from workers.main.worker_load import Worker

TENANT = "brightcart"


@dataclass(frozen=True)
class Sizes:
    rounds: int = 2_000  # ringable + claim + release, each timed
    races: int = 500  # two claims of one call at once


QUICK = Sizes(rounds=50, races=20)


def catalog() -> Catalog:
    """The shipped catalog with two human agents of one tenant."""
    data = json.loads((PROJECT_ROOT / "config" / "catalog.json").read_text())
    data["human_agents"] = [
        {"id": h, "tenant": TENANT, "name": h.title(), "phone": f"+1555010030{i}",
         "skills": ["support"]}
        for i, h in enumerate(("alice", "bob"))
    ]  # fmt: skip
    return parse_catalog(json.dumps(data))


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }


async def on_store(cat: Catalog, url: str | None, sizes: Sizes) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-desk-"))
    settings = Settings(
        _env_file=None, stats_port=0, humans_state_path=folder / "humans.json", capacity_url=url
    )
    worker = Worker(settings, cat, cpu_load=lambda: 0.0)
    worker.desk_service.open()
    await worker.desk_service.listen()
    path = os.environ[HUMAN_DESK_ENV]
    one, two = DeskClient(path, "AJ_1", cat), DeskClient(path, "AJ_2", cat)
    alice, bob = cat.human_by_id["alice"], cat.human_by_id["bob"]
    timed: dict[str, list[float]] = {"ringable": [], "claim": [], "release": []}
    clock = time.perf_counter
    try:
        for i in range(sizes.rounds):
            t0 = clock()
            free = await one.ringable(TENANT, assigned=(), skill="support")
            t1 = clock()
            won = await one.claim(f"call-{i}", alice)
            t2 = clock()
            await one.release(f"call-{i}", alice)
            t3 = clock()
            assert len(free) == 2 and won, "the desk refused a free human"
            timed["ringable"].append(t1 - t0)
            timed["claim"].append(t2 - t1)
            timed["release"].append(t3 - t2)
        winners: dict[int, int] = {}
        for i in range(sizes.races):
            call = f"race-{i}"
            won_a, won_b = await asyncio.gather(one.claim(call, alice), two.claim(call, bob))
            n = int(won_a) + int(won_b)
            winners[n] = winners.get(n, 0) + 1
            await one.release(call, alice)
            await two.release(call, bob)
    finally:
        await worker.aclose()
    return {
        **{op: _ms(samples) for op, samples in timed.items()},
        "races": sizes.races,
        "winners_per_race": {str(n): count for n, count in sorted(winners.items())},
    }


async def run(sizes: Sizes) -> dict[str, Any]:
    cat = catalog()
    memory = await on_store(cat, None, sizes)
    with redis_url() as url:
        if url is None:
            return {"memory": memory, "redis": {"skipped": "no redis-server and no CAPACITY_URL"}}
        settle = RedisStore(url)  # a Redis in use: not one whose claims wait to settle
        settle.needs_refresh()
        settle.close()
        redis = await on_store(cat, url, sizes)
    return {"memory": memory, "redis": redis}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 40x fewer rounds")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    quiet()
    result = asyncio.run(run(sizes))
    emit({"bench": "human_desk", "machine": machine(), "params": asdict(sizes), **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
