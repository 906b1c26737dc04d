"""The worker and the command-line tools, arranged by where the code runs.

The entries are `python -m workers.multi` (the worker), `workers.simulate`, `workers.plan` and
`workers.dispatch`; `tokens` (identities and access tokens) and `cli_input` serve them all. The
code behind them lives in one subpackage per place it runs: `main/` (the worker's main process),
`job/` (one job's process), `room/` (one room on a stage, the same code for LiveKit and the
local stage) and `capacity/` (who may join: the selector, leases and the capacity stores).
`workers.selector` re-exports the selector's public names, a fixed interface.
"""
