"""A process that must not outlive the one that started it (the fit workers and their fork server)."""
from __future__ import annotations

import contextlib
import signal
import sys

PR_SET_PDEATHSIG = 1


def end_with_parent() -> None:
    """On Linux, the kernel sends this process SIGTERM when the process that started it dies, even by kill -9
    (which gives the parent no chance to end its pool): no orphaned worker fits on for nobody."""
    import ctypes

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
