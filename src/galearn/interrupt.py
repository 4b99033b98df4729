"""Graceful stops of long training loops on SIGINT / SIGTERM.

A loop runs inside :func:`stop_requests`; the first Ctrl-C (or SIGTERM) only
sets a flag, which the loop reads between steps (``guard.requested``), so it
can save a checkpoint at the last finished step and raise
:class:`~galearn.errors.Interrupted` with the command that resumes. A second
Ctrl-C interrupts at once (plain ``KeyboardInterrupt``). Outside the main
thread (or on a platform without these signals) nothing is installed and the
loop runs as before.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

__all__ = ["StopRequest", "stop_requests"]


class StopRequest:
    """Set by the signal handler: ``requested`` is True once a stop was asked for; ``signum`` says which."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_requests(what: str = "training") -> Iterator[StopRequest]:
    """Catch SIGINT and SIGTERM as a :class:`StopRequest` while the block runs; restore the handlers after."""
    guard = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    names = [n for n in ("SIGINT", "SIGTERM") if hasattr(signal, n)]
    previous = {n: signal.getsignal(getattr(signal, n)) for n in names}

    def handler(signum, frame):
        if guard.requested:  # second signal: stop now
            raise KeyboardInterrupt
        guard.signum = signum
        print(f"\ngalearn: {signal.Signals(signum).name} received: finishing the current {what} step and saving "
              "a checkpoint (press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    for n in names:
        signal.signal(getattr(signal, n), handler)
    try:
        yield guard
    finally:
        for n, h in previous.items():
            signal.signal(getattr(signal, n), h)
