"""The web page and rooms API: a person creates a room from a scenario and talks to its
personas from a browser, with nothing but this process and a LiveKit server.

`python -m workers.web` serves, on WEB_HOST:WEB_PORT (127.0.0.1:8090 by default), the page at
`/` (built from a pinned `livekit-client` into `static/` by `make web`; the built files ship, so
no node is needed to serve it) and the rooms API under `/api/v1/` (`app`): create a room (the
scenario checked exactly as `workers.dispatch` checks it, the room and the explicit dispatch
made the same way), see who is in it, end it. Errors are JSON (`problems`) with the CLIs' problem
codes and JSON paths; LiveKit calls are in `rooms`. `python -m workers.web room SCENARIO` makes a
fresh room and prints the page's link for it.
"""
