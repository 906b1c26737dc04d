"""One job's process: a room LiveKit handed to this worker, from plan to exit.

`runner` takes the plan the main process chose (`plan`, handed over privately by
`plan_handoff`), joins the room and runs it on the LiveKit stage; `internals` reads the few
things livekit knows about a job but does not expose, each in one tested function;
`gc_policy` keeps garbage-collection pauses short in a process that runs one room.
"""
