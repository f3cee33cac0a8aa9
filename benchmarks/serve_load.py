"""The served model under load: `mlflow models serve` of the exported model, 8 concurrent clients.

    .venv/bin/python -m benchmarks.serve_load [--seconds 60] [--clients 8] [--max-batch N] [--model models/export]

The export directory is saved as the pyfunc the export stage registers (``nmt.tracking.registry.
save_pyfunc``, in a temporary directory: no MLflow store is read or written), served by
``mlflow models serve --env-manager local`` on a free 127.0.0.1 port (as ``make serve`` serves
the champion), and, once ``/ping`` answers, sent requests for a bounded time by concurrent clients:
each request one description of the test split, ``{"inputs": [{"nl": ...}]}``, decoded with the
model's recorded settings. A request counts as an error unless it gets a 200 with one string.
The server is stopped at the end whatever happened.

- ``serve_requests_per_s``: requests answered / wall time of the load;
- ``serve_p50_ms``, ``serve_p99_ms``: latency percentiles of the answered requests, ms;
- ``serve_errors``: requests that failed (target 0).

**Before and after batching.** The scoring server runs each request's ``predict`` in its own
thread; the served model gathers the requests that wait while a decode runs into the next one
(:mod:`nmt.decoding.batcher`, up to ``export.serve_max_batch`` descriptions, waiting at most
``export.serve_max_wait_ms`` for them). The load runs twice, on the same pyfunc saved with
``max_batch`` 1 (each request decoded apart: ``serve_unbatched``, the same four figures) and with
params.yaml's batching (the keys above, what the registered model does); ``serve_batching_speedup``
is the ratio of their requests/s, and
``serve_same_output`` the share of descriptions answered in both runs whose answers are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.int8 import DATA, MODEL, missing
from nmt.data.pairs import read_jsonl
from nmt.io import read_json
from nmt.params import load_params
from nmt.tracking.store import wait_until_answers

START_TIMEOUT_S = 180  # loading torch, mlflow and the model on a busy 2-core machine
REQUEST_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(pyfunc_dir: Path) -> Iterator[str]:
    """``mlflow models serve -m pyfunc_dir`` on a free loopback port; its URL once /ping answers.
    Stopped (its whole process group) on the way out, also when the body raised."""
    port, bin_dir = free_port(), Path(sys.executable).parent
    cmd = [str(bin_dir / "mlflow"), "models", "serve", "-m", str(pyfunc_dir),
           "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}  # mlflow execs `uvicorn`
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            wait_until_up(url, proc, log)
            yield url
        finally:
            stop(proc)


def wait_until_up(url: str, proc: subprocess.Popen, log) -> None:
    if not wait_until_answers(f"{url}/ping", proc, START_TIMEOUT_S):
        log.seek(0)
        raise RuntimeError(f"the model server did not come up on {url} within {START_TIMEOUT_S} s:\n"
                           f"{log.read().decode(errors='replace')[-3000:]}")


def stop(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM to the server's process group (mlflow, and uvicorn under it), SIGKILL to whatever is
    left after ``grace_s``; returns once none of them is left (so the port is free again)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while group_alive(proc):
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.1)


def group_alive(proc: subprocess.Popen) -> bool:
    proc.poll()  # reap the leader, or it stays a zombie in the group
    try:
        os.killpg(proc.pid, 0)
        return True
    except ProcessLookupError:
        return False


def translate_request(url: str, text: str) -> str:
    """One request for one description; its translation, or an exception saying what came back."""
    body = json.dumps({"inputs": [{"nl": text}]}).encode()
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
        answer = json.loads(response.read())
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not (isinstance(predictions, list) and len(predictions) == 1 and isinstance(predictions[0], str)):
        raise ValueError(f"not one translation: {str(answer)[:200]}")
    return predictions[0]


@dataclass
class Load:
    """What the clients saw: each answered request's latency, and the failures."""

    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)  # description -> the translation it got
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, seconds: float | None, error: str | None = None, text: str = "", answer: str = "") -> None:
        with self.lock:
            if error is None:
                self.latencies_s.append(seconds)
                self.answers[text] = answer
            else:
                self.errors.append(error)


def client(url: str, texts: list[str], first: int, step: int, deadline: float, load: Load) -> None:
    """Send requests one after another until ``deadline``: texts first, first + step, ... (wrapping)."""
    i = first
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            text = texts[i % len(texts)]
            answer = translate_request(url, text)
            load.record(time.perf_counter() - t0, text=text, answer=answer)
        except (OSError, ValueError) as e:  # refused, reset, timed out, HTTP error, a bad answer
            load.record(None, f"{type(e).__name__}: {e}"[:300])
        i += step


def percentile_ms(latencies_s: list[float], q: int) -> float | None:
    if len(latencies_s) < 2:
        return round(latencies_s[0] * 1e3, 1) if latencies_s else None
    return round(statistics.quantiles(latencies_s, n=100, method="inclusive")[q - 1] * 1e3, 1)


