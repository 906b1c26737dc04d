"""The job process's garbage-collection policy: after each turn, what is alive is frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from workers.job.gc_policy import freeze_after_each_turn, room_listeners


@pytest.fixture
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # this test process runs many rooms: give the collector its objects back


def test_a_turn_freezes_what_is_alive_and_other_events_do_not(thawed: None) -> None:
    before = gc.get_freeze_count()
    freeze_after_each_turn({"event": "floor", "to": "chris"})
    assert gc.get_freeze_count() == before
    alive = [[i] for i in range(1000)]  # tracked by the collector
    freeze_after_each_turn({"event": "utterance", "persona": "tim", "text": "On my way."})
    assert gc.get_freeze_count() >= before + len(alive)
    assert gc.get_count()[0] < 10  # the young generation was collected first


def test_a_process_that_runs_many_rooms_keeps_its_collector():
    """This test process is no job process: rooms share it, so nothing is frozen per turn."""
    assert room_listeners() == []
