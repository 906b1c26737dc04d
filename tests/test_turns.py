"""The turn policies and addressing, directly: who speaks next, who was named."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from workers.room.turns import HUMANS, addressed, answers_human, next_speaker, repeat_key

NAMES = {"tim": "Tim", "chris": "Chris", "alex": "Alex", "sam": "Sam"}


def after(
    policy: str,
    speaker: str,
    text: str = "",
    *,
    active: Sequence[str] = tuple(NAMES),
    answering: str | None = None,
    humans_present: bool = False,
) -> str:
    return next_speaker(
        policy,
        speaker=speaker,
        text=text,
        active=active,
        names=NAMES,
        lead="tim",
        answering=answering,
        humans_present=humans_present,
    )


@pytest.mark.parametrize("policy", ["alternate", "round_robin"])
def test_rotation_goes_round_the_active_personas_in_seat_order(policy):
    assert [after(policy, p) for p in NAMES] == ["chris", "alex", "sam", "tim"]
    # a speaker who stands by now (not active) hands to the first active one
    assert after(policy, "alex", active=["tim", "chris"]) == "tim"


def test_a_persona_alone_on_the_floor_turns_to_the_humans():
    for policy in ("alternate", "round_robin", "moderated", "addressed"):
        assert after(policy, "tim", active=["tim"]) == HUMANS


def test_moderated_everyone_answers_to_the_lead_who_turns_to_the_humans():
    assert after("moderated", "chris") == "tim"
    assert after("moderated", "sam", humans_present=True) == "tim"
    assert after("moderated", "tim", humans_present=True) == HUMANS
    assert after("moderated", "tim", humans_present=False) == "chris"


def test_addressed_passes_the_floor_to_whoever_is_called_by_name():
    assert after("addressed", "tim", "Sam, can you take this one?") == "sam"
    assert after("addressed", "tim", "Will do, Alex.") == "alex"
    assert after("addressed", "tim", "Thanks Chris, that helps.") == "chris"
    # the first one called wins
    assert after("addressed", "tim", "Alex, then Sam: who is free?") == "alex"


def test_addressed_a_mere_mention_does_not_pass_the_floor():
    text = "Alex tells me the load is late."
    assert after("addressed", "tim", text, answering="chris") == "chris"
    assert after("addressed", "tim", text, humans_present=True) == HUMANS


def test_addressed_nobody_named_goes_to_the_humans_then_the_answered_then_the_lead():
    assert after("addressed", "chris", "On my way.", humans_present=True) == HUMANS
    assert after("addressed", "chris", "On my way.", answering="sam") == "sam"
    assert after("addressed", "chris", "On my way.") == "tim"  # the lead
    # the lead speaking, nobody answered: the first other active persona
    assert after("addressed", "tim", "Anyone?") == "chris"
    # whom the speaker answered stands by now: the lead takes it
    assert after("addressed", "chris", "Done.", answering="sam", active=["tim", "chris"]) == "tim"


def test_a_speaker_cannot_address_itself():
    assert after("addressed", "sam", "Sam, that's me.", answering="alex") == "alex"


def test_an_unknown_policy_is_an_error_not_a_silent_default():
    with pytest.raises(ValueError, match="unknown turn policy 'freestyle'"):
        after("freestyle", "tim")


def test_a_human_naming_a_persona_anywhere_is_answered_by_it():
    assert answers_human("is alex around?", NAMES, holder="tim", lead="tim") == "alex"
    assert answers_human("Hello?", NAMES, holder="chris", lead="tim") == "chris"
    assert answers_human("Hello?", NAMES, holder=None, lead="tim") == "tim"
    # the holder stands by (not among the active names): the lead answers
    assert answers_human("Hello?", {"tim": "Tim"}, holder="chris", lead="tim") == "tim"


def test_names_match_whole_words_only():
    assert addressed("Timothy called", NAMES) is None
    assert addressed("Samantha, hi", NAMES, vocative_only=True) is None
    assert addressed("ask TIM", NAMES) == "tim"


def test_the_loop_guard_compares_words_not_punctuation_or_case():
    assert repeat_key("On my way!") == repeat_key("on my   WAY.")
    assert repeat_key("On my way") != repeat_key("On our way")
    assert repeat_key("...") == ""
