"""on_request in the worker's main process (workers/main/admission.py, held by the Worker of
workers/main/worker_load.py): real JobRequests built from livekit's protocol messages, a recorder of
accept/reject, the real selector and the lease book; and the same rules in a job that came with
no plan (`cast_in_job`)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from livekit.agents import JobRequest, utils
from livekit.agents.ipc.job_executor import JobStatus
from livekit.agents.job import JobAcceptArguments, RunningJobInfo
from livekit.protocol import agent as agent_pb
from livekit.protocol import models
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from config.catalog import Catalog
from config.scenario import load_scenario
from config.settings import Settings
from tests.conftest import SCENARIOS_DIR
from workers.capacity.leases import LeaseBook
from workers.capacity.seat_returns import SEAT_RETURNS_ENV
from workers.capacity.selector import Lease, Selector
from workers.job.plan import MAX_METADATA_BYTES, JobPlan, PlanError, voicemail_plan
from workers.job.runner import seat_giver
from workers.main.admission import Accept, Reject, cast_in_job, release_leases
from workers.main.worker_load import Worker
from workers.tokens import persona_identity

ROOM = "room-1"


class Recorder:
    """Stands in for the worker's accept/reject plumbing (what the server would be told)."""

    def __init__(
        self, accept_error: Exception | None = None, book: LeaseBook | None = None
    ) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.accept_error = accept_error
        self.book = book
        self.held_during_accept: set[str] = set()

    async def on_accept(self, args: JobAcceptArguments) -> None:
        self.calls.append(("accept", args))
        if self.book is not None:
            self.held_during_accept = set(self.book.held())
        if self.accept_error is not None:
            raise self.accept_error

    async def on_reject(self, terminate: bool) -> None:
        self.calls.append(("reject", terminate))

    @property
    def last(self) -> tuple[str, Any]:
        return self.calls[-1]


def job_request(
    rec: Recorder, metadata: str, *, job_id: str = "AJ_1", room_metadata: str = ""
) -> JobRequest:
    job = agent_pb.Job(
        id=job_id,
        type=agent_pb.JobType.JT_ROOM,
        room=models.Room(sid="RM_1", name=ROOM, metadata=room_metadata),
        agent_name="multi-persona",
        metadata=metadata,
    )
    return JobRequest(job=job, on_reject=rec.on_reject, on_accept=rec.on_accept)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        _env_file=None, scenarios_dir=SCENARIOS_DIR, stats_host="127.0.0.1", stats_port=0
    )


@pytest.fixture
def worker(settings: Settings, catalog: Catalog) -> Worker:
    return Worker(settings, catalog, cpu_load=lambda: 0.0)


async def handle(worker: Worker, req: JobRequest) -> None:
    async with asyncio.timeout(5):
        await worker.admission.handle(req)


def handed_plan(worker: Worker, args, job_id: str = "AJ_1") -> str:
    """The plan the worker left for the job process; the accept metadata is public and holds
    none of it (no context, script or reasons)."""
    public = json.loads(args.metadata)
    assert set(public) == {"persona", "role", "room"}
    text = worker.admission.handoff.take(job_id)
    assert text is not None
    return text


def rooms_in_use(worker: Worker) -> int:
    return worker.selector.stats()["summary"]["total_active_rooms"]


INLINE = {
    "name": "inline_pair",
    "campaign": "inbound-support",
    "cast": [
        {"role": "support", "persona": "jordan", "opens": True, "leads": True},
        {"role": "sales"},
    ],
    "context": {"caller": "Sam Lee"},
    "rules": {"turn_policy": "alternate", "max_turns": 4},
}


# -- accepted ------------------------------------------------------------------------------


