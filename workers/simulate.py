"""`python -m workers.simulate SCENARIO [--json] [--human TEXT ...] [--max-turns N] [--audio PATH]`

Casts the scenario with the selector and runs it on the local stage (no LiveKit, text only):
real AgentSessions, the real floor, tools and transcript; --audio then speaks the finished
conversation into one WAV with the offline voice. With OPENAI_API_KEY set the personas
use their OpenAI models in text mode; without it, the offline model speaks each persona's
script lines from the scenario. Exit 0 when the room ran, 2 on bad input, 3 when no cast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agents.endpoints import endpoint_for
from agents.models import build_text_models
from agents.offline import offline_models
from agents.session_models import SessionModels
from config.catalog import Catalog, Persona
from config.errors import ConfigError, ScenarioError, problems_from_validation
from config.logging import configure_logging
from config.scenario import Scenario
from config.settings import Settings
from workers.capacity.selector import NoCapacity, Selector
from workers.cli_input import (
    EXIT_BAD_INPUT,
    EXIT_NO_CAST,
    SCENARIO_HELP,
    BadInput,
    load_scenario_input,
    read_settings,
)
from workers.room.conversation_audio import (
    AUTO,
    ConversationAudio,
    auto_path,
    check_writable,
    render_conversation,
)
from workers.room.floor import Floor
from workers.room.runner import ModelsFor, RoomResult, run_room
from workers.room.seat import seats_for
from workers.room.stage.local import LocalStage
from workers.room.tracing import RoomTrace, configure_tracing


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m workers.simulate", description=__doc__.split("\n\n")[1]
    )
    p.add_argument("scenario", help=SCENARIO_HELP)
    p.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the live lines"
    )
    p.add_argument(
        "--human",
        action="append",
        default=None,
        metavar="TEXT",
        help="a caller line (repeatable); replaces the scenario's human_lines",
    )
    p.add_argument("--max-turns", type=int, default=None, help="override the scenario's turn limit")
    p.add_argument("--room", default=None, help="room name (default: sim-<scenario>)")
    p.add_argument(
        "--audio",
        default=None,
        metavar="PATH",
        help="write the conversation as a WAV file (offline voice, after the room); "
        f"'{AUTO}' means TRANSCRIPTS_DIR/<room>.wav",
    )
    return p.parse_args(argv)


def _audio_target(arg: str | None, settings: Settings, room: str) -> Path | None:
    """Where --audio writes, checked before the room runs (a bad path costs no room).
    Raises OSError with a message that names the path and the fix."""
    if arg is None:
        return None
    if arg == AUTO:
        path = auto_path(settings.transcripts_dir, room)
        path.parent.mkdir(parents=True, exist_ok=True)  # as the transcript writer does
    else:
        path = Path(arg).expanduser()
    check_writable(path)
    return path


def _render_audio(
    events: list[dict[str, Any]], catalog: Catalog, path: Path | None
) -> ConversationAudio | int | None:
    """Render the finished room to `path` (None: not asked for). Exit status 2, with one
    line on stderr, when the file cannot be written after all."""
    if path is None:
        return None
    try:
        return render_conversation(events, catalog, path)
    except OSError as e:
        print(f"workers.simulate: --audio {path}: not written ({e})", file=sys.stderr)
        return 2


class Printer:
    """Prints the conversation as it happens, one readable line per event.

    A reader that goes away (`simulate ... | head`) stops the printing, not the room: the
    output is pointed at /dev/null (as Python's docs on SIGPIPE advise) and the room runs to
    its end, transcript included."""

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout
        self.closed = False  # the reader went away; nothing more is printed

    def __call__(self, ev: dict[str, Any]) -> None:
        self.say(self._line(ev))

    def say(self, line: str | None) -> None:
        """Print one line, unless the reader has gone away."""
        if line is None or self.closed:
            return
        try:
            print(line, file=self.out, flush=True)
        except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
            self._stop()

    def _stop(self) -> None:
        self.closed = True
        if self.out is sys.stdout:
            # Python flushes stdout again at exit: point fd 1 at devnull so that is silent too.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass

    @staticmethod
    def _line(ev: dict[str, Any]) -> str | None:
        kind = ev["event"]
        line = None
        if kind == "room_started":
            cast = ", ".join(f"{c['name']} ({c['role']}: {c['reason']})" for c in ev["cast"])
            line = f"room {ev['room']}: {ev['scenario']} with {cast}"
        elif kind == "utterance":
            line = f"{ev['name']} ({ev['role']}): {ev['text']}"
        elif kind == "human":
            line = f"{ev['identity']} (human): {ev['text']}"
        elif kind == "tool_call":
            mark = "error" if ev["is_error"] else "->"
            line = f"    [tool] {ev['tool']}({ev['args'] or ''}) {mark} {ev['output']}"
        elif kind == "hand_over":
            line = f"    [hand-over] {ev['from_persona']} -> {ev['to']}: {ev['summary']}"
        elif kind == "error":
            line = f"    [error] {ev.get('persona', '')} {ev['error']}"
        elif kind == "room_ended":
            line = f"ended: {ev['reason']} ({ev['detail']}) after {ev['turns']} turns"
        return line


def _with_overrides(scenario: Scenario, max_turns: int | None) -> Scenario:
    """The scenario with the command line's overrides, validated like a scenario file
    (model_copy would skip validation: --max-turns 100000 must be refused, not run).
    Raises ScenarioError (a ConfigError) naming the flag and the limit."""
    if max_turns is None:
        return scenario
    data = scenario.model_dump()
    data["rules"] = {**data["rules"], "max_turns": max_turns}
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError("--max-turns", problems_from_validation(e)) from None


def _read_input(
    args: argparse.Namespace, settings: Settings
) -> tuple[Catalog, Scenario, Path | None]:
    """Everything the room needs from the command line, checked before it runs: the catalog
    and the scenario, its overrides, the --audio target. Raises BadInput (exit status 2)."""
    loaded = load_scenario_input(args.scenario, settings)
    try:
        scenario = _with_overrides(loaded.scenario, args.max_turns)
    except ConfigError as e:
        raise BadInput(str(e)) from e
    try:
        audio_path = _audio_target(args.audio, settings, args.room or f"sim-{scenario.name}")
    except OSError as e:
        raise BadInput(f"--audio {args.audio}: {e}") from e
    return loaded.catalog, scenario, audio_path


async def simulate(
    scenario: Scenario,
    catalog: Catalog,
    settings: Settings,
    *,
    human_lines: list[str] | None = None,
    room: str | None = None,
    listeners: list[Any] = (),  # type: ignore[assignment]
    selector: Selector | None = None,
    models_for: ModelsFor | None = None,
    on_floor: Callable[[Floor], None] | None = None,
) -> RoomResult:
    """Cast and run one room on the local stage; the cast's leases are released at the end,
    whatever ends the room, and an optional persona's as soon as it fails to start.
    `models_for` overrides the model choice (tests)."""
    selector = selector or Selector(catalog)
    cast = selector.cast(scenario)
    room = room or f"sim-{scenario.name}"
    leases = {m.persona.id: m.lease for m in cast.members}
    try:
        names = {m.slot.role: m.persona.name for m in cast.members}
        if models_for is None:  # per persona: its key set, its server; else offline

            def models_for(persona: Persona) -> SessionModels:
                if endpoint_for(persona, settings) is None:
                    return offline_models(persona, scenario, names)
                return build_text_models(persona, settings)

        lines = scenario.human_lines if human_lines is None else tuple(human_lines)
        return await run_room(
            room=room,
            scenario=scenario,
            catalog=catalog,
            seats=seats_for(cast.members, room),
            stage=LocalStage(lines),
            models_for=models_for,
            transcripts_dir=settings.transcripts_dir,
            listeners=listeners,
            on_floor=on_floor,
            on_seat_failed=lambda seat: leases[seat.persona.id].release(),
        )
    finally:
        cast.release()


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        settings = read_settings()
        # warnings about the input first; then the conversation is the output: errors only,
        # one line each (livekit logs a model's failure with its whole chained traceback)
        configure_logging(settings.log_format, "WARNING", tracebacks=False)
        catalog, scenario, audio_path = _read_input(args, settings)
        logging.getLogger().setLevel(logging.ERROR)  # then the conversation is the output
    except BadInput as e:
        print(f"workers.simulate: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    offline = settings.openai_key() is None
    events: list[dict[str, Any]] = []
    listeners: list[Any] = [events.append]
    out = Printer()  # every stdout line goes through it: `simulate | head` stays quiet
    if not args.json:
        out.say(
            "model: offline (no OPENAI_API_KEY set): personas speak their scenario script lines"
            if offline
            else "model: OpenAI, text mode (OPENAI_API_KEY is set)"
        )
        listeners.append(out)
    tracing = configure_tracing(
        settings.otel_exporter_otlp_endpoint,
        service=settings.agent_name,
        capture_content=settings.otel_capture_content,
    )
    if tracing is not None:
        listeners.append(RoomTrace(tracing, capture_content=settings.otel_capture_content))
    try:
        result = asyncio.run(
            simulate(
                scenario,
                catalog,
                settings,
                human_lines=args.human,
                room=args.room,
                listeners=listeners,
            )
        )
    except NoCapacity as e:
        print(f"workers.simulate: no cast: {e}", file=sys.stderr)
        return EXIT_NO_CAST
    finally:
        if tracing is not None:
            tracing.shutdown()  # sends the room's spans before the program exits
    if args.json:
        audio = _render_audio(events, catalog, audio_path)
        if isinstance(audio, int):
            return audio
        doc_audio = {"audio": {"path": str(audio.path), "seconds": audio.seconds}} if audio else {}
        out.say(
            json.dumps(
                {
                    "model": "offline" if offline else "openai",
                    "scenario": scenario.name,
                    "ended": {
                        "reason": result.reason,
                        "detail": result.detail,
                        "turns": result.turns,
                    },
                    "events": events,
                    "outcome": result.outcome,
                    "transcript": str(result.transcript_path),
                    "transcript_error": result.transcript_error,
                    **doc_audio,
                },
                default=str,
            )
        )
        return 0
    out.say("outcome:")
    for entry in result.outcome.get("entries", []):
        result_text = json.dumps(entry["result"], default=str)
        out.say(f"  {entry['persona']}: {entry['tool']} -> {result_text}")
    if result.transcript_error:
        out.say(f"transcript: not written ({result.transcript_error}): {result.transcript_path}")
    else:
        out.say(f"transcript: {result.transcript_path}")
    audio = _render_audio(events, catalog, audio_path)  # after the room: it never waits on audio
    if isinstance(audio, int):
        return audio
    if audio:
        out.say(f"audio: {audio.path} ({audio.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
