"""One room from its first line to its end, the same code on every stage.

`runner` builds the personas' agents and runs the floor on a stage until a stop rule fires,
ending cleanly on every path; `floor` passes turns and relays lines, with `turns` (who speaks
next, pure functions) and `human_line` (what a human said, normalised); `seat` is a persona's
place in the room; `transcript` writes the room's JSON-lines record and `conversation_audio`
speaks it into a WAV; `stage/` is where the sessions run (LiveKit or local).
"""
