"""The worker's main process: what LiveKit talks to before any job runs.

`admission` answers each offered room (parse the metadata, cast with the one selector, accept
as the opener or reject), `worker_load` keeps the leases per job and the load reported to
LiveKit, `stats_server` serves `/stats` and `/healthz`, `metrics` the Prometheus gauges,
`cpu_load` samples the machine's CPU and `livekit_check` refuses unusable credentials before
the worker registers. The worker's main process also answers its jobs about human agents
(workers.humans.service: who to ring, the claim of a call, the seat held under the job).
Nothing here runs a room.
"""
