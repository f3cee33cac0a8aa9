"""Ctrl-C and SIGTERM during training: finish the step, save a resume checkpoint, then stop.

A signal that lands in the middle of a step would leave the weights updated and the optimizer
not (or the reverse), and one inside an MLflow write leaves a SQLite lock behind. So while
training, the first SIGINT / SIGTERM only sets a flag; the loop checks it between steps, writes
its resume checkpoint and raises what the signal would have raised (KeyboardInterrupt, exit 130;
SystemExit(143)). A second signal stops at once, for a user who will not wait: the last periodic
checkpoint is still there.
"""

from __future__ import annotations

import signal
import sys
import threading
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
