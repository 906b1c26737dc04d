"""A local OpenAI-compatible server for the tests: the unmodified livekit-plugins-openai code
runs against it on loopback, with no key and no network.

It speaks the real wire protocol (streamed chat completions, `/audio/speech`,
`/audio/transcriptions`, the Realtime WebSocket). What it says is scripted: each persona's
replies come from the offline model of agents/offline.py (its scenario script, in order, tool
calls included), its voice is eSpeak NG and its hearing pocketsphinx, so a conversation through
it is as deterministic as one on the offline model. The persona is the first path segment of
the base URL it is given (`http://127.0.0.1:PORT/tim/v1`). `faults` makes it fail the way a
provider does (HTTP errors, stalls, broken streams, closed sockets).
"""

from tests.openai_server.faults import Fault, Faults
from tests.openai_server.server import OpenAIServer, scripted_brains

__all__ = ["Fault", "Faults", "OpenAIServer", "scripted_brains"]
