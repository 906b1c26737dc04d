"""The plan reaches the job privately: a file only this user can read, taken once."""

from __future__ import annotations

import stat

import pytest

from workers.job.plan_handoff import PlanHandoff, public_metadata


def test_a_plan_is_private_and_taken_once(tmp_path):
    handoff = PlanHandoff(tmp_path / "plans")
    handoff.put("AJ_1", '{"v": 1}')
    path = tmp_path / "plans" / "AJ_1.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "plans").stat().st_mode) == 0o700
    assert handoff.take("AJ_1") == '{"v": 1}'
    assert handoff.take("AJ_1") is None and not path.exists()


def test_discard_and_unknown_jobs(tmp_path):
    handoff = PlanHandoff(tmp_path)
    handoff.put("AJ_2", "{}")
    handoff.discard("AJ_2")
    assert handoff.take("AJ_2") is None
    assert handoff.take("AJ_never") is None


def test_a_job_id_cannot_leave_the_directory(tmp_path):
    with pytest.raises(ValueError, match="cannot name a plan file"):
        PlanHandoff(tmp_path).put("../escape", "{}")
    assert PlanHandoff(tmp_path).take("../escape") is None


def test_the_public_metadata_names_only_the_opener():
    assert public_metadata("tim", "dispatcher", "r1") == (
        '{"persona": "tim", "role": "dispatcher", "room": "r1"}'
    )