def run_load(url: str, texts: list[str], clients: int, seconds: float) -> dict:
    """``clients`` threads sending requests for ``seconds``; requests/s, latency percentiles, errors,
    and the answer each description got (``answers``)."""
    translate_request(url, texts[0])  # warm-up: the first request pays for lazy initialisation
    load = Load()
    started = time.perf_counter()
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=client, args=(url, texts, k, clients, deadline, load)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started  # the requests in flight at the deadline finish and count
    return {"serve_requests_per_s": round(len(load.latencies_s) / wall, 3),
            "serve_p50_ms": percentile_ms(load.latencies_s, 50), "serve_p99_ms": percentile_ms(load.latencies_s, 99),
            "serve_errors": len(load.errors),
            "serve_load": {"clients": clients, "seconds": round(wall, 1), "requests": len(load.latencies_s),
                           "first_errors": load.errors[:3]},
            "answers": load.answers}


def served_pyfunc(model_dir: Path, tmp: Path, max_batch: int, max_wait_ms: float = 0.0) -> Path:
    """``model_dir`` saved as the registered pyfunc under ``tmp``, its params example the model's
    decoding, decoding up to ``max_batch`` concurrent descriptions together (waiting ``max_wait_ms``)."""
    from dataclasses import replace

    from nmt.decoding.translator import BUILTIN_SETTINGS
    from nmt.tracking.registry import save_pyfunc, serving_config

    recorded = read_json(model_dir / "config.json").get("decoding") or {}
    return save_pyfunc(model_dir, tmp / f"pyfunc-{max_batch}", replace(BUILTIN_SETTINGS, **recorded).recorded(),
                       serving_config(max_batch, max_wait_ms))


def serve(model_dir: Path, texts: list[str], max_batch: int, max_wait_ms: float, clients: int, seconds: float) -> dict:
    """The load on the model served with this batching; the server is stopped before this returns."""
    with tempfile.TemporaryDirectory(prefix="nmt-serve-") as tmp, \
            mlflow_server(served_pyfunc(model_dir, Path(tmp), max_batch, max_wait_ms)) as url:
        return run_load(url, texts, clients, seconds)


def same_output(a: dict[str, str], b: dict[str, str]) -> float | None:
    """Share of the descriptions answered in both runs whose answers are identical."""
    both = a.keys() & b.keys()
    return round(sum(a[t] == b[t] for t in both) / len(both), 4) if both else None


def serve_load(model_dir: Path = MODEL, data: Path = DATA, quick: bool = False, seconds: float | None = None,
               clients: int = 8, max_batch: int | None = None, max_wait_ms: float | None = None) -> dict:
    """The exported model served by MLflow under ``clients`` concurrent clients for ``seconds``
    (default 60, ``quick`` 5), each request decoded apart, then batched up to ``max_batch``
    waiting ``max_wait_ms`` (defaults: params.yaml's ``export.serve_max_batch`` / ``serve_max_wait_ms``)."""
    reason = missing(model_dir, data)
    if reason is not None:
        return {"serve_load": reason}
    export = load_params().export
    max_batch = export.serve_max_batch if max_batch is None else max_batch
    max_wait_ms = export.serve_max_wait_ms if max_wait_ms is None else max_wait_ms
    texts = [r["nl"] for r in read_jsonl(data)]
    seconds = seconds if seconds is not None else 5 if quick else 60
    before = serve(model_dir, texts, 1, 0.0, clients, seconds)
    after = serve(model_dir, texts, max_batch, max_wait_ms, clients, seconds)
    unbatched = {k: v for k, v in before.items() if k != "answers"}
    return ({k: v for k, v in after.items() if k != "answers"}
            | {"serve_max_batch": max_batch, "serve_max_wait_ms": max_wait_ms, "serve_unbatched": unbatched,
               "serve_batching_speedup": round(after["serve_requests_per_s"] / before["serve_requests_per_s"], 2)
               if before["serve_requests_per_s"] else None,
               "serve_same_output": same_output(before["answers"], after["answers"])})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 seconds of load instead of 60")
    ap.add_argument("--seconds", type=float, default=None, help="how long the clients send requests")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients")
    ap.add_argument("--model", type=Path, default=MODEL, help="exported model directory")
    ap.add_argument("--data", type=Path, default=DATA, help="JSON lines whose 'nl' are the requests")
    ap.add_argument("--max-batch", type=int, default=None,
                    help="descriptions decoded together in the batched run "
                         "(default: params.yaml export.serve_max_batch)")
    ap.add_argument("--max-wait-ms", type=float, default=None,
                    help="how long a batch waits for company (default: params.yaml export.serve_max_wait_ms)")
    args = ap.parse_args()
    if args.clients < 1 or (args.seconds is not None and args.seconds <= 0) or (args.max_batch or 1) < 1 \
            or (args.max_wait_ms or 0) < 0:
        ap.error("--clients and --max-batch must be >= 1, --seconds > 0 and --max-wait-ms >= 0")
    print(json.dumps(serve_load(args.model, args.data, args.quick, args.seconds, args.clients, args.max_batch,
                                args.max_wait_ms), indent=2))


if __name__ == "__main__":
    main()
