"""The briefing a person hears before the caller does: built from the room's transcript
records (workers/humans/briefing.py), never from what a model remembers."""

from __future__ import annotations

from workers.humans.briefing import CLOSING, MAX_BRIEFING_CHARS, RoomNotes, briefing_text


def brief(notes: RoomNotes, **context: object) -> str:
    return briefing_text(
        human_name="Nina Park",
        persona_name="Alex",
        company="BrightCart",
        context=context,
        reason="the caller asked for a person",
        summary="Order 88123 arrived broken; a replacement is wanted.",
        notes=notes,
    )


def test_the_briefing_says_who_calls_what_they_need_and_what_was_done():
    notes = RoomNotes()
    records: list[dict[str, object]] = [
        {"event": "call", "direction": "inbound", "phone_number": "+15550003101"},
        {"event": "human", "identity": "sip_+15550003101", "text": "My blender broke."},
        {"event": "tool_call", "tool": "open_ticket", "output": '{"ticket_id": "TKT-0001"}'},
        {"event": "tool_call", "tool": "lookup_ticket", "output": "no such", "is_error": True},
        {"event": "tool_call", "tool": "hand_over", "output": "ok"},
    ]
    for record in records:
        notes(record)
    text = brief(notes, caller={"name": "Jamie Rivera", "account": "BC-55102"}, contact="c-7")
    assert text.startswith("Nina Park, a call from Alex at BrightCart.")
    assert "Jamie Rivera, BC-55102, contact c-7, on a number ending 3 1 0 1." in text
    assert "the caller asked for a person" in text and "Order 88123 arrived broken" in text
    # what was done: the tools that ran, not the failed one nor the floor's own
    assert "open ticket" in text and "TKT-0001" in text
    assert "lookup" not in text and "hand over" not in text


def test_a_caller_with_nothing_known_and_nothing_done_is_said_so_and_the_length_is_bounded():
    text = brief(RoomNotes())
    assert "a caller we have no name for" in text and "Nothing was done for them yet." in text
    notes = RoomNotes()
    for i in range(50):
        notes({"event": "tool_call", "tool": "open_ticket", "output": "word " * 100 + str(i)})
    text = brief(notes)
    # about 20 s of speech while the caller is on hold, always ending with the connection
    assert len(text) <= MAX_BRIEFING_CHARS <= 400
    assert text.endswith(" " + CLOSING) and "Order 88123" in text
    assert "word word..." in text and "wor..." not in text  # cut between words


def test_a_long_summary_is_cut_but_the_person_still_hears_they_are_being_connected():
    text = briefing_text(
        human_name="Nina Park",
        persona_name="Alex",
        company="BrightCart",
        context={},
        reason="the caller asked for a person",
        summary="It broke. " * 80,
        notes=RoomNotes(),
    )
    assert len(text) <= MAX_BRIEFING_CHARS and text.endswith("... " + CLOSING)
