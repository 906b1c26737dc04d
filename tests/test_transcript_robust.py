"""Transcripts are never shared or cut silently, and never take their room down.

Rooms run on the local stage with the product's offline model (no network, no key) through
workers.simulate.simulate, the same cast/run/release path as `python -m workers.simulate`."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from config.scenario import load_scenario
from config.settings import PROJECT_ROOT, Settings
from workers.capacity.selector import Selector
from workers.room import transcript as transcript_module
from workers.room.runner import RoomResult
from workers.room.transcript import Transcript, read_transcript
from workers.simulate import Printer, simulate

TIMEOUT = 30


def _settings(transcripts_dir: Path) -> Settings:
    return Settings(_env_file=None, transcripts_dir=transcripts_dir, openai_api_key=None)


async def _run(
    catalog, scenarios_dir, transcripts_dir: Path, *, room: str | None = None, **kw: Any
) -> tuple[RoomResult, Selector]:
    scenario = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    selector = Selector(catalog)
    async with asyncio.timeout(TIMEOUT):
        result = await simulate(
            scenario, catalog, _settings(transcripts_dir), room=room, selector=selector, **kw
        )
    return result, selector


def _released(selector: Selector) -> bool:
    return selector.stats()["summary"]["total_active_rooms"] == 0


def _events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


# -- one file per room, always -----------------------------------------------------------------


async def test_two_rooms_of_one_name_at_the_same_time_get_two_files(
    catalog, scenarios_dir, tmp_path
):
    first, second = await asyncio.gather(
        _run(catalog, scenarios_dir, tmp_path, room="same"),
        _run(catalog, scenarios_dir, tmp_path, room="same"),
    )
    paths = {first[0].transcript_path, second[0].transcript_path}
    assert len(paths) == 2 and sorted(paths) == sorted(tmp_path.glob("*.jsonl"))
    for path in paths:
        kinds = [e["event"] for e in read_transcript(path)]
        assert kinds.count("room_started") == 1 and kinds.count("room_ended") == 1
        assert kinds[0] == "room_started" and kinds[-1] == "room_ended"


def test_same_room_same_second_names_are_unique_readable_and_never_reused(tmp_path):
    at = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    transcripts = [Transcript.create(tmp_path, "dock 7/north", clock=lambda: at) for _ in range(3)]
    names = [t.path.name for t in transcripts]
    assert names == [
        "dock-7-north-20250304T050607.jsonl",
        "dock-7-north-20250304T050607_2.jsonl",
        "dock-7-north-20250304T050607_3.jsonl",
    ]
    assert sorted(names) == names  # a listing shows them in creation order
    for n, t in enumerate(transcripts):
        t.write("note", n=n)
        t.close()
    assert [[e["n"] for e in read_transcript(t.path)] for t in transcripts] == [[0], [1], [2]]


def test_a_lone_surrogate_in_a_line_is_written_not_raised(tmp_path):
    t = Transcript.create(tmp_path, "r")
    t.write("human", text="broken \ud800 text")
    t.close()
    assert read_transcript(t.path)[0]["text"] == "broken \ud800 text"


# -- an unwritable folder or a full disk never ends the room -----------------------------------


async def test_an_unwritable_folder_is_logged_once_and_the_room_still_ends_cleanly(
    catalog, scenarios_dir, tmp_path
):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file where the transcripts folder should be")
    seen: list[dict] = []
    with capture_logs() as logs:
        result, selector = await _run(
            catalog, scenarios_dir, blocker / "transcripts", listeners=[seen.append]
        )
    assert result.reason == "end_conversation" and result.turns > 0
    assert _released(selector)
    failures = _events(logs, "transcript_write_failed")
    assert len(failures) == 1 and failures[0]["stage"] == "open"
    assert failures[0]["path"].startswith(str(blocker / "transcripts"))
    assert result.transcript_error and "open" in result.transcript_error
    # listeners still see the whole room
    assert seen[0]["event"] == "room_started" and seen[-1]["event"] == "room_ended"


class _FullDisk:
    """The write system call of a disk that fills up after `room` records: the record that
    does not fit is written in part (as a real full disk takes what fits), then ENOSPC."""

    def __init__(self, room: int) -> None:
        self.room, self.calls = room, 0

    def __call__(self, fd: int, data: bytes) -> int:
        self.calls += 1
        if self.calls <= self.room:
            return os.write(fd, data)
        if self.calls == self.room + 1 and len(data) > 1:
            return os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def disk_full_after(monkeypatch):
    """Transcript files fill the disk after N records."""

    def set_room(records: int) -> None:
        monkeypatch.setattr(transcript_module, "_write_fd", _FullDisk(records))

    return set_room


async def test_a_full_disk_is_logged_once_and_the_room_still_ends_cleanly(
    catalog, scenarios_dir, tmp_path, disk_full_after
):
    disk_full_after(3)
    seen: list[dict] = []
    with capture_logs() as logs:
        result, selector = await _run(catalog, scenarios_dir, tmp_path, listeners=[seen.append])
    assert result.reason == "end_conversation" and result.turns > 0
    assert _released(selector)
    failures = _events(logs, "transcript_write_failed")
    assert len(failures) == 1, failures
    assert failures[0]["path"] == str(result.transcript_path)
    assert failures[0]["errno"] == "ENOSPC" and failures[0]["stage"] == "write"
    assert result.transcript_error
    # what fitted is on disk; later events were dropped from the file, not from listeners
    assert [e["event"] for e in read_transcript(result.transcript_path)] == [
        e["event"] for e in seen[:3]
    ]
    assert seen[-1]["event"] == "room_ended" and len(seen) > 3


def test_a_disk_full_from_the_first_record_is_logged_once(tmp_path, disk_full_after):
    disk_full_after(0)
    with capture_logs() as logs:
        t = Transcript.create(tmp_path, "r")
        t.write("a")
        t.write("b")
        t.close()
        t.close()
    assert len(_events(logs, "transcript_write_failed")) == 1
    assert not t.written
    assert t.path.read_bytes() == b""  # the half record the disk took was taken back out


# A child process whose file size limit is the disk: writes past it are cut short by the
# kernel (a partial write, then EFBIG), as a full disk cuts them.
_FILL_UP = """
import json, sys
from pathlib import Path
from workers.room.transcript import Transcript
t = Transcript.create(Path(sys.argv[1]), "full")
for n in range(200):
    t.write("utterance", n=n, text="x" * 37)
