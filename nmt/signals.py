"""How the project handles Ctrl-C and SIGTERM: never in the middle of a step or of a store write.

- :class:`GracefulStop`: during training, the first SIGINT / SIGTERM only sets a flag; the loop
  checks it between steps, writes its resume checkpoint and raises what the signal would have
  raised (KeyboardInterrupt, exit 130; SystemExit(143)). A signal in the middle of a step would
  leave the weights updated and the optimizer not (or the reverse). A second signal stops at once,
  for a user who will not wait: the last periodic checkpoint is still there.
- :func:`signals_held`: an MLflow store write holds both back and delivers them after it; a
  KeyboardInterrupt inside a SQLite write can leave its lock behind.
- :func:`raise_on_sigterm`: outside those, SIGTERM unwinds like Ctrl-C (SystemExit(143)), so the
  MLflow run is marked KILLED, not left RUNNING.

Only the main thread receives signals; elsewhere each of these does nothing.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class GracefulStop:
    """Context manager: defer SIGINT / SIGTERM until the loop sees :attr:`requested` (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # the second one: stop now
            self.raise_now(signum)
        self.signum = signum
        name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        print(f"\n{name}: stopping after this step (a resume checkpoint is written first; "
              f"{name} again stops at once)", file=sys.stderr, flush=True)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @staticmethod
    def raise_now(signum: int) -> None:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the enclosed store write is done, then deliver them.

    A KeyboardInterrupt raised inside a SQLite write can leave that transaction's lock behind, and
    the next write (ending the run as KILLED) then fails with "database is locked", leaving the run
    RUNNING. Held here, the signal lands between writes. Only the main thread receives signals.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(held):
            signal.raise_signal(sig)  # handled as it would have been: KeyboardInterrupt, SystemExit


def raise_on_sigterm() -> None:
    """Turn SIGTERM (a scheduler stopping the job, `kill`) into SystemExit(143), like Ctrl-C's 130.

    The exception unwinds through the loop, so the MLflow run is marked KILLED, not left RUNNING.
    (Between steps, :class:`GracefulStop` takes over and saves a resume
    checkpoint first.)
    """
    def handler(signum, frame):
        raise SystemExit(128 + signal.SIGTERM)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
