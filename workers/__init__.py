"""The worker and the command-line tools, arranged by where the code runs.

The entries are `python -m workers.multi` (the worker), `workers.simulate`, `workers.plan` and
`workers.dispatch`; `tokens` (identities and access tokens) and `cli_input` serve them all. The
code behind them lives in one subpackage per place it runs: `main/` (the worker's main process),
`job/` (one job's process), `room/` (one room on a stage, the same code for LiveKit and the
local stage) and `capacity/` (who may join: the selector, leases and the capacity stores).
`workers.selector` re-exports the selector's public names, a fixed interface.
"""

import os

# Read by onnxruntime (under silero's VAD) when it is first imported, which the entries below
# do: otherwise it reports usage to Microsoft's event collector (mobile.events.data.microsoft
# .com), and a worker reaches LIVEKIT_URL and its model endpoints only. Job processes inherit
# it. An operator's own value is kept.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