t.close()
print(json.dumps({"path": str(t.path), "error": t.error}))
"""


def _limit_file_size(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not death, like ENOSPC


def test_a_disk_that_fills_mid_record_leaves_only_whole_lines(tmp_path):
    """21.5: the kernel wrote part of the last record before the disk was full: the transcript
    still ends with a whole line, and every line is a whole record."""
    # records are ~80 bytes, their length varying with the digits of their time (`at`): the
    # limit nearly always falls inside one; where it falls exactly after one, the file is full
    limit = 1000
    run = subprocess.run(
        [sys.executable, "-c", _FILL_UP, str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: _limit_file_size(limit),
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["error"] and "write" in result["error"]
    data = Path(result["path"]).read_bytes()
    assert 0 < len(data) <= limit and data.endswith(b"\n")
    records = [json.loads(line) for line in data.decode().splitlines()]
    assert [r["n"] for r in records] == list(range(len(records)))


def test_unicode_line_breaks_are_escaped_so_splitlines_finds_whole_records(tmp_path):
    """21.5: U+0085, U+2028 and U+2029 are line breaks to str.splitlines() (not to JSON):
    written raw, one record would read as several broken lines."""
    text = "one\x85two\u2028three\u2029four"
    t = Transcript.create(tmp_path, "r")
    t.write("human", text=text)
    t.write("utterance", text="after")
    t.close()
    raw = t.path.read_text(encoding="utf-8")
    lines = raw.splitlines()
    assert len(lines) == 2
    assert [json.loads(line)["text"] for line in lines] == [text, "after"]
    assert read_transcript(t.path)[0]["text"] == text


# -- listeners and the printer ------------------------------------------------------------------


async def test_a_listener_that_raises_is_logged_once_and_the_room_goes_on(
    catalog, scenarios_dir, tmp_path
):
    def broken(ev: dict) -> None:
        raise RuntimeError("listener bug")

    seen: list[dict] = []
    with capture_logs() as logs:
        result, selector = await _run(
            catalog, scenarios_dir, tmp_path, listeners=[broken, seen.append]
        )
    assert result.reason == "end_conversation" and _released(selector)
    assert len(_events(logs, "transcript_listener_failed")) == 1
    assert seen[-1]["event"] == "room_ended"  # the next listener still saw everything
    assert read_transcript(result.transcript_path)[-1]["event"] == "room_ended"


def _closed_pipe():
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # the reader went away (`| head` exited)
    return os.fdopen(write_fd, "w")


def _discard(out) -> None:
    """Close the pipe's file without a last failing flush of what it still buffers."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, out.fileno())
    os.close(devnull)
    out.close()


def test_a_printer_on_a_closed_pipe_stops_printing_instead_of_raising():
    out = _closed_pipe()
    printer = Printer(out)
    ended = {"event": "room_ended", "reason": "max_turns", "detail": "d", "turns": 2}
    printer(ended)  # BrokenPipeError is not raised
    printer(ended)
    assert printer.closed
    _discard(out)


async def test_a_room_printing_to_a_closed_pipe_ends_normally(catalog, scenarios_dir, tmp_path):
    out = _closed_pipe()
    printer = Printer(out)
    with capture_logs() as logs:
        result, selector = await _run(catalog, scenarios_dir, tmp_path, listeners=[printer])
    assert result.reason == "end_conversation" and _released(selector)
    assert printer.closed and not _events(logs, "transcript_listener_failed")
    _discard(out)


_PRINTER_CHILD = (
    "import sys\n"
    "from workers.simulate import Printer\n"
    "sys.stdin.readline()\n"  # wait until the parent has closed its end of the pipe
    "p = Printer()\n"
    "for n in range(3):\n"
    "    p({'event': 'room_ended', 'reason': 'r', 'detail': 'd', 'turns': n})\n"
    "print('after the room', flush=True)\n"
)


# stdout=False: the parent's end of the child's stdout is closed (the reader is gone) before
# the child is told to print.
@pytest.mark.subprocess(argv=["-c", _PRINTER_CHILD], stdin="go\n", stdout=False)
def test_a_printer_on_stdout_with_the_reader_gone_exits_quietly(program):
    """`simulate | head`: Python would report a BrokenPipeError when it flushes stdout at
    exit (and exit 120); the printer points stdout at /dev/null first."""
    assert program.returncode == 0, program.stderr
    assert "BrokenPipe" not in program.stderr and "Traceback" not in program.stderr
