"""`python -m config.schema PATH`: write the scenario JSON Schema (for editors and CI)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from config.scenario import Scenario


def scenario_schema_text() -> str:
    return json.dumps(Scenario.model_json_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m config.schema PATH", file=sys.stderr)
        return 2
    Path(argv[0]).write_text(scenario_schema_text(), encoding="utf-8")
    print(f"wrote {argv[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
