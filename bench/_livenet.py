"""The live benchmarks' first step (a private module, light: imported before livekit).

A bench that needs a real livekit-server runs inside the live suite's private network
namespace; run any other way, it re-runs itself there through `tests/live/livenet.sh run`
(root and `make livekit` needed), so `make bench` can run it like any other script.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_in_livenet(module: str) -> None:
    """Call at import, under `if __name__ == "__main__"`, before any heavy import."""
    # the dev server's key `secret` is short by design: PyJWT's warning would only be noise
    warnings.filterwarnings("ignore", message="The HMAC key is")
    if os.environ.get("LIVE_NETNS") != "1":
        livenet = ROOT / "tests" / "live" / "livenet.sh"
        os.execv(str(livenet), [str(livenet), "run", sys.executable, "-m", module, *sys.argv[1:]])
