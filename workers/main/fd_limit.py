"""The worker's file-descriptor limit: raised to its hard limit when the worker starts.

Every room costs the main process descriptors (a job process's pipes, the server's signalling,
HTTP clients), and so does every connection to its ports. Linux starts a process at a soft
limit of 1024 whatever the hard limit allows; the worker takes all it is allowed, once, before
livekit starts its forkserver (whose job processes inherit it).
"""

from __future__ import annotations

import resource

# Where the hard limit is unlimited, what the soft limit becomes: Linux's own ceiling
# (fs.nr_open) is 1,048,576 by default, and select()-free asyncio needs no less.
UNLIMITED_CAP = 1_048_576


def fd_limit() -> int:
    """The soft limit now."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_fd_limit() -> int:
    """Raise the soft limit to the hard one; returns the soft limit in force afterwards (the
    old one if the system refuses)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # e.g. above fs.nr_open: keep what we have; the bounds still hold
    return fd_limit()
