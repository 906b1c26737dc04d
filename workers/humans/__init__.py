"""Human agents at run time: who is available (an operator's CLI, `python -m workers.humans`),
who may be rung for a transfer, the atomic claim of a call by the first person to answer (in
the capacity store, so exactly one winner across workers), and the ring legs and warm
hand-over a persona's `transfer_to_human` runs.

The desk (what a transfer asks, `desk.HumanDesk`): `availability` (states in Redis or a file),
`policy` (who to ring, pure), `claims` (the call and the human's seat, one store claim), `core`
(the three over one store), `service` (the desk in the worker's main process), `client`
(`desk_for_job`, the job's side) and `local` (`LocalDesk`, the same in-process)."""
