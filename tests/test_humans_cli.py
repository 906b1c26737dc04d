"""`python -m workers.humans list|set`: an operator sees every human agent and changes one's
state while workers run; the state file (no CAPACITY_URL) or Redis (with it) is what every
worker reads. A bad id or state is exit 2 with one line naming the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import PROJECT_ROOT
from tests.humans_catalog import ACME, BRIGHT, CATALOG_PATH, human, humans_catalog
from workers.capacity.redis_store import RedisStore
from workers.humans.__main__ import main
from workers.humans.availability import FileAvailability, RedisAvailability
from workers.humans.claims import HumanClaims

HUMANS = [
    human("alice", skills=["support", "sales"]),
    human("bob", capacity=2, availability="offline"),
    human("ed", tenant=ACME, skills=["dispatcher"]),
]


@pytest.fixture
def catalog_file(tmp_path, monkeypatch) -> Path:
    data = json.loads(CATALOG_PATH.read_text())
    data["human_agents"] = HUMANS
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv("CATALOG_PATH", str(path))
    monkeypatch.setenv("HUMANS_STATE_PATH", str(tmp_path / "state" / "humans.json"))
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_list_shows_every_human_with_the_catalogs_starting_state(catalog_file, capsys):
    status, out, err = run(capsys, "list")
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == [
        "id",
        "tenant",
        "name",
        "skills",
        "capacity",
        "state",
        "busy",
        "seats",
    ]
    assert lines[1].split() == ["alice", BRIGHT, "Alice", "support,sales", "1", "available", "-"]
    assert lines[2].split() == ["bob", BRIGHT, "Bob", "-", "2", "offline", "-"]
    assert "see its /stats" in out  # the seats are in each worker's memory without Redis


def test_set_changes_the_state_every_worker_reads(catalog_file, tmp_path, capsys):
    status, out, _ = run(capsys, "set", "bob", "available")
    assert status == 0
    assert out.strip().startswith("bob: available (was offline), for every worker (file ")
    state_file = tmp_path / "state" / "humans.json"
    saved = json.loads(state_file.read_text())
    assert saved["humans"]["bob"]["state"] == "available"
    # what a worker's desk reads (workers.humans.availability), and the next list
    bob = humans_catalog(HUMANS).human_by_id["bob"]
    assert FileAvailability(state_file).states([bob]) == {"bob": "available"}
    _, out, _ = run(capsys, "list", "--json")
    agents = {a["id"]: a for a in json.loads(out)["agents"]}
    assert agents["bob"]["state"] == "available" and agents["alice"]["state"] == "available"
    assert [p.name for p in state_file.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("set", "zed", "busy"), "no human agent 'zed' in "),
        (("set", "alice", "away"), "unknown state 'away' (use one of: available, busy, offline)"),
    ],
)
def test_a_bad_id_or_state_is_exit_2_with_one_line_naming_the_fix(
    catalog_file, capsys, argv, words
):
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and words in err and err.startswith("workers.humans: ")
    if argv[1] == "zed":
        assert "known: alice, bob, ed; add it to human_agents there" in err


def test_an_unwritable_state_file_is_exit_2_naming_the_setting(
    catalog_file, tmp_path, monkeypatch, capsys
):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be")
    monkeypatch.setenv("HUMANS_STATE_PATH", str(blocked / "humans.json"))
    status, _, err = run(capsys, "set", "alice", "busy")
    assert status == 2 and "HUMANS_STATE_PATH" in err and err.count("\n") == 1


def test_the_command_runs_as_a_module(catalog_file):
    done = subprocess.run(
        [sys.executable, "-m", "workers.humans", "set", "alice", "sleeping"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "workers.humans: unknown state 'sleeping' (use one of: available, busy, offline)"
    ]


@pytest.mark.integration
def test_with_redis_the_state_and_busy_seats_are_every_workers(
    catalog_file, monkeypatch, redis_url, capsys
):
    monkeypatch.setenv("CAPACITY_URL", redis_url)
    catalog = humans_catalog(HUMANS)
    worker_store = RedisStore(redis_url)  # a worker's, holding a call of alice's
    try:
        assert HumanClaims(worker_store).claim("AJ_1", "call-1", catalog.human_by_id["alice"])
        assert run(capsys, "set", "ed", "busy")[0] == 0
        status, out, _ = run(capsys, "list", "--json")
        assert status == 0
        agents = {a["id"]: a for a in json.loads(out)["agents"]}
        assert (agents["alice"]["busy_seats"], agents["alice"]["status"]) == (1, "busy")
        assert agents["ed"]["state"] == "busy"
        # what every worker's desk reads
        book = RedisAvailability(redis_url)
        assert book.states([catalog.human_by_id["ed"]]) == {"ed": "busy"}
        book.close()
    finally:
        worker_store.close()


@pytest.mark.integration
def test_redis_down_is_exit_1_with_one_line(catalog_file, monkeypatch, own_redis_server, capsys):
    monkeypatch.setenv("CAPACITY_URL", own_redis_server.url)
    own_redis_server.stop()
    status, _, err = run(capsys, "set", "alice", "busy")
    assert status == 1 and err.count("\n") == 1 and "unavailable" in err
