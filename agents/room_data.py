"""The data one room's tools work on: shipped reference data plus the scenario's context.

All personas of a room share one RoomData, so what the driver reports the dispatcher can look
up, and a ticket support opens is the ticket everyone else sees. Ids are deterministic per room
("TKT-0001", "TKT-0002", ...) so transcripts and tests are reproducible.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from agents.outcome import Outcome
from config import jsonio
from config.catalog import Catalog, Tenant
from config.errors import ConfigError, Problem
from config.scenario import Scenario


@dataclass(frozen=True)
class ReferenceData:
    """config/reference/*.json as shipped. Read-only: each room works on its own copy."""

    loads: tuple[dict[str, Any], ...]
    price_list: dict[str, Any]
    knowledge_base: tuple[dict[str, Any], ...]


def _read(name: str) -> dict[str, Any]:
    path = resources.files("config") / "reference" / name
    try:
        data = jsonio.loads(path.read_bytes())
    except OSError as e:
        raise ConfigError(str(path), [Problem("$", f"cannot read reference data: {e}")]) from None
    except jsonio.JsonInputError as e:
        raise ConfigError(str(path), [e.problem]) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), [Problem("$", "expected a JSON object")])
    return data


@lru_cache(maxsize=1)
def load_reference() -> ReferenceData:
    """Read the shipped reference data once per process."""
    return ReferenceData(
        loads=tuple(_read("loads.json")["loads"]),
        price_list=_read("price_list.json"),
        knowledge_base=tuple(_read("knowledge_base.json")["articles"]),
    )


class RoomData:
    """The shared, mutable state of one room. Tools change it and record what they changed."""

    def __init__(
        self, scenario: Scenario, catalog: Catalog, *, reference: ReferenceData | None = None
    ) -> None:
        ref = reference or load_reference()
        self.scenario = scenario
        self.catalog = catalog
        self.tenant: Tenant = catalog.tenant_of(scenario.campaign)
        self.price_list: dict[str, Any] = copy.deepcopy(ref.price_list)
        self.knowledge_base: tuple[dict[str, Any], ...] = ref.knowledge_base
        # keyed by upper-case id: people say load ids in any case
        self.loads: dict[str, dict[str, Any]] = {
            load["id"].upper(): copy.deepcopy(load) for load in ref.loads
        }
        # context.loads was checked with the scenario (config.scenario.ScenarioContext)
        for load in scenario.loads:
            key = load["id"].upper()
            self.loads[key] = {**self.loads.get(key, {}), **copy.deepcopy(load)}
        self.tickets: dict[str, dict[str, Any]] = {}
        self.outcome = Outcome()
        self._counters: dict[str, Iterator[int]] = {}

    def next_id(self, prefix: str) -> str:
        """Deterministic per-room ids: next_id("TKT") -> "TKT-0001", then "TKT-0002"."""
        counter = self._counters.setdefault(prefix, itertools.count(1))
        return f"{prefix}-{next(counter):04d}"

    # Leads, quotes and voicemail messages live only in the outcome, which records them all.
    @property
    def leads(self) -> list[dict[str, Any]]:
        return [e.result for e in self.outcome.by_tool("qualify_lead")]

    @property
    def quotes(self) -> list[dict[str, Any]]:
        return [e.result for e in self.outcome.by_tool("quote_price")]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [e.result for e in self.outcome.by_tool("take_message")]

    def find_load(self, load_id: str) -> dict[str, Any] | None:
        return self.loads.get(load_id.strip().upper())

    def find_ticket(self, ticket_id: str) -> dict[str, Any] | None:
        return self.tickets.get(ticket_id.strip().upper())
