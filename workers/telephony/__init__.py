"""Telephony on LiveKit's own SIP service (livekit-sip): callers phone in, personas phone out.

The catalog's `telephony` section says which phone numbers reach which scenario and which SIP
trunk each tenant calls out on. `python -m workers.telephony sync|list|prune` makes the
server's inbound trunks, dispatch rules (one room per call, dispatched to this worker's agent
name with the scenario and `inbound: true`) and outbound trunks match it, marking what it made
so that `prune` removes only those. Inside a job, the caller is a SIP participant: the room
waits for the call to be answered before the opener speaks, turns key presses (DTMF) into the
scenario's menu choices, and records the call in the transcript.

Modules, one job each: `resources` (what the catalog asks the server for), `provision` (make
the server match, idempotently), `cli` (the command line), `call` (one phone call inside a
room's job), `dial` (a room phoning out), `sipp` (SIPp scenario text for phones on a line).
"""
