"""The worker's gauges and counters on livekit-agents' Prometheus endpoint.

`AgentServer(prometheus_port=...)` (setting `PROMETHEUS_PORT`) serves prometheus_client's
default registry at `/metrics`; this collector adds the capacity picture to it, read when the
endpoint is scraped (with a shared capacity store: every worker's rooms):

- `persona_active_rooms{persona,role}`: rooms each persona is in now;
- `persona_capacity{persona,role}`: its `max_concurrent` (0 when inactive);
- `persona_over_capacity{persona,role}`: rooms it is in beyond its `max_concurrent` (0 but
  after a worker paused past the lease TTL took its rooms back, see redis_store.py);
- `capacity_store_up`: 1 when the capacity counts could be read, else 0;
- `cast_rejections_total{reason}`: rooms this worker refused, by reason;
- `rooms_total{scenario,outcome}`: rooms this worker was offered, by scenario and outcome
  (`accepted`, `voicemail`, `rejected`);
- `human_agents{tenant,status}`: the catalog's human agents by what they are now: `available`
  (could be rung), `busy` (set busy, or every seat taken) or `offline`;
- `human_busy_seats{tenant}` and `human_seats{tenant}`: calls human agents are on now (every
  worker's, with a shared store), and the seats they have (the sum of their `capacity`).

Every label value is bounded by the worker's own files and code, never by what a dispatcher
sends (20,000 offers with distinct inline names once made 20,000 series): `persona`, `role`
and `tenant` come from the catalog, `status` is one of three, `scenario` is a scenario name
found in SCENARIOS_DIR when the worker started, else `inline` (or `unknown` when the metadata
named none), `reason` is one of the worker's own short codes, else `other`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from config.catalog import Catalog
from config.humans import AVAILABILITY
from config.logging import get_logger
from workers.humans.core import HumanStatus, per_tenant

log = get_logger("workers.main.metrics")

INLINE = "inline"
UNKNOWN = "unknown"
OTHER = "other"
_REASON_CODE = re.compile(r"[a-z][a-z_]{0,39}")  # the shape of the worker's reject codes


def shipped_scenarios(scenarios_dir: Path) -> frozenset[str]:
    """The scenario names a dispatcher can name: the files in SCENARIOS_DIR now."""
    try:
        return frozenset(p.stem for p in scenarios_dir.glob("*.json"))
    except OSError:
        return frozenset()


class WorkerMetrics(Collector):
    """Counts what on_request decided and reads the selector's stats at each scrape."""

    def __init__(
        self,
        catalog: Catalog,
        selector_stats: Callable[[], dict[str, Any]],
        scenario_names: Iterable[str] = (),
        *,
        humans: Callable[[], list[HumanStatus]] | None = None,
    ) -> None:
        self._scenario_names = frozenset(scenario_names)
        self._humans = humans if catalog.human_agents else None
        self._tenants = sorted({h.tenant for h in catalog.human_agents})
        self._capacity = {
            p.id: (p.role, p.max_concurrent if p.active else 0) for p in catalog.personas
        }
        self._selector_stats = selector_stats
        self.rejections: Counter[str] = Counter()
        self.rooms: Counter[tuple[str, str]] = Counter()
        self._registered = False

    def offered(self, scenario: str, outcome: str, reason: str = "") -> None:
        """One room offered to this worker and what became of it."""
        self.rooms[(self.scenario_label(scenario), outcome)] += 1
        if outcome == "rejected":
            self.rejections[self.reason_label(reason)] += 1

    def scenario_label(self, scenario: str) -> str:
        if not scenario:
            return UNKNOWN
        return scenario if scenario in self._scenario_names else INLINE

    @staticmethod
    def reason_label(reason: str) -> str:
        if not reason:
            return UNKNOWN
        return reason if _REASON_CODE.fullmatch(reason) else OTHER

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        active = GaugeMetricFamily(
            "persona_active_rooms", "Rooms each persona is in now", labels=["persona", "role"]
        )
        capacity = GaugeMetricFamily(
            "persona_capacity",
            "A persona's max_concurrent (0 if inactive)",
            labels=["persona", "role"],
        )
        over = GaugeMetricFamily(
            "persona_over_capacity",
            "Rooms a persona is in beyond its max_concurrent",
            labels=["persona", "role"],
        )
        for persona_id, (role, limit) in self._capacity.items():
            capacity.add_metric([persona_id, role], limit)
        up = GaugeMetricFamily("capacity_store_up", "1 when the capacity counts could be read")
        try:
            stats = self._selector_stats()
        except Exception as e:  # the store is down: say so, and still serve the counters
            log.warning("metrics_capacity_unreadable", error=repr(e))
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
            for p in stats["personas"]:
                active.add_metric([p["id"], p["role"]], p["active"])
                over.add_metric([p["id"], p["role"]], max(0, p["active"] - p["max"]))
        yield active
        yield capacity
        yield over
        yield up
        rejections = CounterMetricFamily(
            "cast_rejections", "Rooms this worker refused, by reason", labels=["reason"]
        )
        for reason, n in sorted(self.rejections.items()):
            rejections.add_metric([reason], n)
        yield rejections
        rooms = CounterMetricFamily(
            "rooms", "Rooms offered to this worker, by outcome", labels=["scenario", "outcome"]
        )
        for (scenario, outcome), n in sorted(self.rooms.items()):
            rooms.add_metric([scenario, outcome], n)
        yield rooms
        if self._humans is not None:
            yield from self._collect_humans(self._humans)

    def _collect_humans(
        self, humans: Callable[[], list[HumanStatus]]
    ) -> Iterator[GaugeMetricFamily]:
        agents = GaugeMetricFamily(
            "human_agents",
            "Human agents by status now: available, busy (set busy or every seat taken), offline",
            labels=["tenant", "status"],
        )
        busy = GaugeMetricFamily(
            "human_busy_seats", "Calls human agents are on now", labels=["tenant"]
        )
        seats = GaugeMetricFamily(
            "human_seats", "Seats human agents have (their capacity)", labels=["tenant"]
        )
        try:
            totals = per_tenant(humans())
        except Exception as e:  # the store is down: no human figures this scrape
            log.warning("metrics_humans_unreadable", error=repr(e))
            return
        for tenant in self._tenants:
            counts = totals.get(tenant, {})
            for status in AVAILABILITY:
                agents.add_metric([tenant, status], counts.get(status, 0))
            busy.add_metric([tenant], counts.get("busy_seats", 0))
            seats.add_metric([tenant], counts.get("seats", 0))
        yield agents
        yield busy
        yield seats

    def register(self) -> None:
        if not self._registered:
            REGISTRY.register(self)
            self._registered = True

    def unregister(self) -> None:
        if self._registered:
            REGISTRY.unregister(self)
            self._registered = False