async def test_named_scenario_is_accepted_as_the_opener(worker: Worker, catalog: Catalog):
    rec = Recorder(book=worker.leasebook)
    await handle(worker, job_request(rec, json.dumps({"scenario": "dispatch_checkin"})))

    kind, args = rec.last
    assert kind == "accept"
    # one job's identity: the same room dispatched twice must not replace Tim's participant
    assert args.identity == persona_identity("tim", ROOM, "AJ_1")
    assert args.identity.startswith("agent_tim_room-1_")
    assert args.name == "Tim"
    assert args.attributes == {
        "role": "dispatcher",
        "persona": "tim",
        "campaign": "freight-dispatch",
    }
    plan = JobPlan.from_handoff(handed_plan(worker, args), catalog)
    assert plan.scenario == load_scenario("dispatch_checkin", scenarios_dir=SCENARIOS_DIR)
    assert [(m.role, m.persona_id, m.reason) for m in plan.members] == [
        ("dispatcher", "tim", "primary"),
        ("driver", "chris", "primary"),
    ]
    seats = plan.seats(ROOM, job_id="AJ_1")
    assert [s.identity for s in seats] == [
        persona_identity("tim", ROOM, "AJ_1"),
        persona_identity("chris", ROOM, "AJ_1"),
    ]
    assert seats[0].identity == args.identity  # the job participant is the first seat
    assert plan.seats(ROOM, job_identity="agent-x")[0].identity == "agent-x"
    # leases are held under the job id (already while accepting) until the job ends
    assert rec.held_during_accept == {"AJ_1"}
    assert worker.leasebook.held()["AJ_1"]["personas"] == ["dispatcher:tim", "driver:chris"]
    assert worker.selector.active_rooms("tim") == worker.selector.active_rooms("chris") == 1


async def test_inline_scenario_is_accepted_and_round_trips(worker: Worker, catalog: Catalog):
    rec = Recorder()
    await handle(worker, job_request(rec, json.dumps(INLINE)))

    kind, args = rec.last
    assert kind == "accept"
    assert (args.identity, args.name) == (persona_identity("jordan", ROOM, "AJ_1"), "Jordan")
    text = handed_plan(worker, args)
    plan = JobPlan.from_handoff(text, catalog)
    assert plan.to_handoff() == text  # round-trips
    assert plan.scenario.name == "inline_pair"
    assert plan.scenario.context == {"caller": "Sam Lee"}
    assert plan.job_member.persona_id == "jordan"


