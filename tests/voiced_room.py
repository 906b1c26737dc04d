"""`python -m tests.voiced_room TRANSCRIPTS_DIR`: one dispatch_checkin room on the offline voice,
each persona's eSpeak audio spoken into a captured output, in a process of its own as a job
runs it; prints the transcript's path. With PROMETHEUS_MULTIPROC_DIR set, the room's counters
and histograms land there as a job process's do."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from config.catalog import load_catalog
from config.scenario import load_scenario
from config.settings import Settings
from workers.openai_server.rooms import run_served_room


async def main(transcripts: Path) -> None:
    settings = Settings(_env_file=None, transcripts_dir=transcripts)
    catalog = load_catalog(settings.catalog_path)
    scenario = load_scenario("dispatch_checkin", scenarios_dir=settings.scenarios_dir)
    result, _, _ = await run_served_room(catalog, scenario, settings, transcripts)
    print(result.transcript_path, flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
