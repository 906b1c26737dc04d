"""A local OpenAI-compatible server: the unmodified livekit-plugins-openai code runs against it
on loopback, with no paid key and no network. The tests and benchmarks start it in-process;
`python -m workers.openai_server --port N` runs it for offline development.

It speaks the real wire protocol (streamed chat completions, `/audio/speech`,
`/audio/transcriptions`, the Realtime WebSocket). What it says is scripted: each persona's
replies come from the offline model of agents/offline.py (its scenario script, in order, tool
calls included), its voice is eSpeak NG and its hearing pocketsphinx, so a conversation through
it is as deterministic as one on the offline model. The persona is the first path segment of
the base URL it is given (`http://127.0.0.1:PORT/tim/v1`). `faults` makes it fail the way a
provider does (HTTP errors, stalls, broken streams, closed sockets).
"""

from workers.openai_server.faults import Fault, Faults
from workers.openai_server.server import OpenAIServer, scripted_brains

__all__ = ["Fault", "Faults", "OpenAIServer", "scripted_brains"]