async def test_a_plan_larger_than_job_metadata_may_be_still_goes_to_the_job(
    catalog: Catalog, tmp_path
):
    """The plan goes by file, which has no metadata limit: a scenario file with a large
    context (allowed: scenario files may be four times job metadata's limit) is accepted and
    reaches the job whole."""
    data = json.loads((SCENARIOS_DIR / "dispatch_checkin.json").read_text())
    data["name"] = "big_context"
    data["context"]["notes"] = ["x" * 1000] * (MAX_METADATA_BYTES // 1000 + 8)
    (tmp_path / "big_context.json").write_text(json.dumps(data))
    settings = Settings(_env_file=None, scenarios_dir=tmp_path, stats_port=0)
    worker = Worker(settings, catalog, cpu_load=lambda: 0.0)
    rec = Recorder()
    await handle(worker, job_request(rec, json.dumps({"scenario": "big_context"})))
    kind, args = rec.last
    assert kind == "accept", rec.calls
    text = handed_plan(worker, args)
    assert len(text.encode()) > MAX_METADATA_BYTES
    plan = JobPlan.from_handoff(text, catalog)
    assert plan.scenario.model_dump()["context"]["notes"] == data["context"]["notes"]
    assert plan.job_persona.id == "tim" and [m.persona_id for m in plan.others] == ["chris"]


async def test_opener_goes_first_whatever_the_slot_order(worker: Worker, catalog: Catalog):
    data = {**INLINE, "cast": [{"role": "sales"}, {"role": "support", "opens": True}]}
    rec = Recorder()
    await handle(worker, job_request(rec, json.dumps(data)))

    kind, args = rec.last
    assert kind == "accept" and args.attributes["role"] == "support"
    plan = JobPlan.from_handoff(handed_plan(worker, args), catalog)
    assert [m.role for m in plan.members] == ["support", "sales"]


async def test_campaign_override_and_room_metadata_fallback(worker: Worker, catalog: Catalog):
    rec = Recorder()
    metadata = json.dumps({"scenario": "sales_support_handoff", "campaign": "mixed-ops"})
    await handle(worker, job_request(rec, metadata))
    kind, args = rec.last
    assert kind == "accept" and args.attributes["campaign"] == "mixed-ops"
    assert JobPlan.from_handoff(handed_plan(worker, args), catalog).scenario.campaign == "mixed-ops"

    # No dispatch metadata: the room's metadata (set by workers.dispatch) names the scenario.
    room_md = json.dumps({"scenario": "dispatch_checkin"})
    await handle(worker, job_request(rec, "", job_id="AJ_2", room_metadata=room_md))
    kind, args = rec.last
    assert kind == "accept" and args.attributes["campaign"] == "freight-dispatch"


# -- rejected --------------------------------------------------------------------------------


def _inline(**changes: Any) -> str:
    return json.dumps({**INLINE, **changes})


BAD_METADATA = [
    ("not json", "not_json"),
    ("", "empty"),
    (json.dumps({"scenario": "x" * 70_000}), "too_large"),
    ("[1, 2]", "not_object"),
    ('"dispatch_checkin"', "not_object"),
    (json.dumps({"campaign": "freight-dispatch"}), "no_scenario"),
    (json.dumps({"scenario": "no_such_scenario"}), "unknown_scenario"),
    (json.dumps({"scenario": "../config/catalog"}), "bad_scenario_name"),
    (json.dumps({"scenario": "/etc/passwd"}), "bad_scenario_name"),
    (json.dumps({"scenario": 42}), "bad_scenario_name"),
    (json.dumps({"scenario": "dispatch_checkin", "rooms": 3}), "unknown_field"),
    (json.dumps({"scenario": "dispatch_checkin", "campaign": "nope"}), "scenario_not_in_catalog"),
    (json.dumps({"scenario": "dispatch_checkin", "inbound": "yes"}), "bad_inbound"),
    (_inline(campaign="no-such-campaign"), "scenario_not_in_catalog"),
    (_inline(cast=[{"role": "astronaut"}, {"role": "sales"}]), "scenario_not_in_catalog"),
    (
        _inline(cast=[{"role": "support", "persona": "nobody"}, {"role": "sales"}]),
        "scenario_not_in_catalog",
    ),
    (_inline(rules={"max_turns": 0}), "invalid_scenario"),
    (_inline(name="../escape"), "invalid_scenario"),
    (_inline(extra_field=True), "invalid_scenario"),
]


@pytest.mark.parametrize(("metadata", "problem"), BAD_METADATA)
async def test_bad_metadata_is_rejected_with_a_logged_reason(
    worker: Worker, metadata: str, problem: str
):
    rec = Recorder()
    with capture_logs() as logs:
        await handle(worker, job_request(rec, metadata))

    assert rec.calls == [("reject", False)]  # terminate=False: another worker may take it
    rejected = [e for e in logs if e["event"] == "job_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["problem"] == problem
    assert rejected[0]["log_level"] == "warning" and rejected[0]["bad_metadata"] is True
    assert rejected[0]["detail"]
    assert rooms_in_use(worker) == 0 and worker.leasebook.held() == {}

    # the handler keeps working for the next room
    await handle(worker, job_request(rec, json.dumps({"scenario": "dispatch_checkin"})))
    assert rec.last[0] == "accept"


async def test_an_unexpected_error_is_a_reject_not_a_crash(worker: Worker, monkeypatch):
    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("selector exploded")

    monkeypatch.setattr(worker.selector, "cast", boom)
    rec = Recorder()
    with capture_logs() as logs:
        await handle(worker, job_request(rec, json.dumps({"scenario": "dispatch_checkin"})))
    assert rec.calls == [("reject", False)]
    assert any(e["event"] == "job_request_failed" for e in logs)


def fill(worker: Worker, persona_ids: list[str]) -> None:
    for pid in persona_ids:
        persona = worker.catalog.persona(pid)
        for _ in range(persona.max_concurrent - worker.selector.active_rooms(pid)):
            worker.selector.acquire_persona(pid, reason="test load")


async def test_no_cast_is_rejected_so_another_worker_can_take_it(worker: Worker):
    fill(worker, ["tim", "dana"])  # every dispatcher freight-dispatch could use
    before = rooms_in_use(worker)
    rec = Recorder()
    with capture_logs() as logs:
        await handle(worker, job_request(rec, json.dumps({"scenario": "dispatch_checkin"})))

    assert rec.calls == [("reject", False)]
    (event,) = [e for e in logs if e["event"] == "job_rejected"]
    assert event["problem"] == "no_cast" and "dispatcher" in event["detail"]
    assert rooms_in_use(worker) == before and worker.leasebook.held() == {}


async def test_no_cast_with_voicemail_accepts_the_voicemail_persona(
    worker: Worker, catalog: Catalog
):
    fill(worker, ["alex", "jordan", "casey"])  # every support persona inbound-support reaches
    rec = Recorder()
    await handle(worker, job_request(rec, json.dumps({"scenario": "inbound_support"})))

    kind, args = rec.last
    assert kind == "accept"
    assert (args.identity, args.name) == (persona_identity("vera", ROOM, "AJ_1"), "Vera")
    assert args.attributes == {
        "role": "voicemail",
        "persona": "vera",
        "campaign": "inbound-support",
    }
    plan = JobPlan.from_handoff(handed_plan(worker, args), catalog)
    assert plan.voicemail
    assert [(m.role, m.persona_id) for m in plan.members] == [("voicemail", "vera")]
    (slot,) = plan.scenario.cast
    assert (slot.persona, slot.required, slot.opens, slot.leads) == ("vera", True, True, True)
    assert plan.scenario.rules.turn_policy == "addressed"
    assert plan.scenario.context.get("company") == "BrightCart"  # context kept
    assert worker.selector.active_rooms("vera") == 1
    assert worker.leasebook.held()["AJ_1"]["personas"] == ["voicemail:vera"]

    # voicemail full as well: reject
    fill(worker, ["vera"])
    await handle(
        worker, job_request(rec, json.dumps({"scenario": "inbound_support"}), job_id="AJ_2")
    )
    assert rec.last == ("reject", False)
    assert "AJ_2" not in worker.leasebook.held()


async def test_inbound_flag_uses_the_least_loaded_strategy(worker: Worker, catalog: Catalog):
    # primary_first would take tim again; least_loaded picks the idle dispatcher
    worker.selector.acquire_persona("tim", reason="test load")
    rec = Recorder()
    metadata = json.dumps({"scenario": "dispatch_checkin", "inbound": True})
    await handle(worker, job_request(rec, metadata))
    kind, args = rec.last
    assert kind == "accept" and args.attributes["persona"] == "dana"


async def test_failed_accept_releases_the_leases(worker: Worker):
    rec = Recorder(accept_error=RuntimeError("assignment timed out"))
    with capture_logs() as logs:
        await handle(worker, job_request(rec, json.dumps({"scenario": "dispatch_checkin"})))
    assert rec.calls[0][0] == "accept" and len(rec.calls) == 1  # no reject after an accept
    assert any(e["event"] == "job_accept_failed" for e in logs)
    assert rooms_in_use(worker) == 0 and worker.leasebook.held() == {}


# -- leases until the job ends ---------------------------------------------------------------


async def test_leases_are_held_until_the_job_is_released(worker: Worker):
    rec = Recorder()
    await handle(worker, job_request(rec, json.dumps({"scenario": "all_four"})))
    assert rooms_in_use(worker) == 4
    assert worker.leasebook.release("AJ_1") is True
    assert rooms_in_use(worker) == 0
    assert worker.leasebook.release("AJ_1") is False  # idempotent


def closed_proc(job_id: str, status: JobStatus) -> Any:
    """Shaped like the pool's JobExecutor at `process_closed`: running_job is still set."""
    info = RunningJobInfo(
        accept_arguments=JobAcceptArguments(name="Tim", identity="agent_tim", metadata=""),
        job=agent_pb.Job(id=job_id, room=models.Room(name=ROOM)),
        url="",
        token="",
        worker_id="w",
        fake_job=True,
    )
    return SimpleNamespace(running_job=info, status=status, exitcode=0)


async def test_process_closed_releases_the_job_leases(worker: Worker):
    pool: utils.EventEmitter[str] = utils.EventEmitter()
    server = SimpleNamespace(_proc_pool=pool)
    worker.attach(server)  # type: ignore[arg-type]  # a stand-in AgentServer: its pool only
    try:
        rec = Recorder()
        await handle(worker, job_request(rec, json.dumps({"scenario": "dispatch_checkin"})))
        await handle(worker, job_request(rec, json.dumps(INLINE), job_id="AJ_2"))
        assert rooms_in_use(worker) == 4

        pool.emit("process_closed", closed_proc("AJ_1", JobStatus.FAILED))  # a crashed job
        assert set(worker.leasebook.held()) == {"AJ_2"} and rooms_in_use(worker) == 2
        pool.emit("process_closed", closed_proc("AJ_1", JobStatus.FAILED))  # twice: no-op
        pool.emit("process_closed", SimpleNamespace(running_job=None, status=None))  # idle proc
        pool.emit("process_closed", closed_proc("AJ_2", JobStatus.SUCCESS))
        assert worker.leasebook.held() == {} and rooms_in_use(worker) == 0
    finally:
        await worker.aclose()


def reconcile(worker: Worker, active_jobs: list[RunningJobInfo]) -> list[str]:
    server = SimpleNamespace(active_jobs=active_jobs)  # all reconcile reads of the server
    return worker.reconcile(server)  # type: ignore[arg-type]  # a stand-in AgentServer


async def test_reconcile_with_active_jobs(worker: Worker):
    now = [0.0]
    worker.leasebook = book = LeaseBook(grace_s=30.0, clock=lambda: now[0])
    worker.admission.leasebook = book
    rec = Recorder()
    await handle(worker, job_request(rec, json.dumps({"scenario": "dispatch_checkin"})))
    assert reconcile(worker, [closed_proc("AJ_1", JobStatus.RUNNING).running_job]) == []
    now[0] = 5.0
    await handle(worker, job_request(rec, json.dumps(INLINE), job_id="AJ_2"))  # just accepted

    # AJ_1's process vanished; AJ_2 has not shown up yet
    assert reconcile(worker, []) == ["AJ_1"]
    assert set(book.held()) == {"AJ_2"} and rooms_in_use(worker) == 2
    now[0] = 34.0
    assert reconcile(worker, []) == []  # AJ_2 still within its grace period
    now[0] = 35.0
    assert reconcile(worker, []) == ["AJ_2"]  # never started: released
    assert rooms_in_use(worker) == 0


def persona_rooms(worker: Worker, persona_id: str) -> int:
    return next(p["active"] for p in worker.selector.stats()["personas"] if p["id"] == persona_id)


async def test_an_optional_persona_that_failed_to_start_in_a_job_is_released_at_once(
    worker: Worker, monkeypatch
):
    """21.5: a job whose optional persona (sales, standing by) failed to start hands its
    lease back through the main process's seat-returns socket; the job keeps the rest."""
    monkeypatch.setenv(SEAT_RETURNS_ENV, "")  # put back as it was after the test
    worker.seat_returns.open()  # as build_server does, before livekit's forkserver starts
    worker.seat_returns.listen()
    try:
        await handle(worker, job_request(Recorder(), json.dumps({"scenario": "inbound_support"})))
        held = worker.leasebook.held()["AJ_1"]["personas"]
        sales = next(label.split(":")[1] for label in held if label.startswith("sales:"))
        assert persona_rooms(worker, sales) == 1

        handed_back = asyncio.Event()
        release_persona = worker.leasebook.release_persona

        def seen(job_id: str, persona_id: str) -> bool:
            handed_back.set()
            return release_persona(job_id, persona_id)

        monkeypatch.setattr(worker.leasebook, "release_persona", seen)
        give_back = seat_giver("AJ_1", [])  # the job process's on_seat_failed
        give_back(SimpleNamespace(persona=SimpleNamespace(id=sales)))  # type: ignore[arg-type]
        async with asyncio.timeout(5):
            await handed_back.wait()
        assert persona_rooms(worker, sales) == 0
        assert worker.leasebook.held()["AJ_1"]["personas"] == [
            label for label in held if label != f"sales:{sales}"
        ]
        assert rooms_in_use(worker) == len(held) - 1
        assert release_persona("AJ_1", sales) is False  # given back once
    finally:
        await worker.aclose()
    assert not Path(os.environ[SEAT_RETURNS_ENV]).parent.exists()


def test_a_job_gives_back_a_lease_it_took_itself_without_asking(catalog: Catalog):
    scenario = load_scenario("dispatch_checkin", scenarios_dir=SCENARIOS_DIR)
    selector = Selector(catalog)
    cast = selector.cast(scenario)
    leases = [m.lease for m in cast.members]
    chris = next(lease for lease in leases if lease.persona.id == "chris")
    seat_giver("AJ_9", leases)(SimpleNamespace(persona=chris.persona))  # type: ignore[arg-type]
    assert chris not in leases
    busy = {p["id"]: p["active"] for p in selector.stats()["personas"]}
    assert busy["chris"] == 0 and busy["tim"] == 1


async def test_worker_close_releases_everything(worker: Worker):
    rec = Recorder()
    await handle(worker, job_request(rec, json.dumps({"scenario": "all_four"})))
    await worker.aclose()
    assert worker.leasebook.held() == {} and rooms_in_use(worker) == 0


# -- a job with no plan (`connect --room`) casts for itself -----------------------------------


def unplanned_job(metadata: str = "", room_metadata: str = "") -> Any:
    """What cast_in_job reads of a JobContext: its job, as livekit's protocol message."""
    room = models.Room(sid="RM_1", name=ROOM, metadata=room_metadata)
    return SimpleNamespace(job=agent_pb.Job(id="AJ_1", room=room, metadata=metadata))


def test_a_job_with_no_plan_casts_for_itself_by_the_same_rules(
    settings: Settings, catalog: Catalog
):
    room_md = json.dumps({"scenario": "dispatch_checkin"})  # as workers.dispatch sets it
    decision = cast_in_job(unplanned_job(room_metadata=room_md), settings, catalog)
    assert isinstance(decision, Accept)
    assert [(m.role, m.persona_id) for m in decision.plan.members] == [
        ("dispatcher", "tim"),
        ("driver", "chris"),
    ]
    assert JobPlan.from_handoff(decision.plan_text, catalog) == decision.plan
    release_leases(decision.leases)
    assert all(isinstance(lease, Lease) and lease.released for lease in decision.leases)

    refused = cast_in_job(unplanned_job(metadata="not json"), settings, catalog)
    assert isinstance(refused, Reject)
    assert refused == Reject("not_json", refused.detail, bad_metadata=True)


# -- the plan on the job's side --------------------------------------------------------------


def _vm_plan(catalog: Catalog) -> dict[str, Any]:
    scenario = load_scenario("dispatch_checkin", scenarios_dir=SCENARIOS_DIR)
    return json.loads(voicemail_plan(scenario, catalog).to_handoff())


def test_voicemail_plan_round_trips(catalog: Catalog):
    plan = JobPlan.from_handoff(json.dumps(_vm_plan(catalog)), catalog)
    assert plan.voicemail and plan.job_persona.id == "vera"
    assert plan.scenario.context == load_scenario("dispatch_checkin").context


@pytest.mark.parametrize(
    "change",
    [
        {"v": 99},
        {"members": [["voicemail", "ghost", "x", True]]},  # not in the job's catalog
        {"members": [["driver", "chris", "x", True]]},  # not in the cast
        {"members": [["voicemail", "vera", "x"]]},
        {"members": []},
        {"scenario": {"name": "x"}},
    ],
)
def test_plan_refuses_what_the_job_cannot_run(catalog: Catalog, change: dict[str, Any]):
    with pytest.raises(PlanError):
        JobPlan.from_handoff(json.dumps({**_vm_plan(catalog), **change}), catalog)
    with pytest.raises(PlanError, match="not JSON"):
        JobPlan.from_handoff("{{", catalog)


# -- the labels of the worker's Prometheus series (issue 21, item 5) ---------------------------
# Bounded by the worker, never by dispatchers: 20,000 offers with distinct inline scenario names
# once made 20,000 `rooms_total` series. Read the way Prometheus reads them.

OFFERS = 60


def inline_named(name: str) -> str:
    return json.dumps(
        {
            "name": name,
            "campaign": "freight-dispatch",
            "cast": [{"role": "dispatcher"}, {"role": "driver"}],
            "rules": {"turn_policy": "alternate", "max_turns": 4},
        }
    )


def series(worker: Worker) -> dict[str, list[dict[str, str]]]:
    registry = CollectorRegistry()
    registry.register(worker.metrics)
    text = generate_latest(registry).decode()
    return {
        family.name: [sample.labels for sample in family.samples]
        for family in text_string_to_metric_families(text)
    }


async def test_distinct_inline_names_and_odd_reasons_make_a_bounded_number_of_series(
    worker: Worker, catalog: Catalog
):
    try:
        for i in range(OFFERS):  # accepted while tim and chris are free, then no_cast
            await handle(
                worker, job_request(Recorder(), inline_named(f"campaign-{i}"), job_id=f"AJ_{i}")
            )
        await handle(worker, job_request(Recorder(), '{"scenario": "dispatch_checkin"}'))
        await handle(worker, job_request(Recorder(), '{"scenario": "no_such_file"}'))
        worker.metrics.offered("x" * 500, "rejected", "Reason With Caller Text: 0xdeadbeef")
    finally:
        worker.leasebook.release_all()
    found = series(worker)
    scenarios = {labels["scenario"] for labels in found["rooms"]}
    shipped = {p.stem for p in SCENARIOS_DIR.glob("*.json")}
    assert "inline" in scenarios and "dispatch_checkin" in scenarios
    assert scenarios <= shipped | {"inline", "unknown"}
    reasons = {labels["reason"] for labels in found["cast_rejections"]}
    assert {"no_cast", "unknown_scenario", "other"} <= reasons
    assert len(reasons) <= 40  # the worker's own codes
    personas = {labels["persona"] for labels in found["persona_capacity"]}
    assert personas == {p.id for p in catalog.personas}
