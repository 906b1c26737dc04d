"""One room from start to end: agents, stage, floor, transcript, and a clean end on every path.

Leases are not handled here: whoever cast the room (the simulation, or the worker's main
process) releases them when this returns or raises, and may release an optional persona's
lease as soon as that persona fails to start (`on_seat_failed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agents.outcome import OutcomeEntry
from agents.persona import build_agent
from agents.room_data import RoomData
from config.catalog import Catalog
from config.logging import get_logger
from config.scenario import Scenario
from workers.room.floor import Ending, EndReason, Floor, Speaker
from workers.room.room_metrics import RoomMetrics
from workers.room.seat import Seat
from workers.room.stage import ModelsFor, Stage, StageCast, StageError, StageEvents
from workers.room.stage.base import NotAnswered
from workers.room.transcript import Listener, Transcript
from workers.room.usage import usage_records

if TYPE_CHECKING:
    from workers.humans.room_transfer import RoomTransfer

log = get_logger("workers.room.runner")

SeatFailed = Callable[[Seat], None]


@dataclass(frozen=True)
class RoomResult:
    reason: str
    detail: str
    turns: int
    transcript_path: Path
    outcome: dict
    # why the transcript file is incomplete or missing (disk full, unwritable folder), if it is
    transcript_error: str | None = None


def _ordered(seats: Sequence[Seat], scenario: Scenario) -> tuple[Seat, Seat]:
    by_role = {s.slot.role: s for s in seats}
    return by_role[scenario.opener_slot.role], by_role[scenario.lead_slot.role]


async def run_room(
    *,
    room: str,
    scenario: Scenario,
    catalog: Catalog,
    seats: Sequence[Seat],
    stage: Stage,
    models_for: ModelsFor,
    transcripts_dir: Path,
    job_id: str = "",
    listeners: Sequence[Listener] = (),
    on_floor: Callable[[Floor], None] | None = None,
    on_seat_failed: SeatFailed | None = None,
    transfer: Callable[[Transcript], RoomTransfer] | None = None,
) -> RoomResult:
    """Run the scenario with these seats on this stage until a stop rule fires.

    Whatever ends the room (a stop rule, a persona's model failing, a persona failing to
    start, cancellation), every session is closed, every extra connection dropped, and the
    transcript closed with the outcome and an end event. An optional seat that fails to start
    is passed to `on_seat_failed` at once (to give its lease back) and the room goes on.
    A transcript that cannot be written (disk full) is logged once and never ends the room."""
    transcript = Transcript.create(transcripts_dir, room)
    # the room's usage and latencies on Prometheus, as its transcript records them
    transcript.subscribe(RoomMetrics(catalog))
    for listener in listeners:
        transcript.subscribe(listener)
    room_data = RoomData(scenario, catalog)
    room_data.outcome.subscribe(lambda entry: transcript.write("outcome_entry", **_entry(entry)))
    # how a persona reaches a person (workers/humans/room_transfer.py), bound to this transcript
    room_transfer = transfer(transcript) if transfer is not None else None
    floor = Floor(scenario, emit=transcript.write, humans=stage.humans, transfer=room_transfer)
    if on_floor is not None:
        on_floor(floor)
    started = time.monotonic()
    ending = Ending(EndReason.CANCELLED, "not started")
    transcript.write(
        "room_started",
        room=room,
        job_id=job_id,
        scenario=scenario.name,
        campaign=scenario.campaign,
        tenant=catalog.tenant_of(scenario.campaign).id,
        turn_policy=scenario.rules.turn_policy,
        cast=[
            {
                "persona": s.persona.id,
                "name": s.persona.name,
                "role": s.slot.role,
                "identity": s.identity,
                "required": s.slot.required,
                "reason": s.reason,
            }
            for s in seats
        ],
    )
    try:
        opener, lead = _ordered(seats, scenario)
        seats = _opener_first(seats, opener)
        cast_map = {s.slot.role: s.persona for s in seats}
        moderated = scenario.rules.turn_policy == "moderated"
        agents = {
            s.persona.id: build_agent(
                s.persona,
                room_data=room_data,
                cast=cast_map,
                floor=floor,
                moderator=moderated and s is lead,
                on_human_turn=stage.human_turn if s is lead else None,
            )
            for s in seats
        }
        events = StageEvents(
            # the room can be deleted (or the job stopped) while personas still join
            closing=lambda: floor.request_end(EndReason.SHUTDOWN, "the stage was closed"),
            human_speaking=floor.human_started_speaking,
            persona_lost=floor.persona_lost,
            humans_left=lambda: (
                floor.request_end(EndReason.HUMANS_LEFT, "every human has left")
                if scenario.ends_when_humans_leave
                else None  # listeners come and go; the personas talk to the end
            ),
            record=transcript.write,
        )
        cast = StageCast(
            seats=seats,
            agents=agents,
            models_for=models_for,
            own=opener.persona.id,
            listener=lead.persona.id,
        )
        sessions = await stage.open(cast, events)
        _report_failed_seats(seats, sessions, transcript, on_seat_failed)
        speakers = [
            Speaker.of(s, sessions[s.persona.id], agents[s.persona.id])
            for s in seats
            if s.persona.id in sessions
        ]
        floor.seat(speakers, opener=opener.persona.id, lead=lead.persona.id)
        ending = await floor.run()
    except NotAnswered as e:
        ending = Ending(EndReason.NO_ANSWER, str(e))
    except StageError as e:
        ending = Ending(EndReason.START_FAILED, str(e))
        transcript.write("error", error=str(e), stage="start")
    except asyncio.CancelledError:
        # an ending the floor had already taken (the worker lost) stays the room's reason
        ending = floor.ending or Ending(EndReason.CANCELLED, "the room task was cancelled")
        raise
    except Exception as e:
        ending = Ending(EndReason.PERSONA_ERROR, repr(e))
        transcript.write("error", error=repr(e))
        log.exception("room_failed", room=room)
    finally:
        if room_transfer is not None:  # every leg hung up, the bridge closed, seat released
            with contextlib.suppress(asyncio.CancelledError):  # bounded: CLEANUP_S
                await asyncio.shield(room_transfer.aclose())
        await _finish(stage, transcript, room_data, floor, ending, started)
    return RoomResult(
        ending.reason.value,
        ending.detail,
        floor.turns,
        transcript.path,
        room_data.outcome.to_dict(),
        transcript.error,
    )


def _report_failed_seats(
    seats: Sequence[Seat],
    sessions: Mapping[str, object],
    transcript: Transcript,
    on_seat_failed: SeatFailed | None,
) -> None:
    """Optional seats the stage could not start: noted, and handed back at once."""
    for seat in seats:
        if seat.persona.id in sessions:
            continue
        transcript.write(
            "error",
            persona=seat.persona.id,
            role=seat.slot.role,
            stage="start",
            error=f"{seat.persona.id} ({seat.slot.role}) failed to start; the room goes on "
            "without it",
        )
        if on_seat_failed is None:
            continue
        try:
            on_seat_failed(seat)
        except Exception as e:  # a release hook must not end the room
            log.error("seat_failed_hook_failed", persona=seat.persona.id, error=repr(e))


def _write_usage(transcript: Transcript, floor: Floor, room_data: RoomData) -> None:
    """One `usage` record per seated persona (workers/room/usage.py), once its session closed."""
    seated = ((s.seat, s.session) for s in floor.speakers)
    try:
        records = usage_records(seated, room_data.scenario, room_data.catalog)
    except Exception as e:  # an accounting fault must not hide how the room ended
        log.error("usage_failed", error=repr(e))
        return
    for record in records:
        transcript.write("usage", **record)


def _opener_first(seats: Sequence[Seat], opener: Seat) -> list[Seat]:
    """The floor's seat order (round robin's turn order) starts with the opener."""
    return [opener, *[s for s in seats if s is not opener]]


def _entry(entry: OutcomeEntry) -> dict[str, object]:
    return {
        "persona": entry.persona,
        "tool": entry.tool,
        "args": entry.args,
        "result": entry.result,
    }


async def _finish(
    stage: Stage,
    transcript: Transcript,
    room_data: RoomData,
    floor: Floor,
    ending: Ending,
    started: float,
) -> None:
    """Close everything; the transcript ends whatever happens to the closing (see
    `_close_stage`), and a cancellation that came meanwhile is passed on after that."""
    cancelled = await _close_stage(stage, transcript)
    reports = stage.session_reports()
    if reports:
        transcript.write("session_reports", reports=reports)
    _write_usage(transcript, floor, room_data)
    transcript.write("outcome", **room_data.outcome.to_dict())
    transcript.write(
        "room_ended",
        reason=ending.reason.value,
        detail=ending.detail,
        persona=ending.persona,
        turns=floor.turns,
        duration_s=round(time.monotonic() - started, 3),
    )
    transcript.close()
    log.info("room_ended", reason=ending.reason.value, detail=ending.detail, turns=floor.turns)
    if cancelled:
        raise asyncio.CancelledError  # passed on once the transcript has ended


async def _close_stage(stage: Stage, transcript: Transcript) -> bool:
    """Close the stage, to its end also when the room task is cancelled again; a closing
    that is itself cancelled (a job process's event loop cancels every task as it shuts
    down) or fails is noted in the transcript. True when a cancellation came meanwhile."""
    close = asyncio.ensure_future(stage.close())
    cancelled = False
    try:
        try:
            await asyncio.shield(close)
        except asyncio.CancelledError:
            cancelled = True
            await close
    except asyncio.CancelledError:
        cancelled = True
        transcript.write("error", error="closing was cancelled", stage="close")
    except Exception as e:
        transcript.write("error", error=repr(e), stage="close")
    return cancelled
