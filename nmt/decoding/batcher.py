"""Micro-batching: translate calls from concurrent threads decoded together, in one batch.

A model server answers each request in a thread of its own (MLflow's scoring server runs the
pyfunc's ``predict`` through ``asyncio.to_thread``). Decoded apart, eight concurrent one-line
requests are eight small beam searches contending for the same cores, each paying the per-step
costs (Python, dispatch, top-k, cache reordering) for one source. Decoded as one batch, those costs
are paid once and the matrix multiplies are eight times wider. ``benchmarks.serve_load`` measures
the served model both ways.

The policy: one worker thread decodes; a request that arrives while a decode runs waits in the
queue, and the next decode takes every waiting request whose settings equal the oldest one's, up
to ``max_batch`` descriptions in all. Before it starts, the worker waits at most ``max_wait_s``
for more (less once ``max_batch`` are queued). Why wait at all: without it, closed-loop clients
split into groups that alternate (measured with 8 clients: batches of 7 and 1, each paying a
decode's fixed costs), since the clients answered by one decode send their next requests just
after the next decode has started. A few milliseconds let them join, against decodes of hundreds.
Requests keep their order, and each gets exactly its own outputs back.

A decode that raises is retried one request at a time, so an error reaches only the request that
caused it, never the others that shared its batch.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Output = TypeVar("Output")
Decode = Callable[[list[str], Hashable], list[Output]]


@dataclass
class _Request(Generic[Output]):
    texts: list[str]
    settings: Hashable
    done: threading.Event = field(default_factory=threading.Event)
    outputs: list[Output] | None = None
    error: BaseException | None = None


class MicroBatcher(Generic[Output]):
    """Gathers concurrent ``translate(texts, settings)`` calls into batched calls of ``decode``.

    ``decode(texts, settings)`` must return one output per text, each independent of the other
    texts in the call (as :meth:`nmt.decoding.translator.Translator.translate` does).
    ``max_batch=1`` turns batching off: every call decodes in its caller's thread, as before.
    ``max_wait_s``: how long a batch waits for company before its decode starts (see the module docstring).
    """

    def __init__(self, decode: Decode, max_batch: int, max_wait_s: float = 0.0):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 (1 = no batching), got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.decode, self.max_batch, self.max_wait_s = decode, max_batch, max_wait_s
        self._pending: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False
        self.decodes = 0  # batched calls of ``decode`` so far (retries after an error not counted)
        self.requests = 0  # requests answered by them

    def translate(self, texts: list[str], settings: Hashable) -> list[Output]:
        """``decode(texts, settings)``, possibly in one call with other threads' texts."""
        if self.max_batch == 1:
            return self.decode(texts, settings)
        request = _Request(list(texts), settings)
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._start_worker()
            self._pending.append(request)
            self._cond.notify()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.outputs

    def close(self) -> None:
        """Let the worker finish the queued requests, then stop it."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._worker is not None:
            self._worker.join()

    def _start_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._serve, name="nmt-micro-batcher", daemon=True)
            self._worker.start()

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:  # closed and drained
                    return
                self._wait_for_company()
                batch = self._take_batch()
            self._run(batch)

    def _wait_for_company(self) -> None:
        """Up to ``max_wait_s`` for ``max_batch`` descriptions to be queued. Called with the lock held."""
        deadline = time.monotonic() + self.max_wait_s
        while not self._closed and sum(len(r.texts) for r in self._pending) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _take_batch(self) -> list[_Request]:
        """The oldest request and every later one with its settings that still fits; the rest
        stay queued in their order. Called with the lock held."""
        first = self._pending.popleft()
        batch, size, others = [first], len(first.texts), deque()
        while self._pending:
            request = self._pending.popleft()
            if request.settings == first.settings and size + len(request.texts) <= self.max_batch:
                batch.append(request)
                size += len(request.texts)
            else:
                others.append(request)
        self._pending = others
        return batch

    def _run(self, batch: list[_Request]) -> None:
        texts = [t for request in batch for t in request.texts]
        try:
            outputs = self.decode(texts, batch[0].settings)
            if len(outputs) != len(texts):
                raise RuntimeError(f"decode returned {len(outputs)} outputs for {len(texts)} texts")
        except BaseException as e:  # noqa: BLE001 - handed to the caller(s), never lost in this thread
            if len(batch) == 1:
                batch[0].error = e
                batch[0].done.set()
            else:  # whose input failed? each alone, so the error reaches that request only
                for request in batch:
                    self._run([request])
            return
        self.decodes += 1
        self.requests += len(batch)
        start = 0
        for request in batch:
            request.outputs = outputs[start:start + len(request.texts)]
            start += len(request.texts)
            request.done.set()
