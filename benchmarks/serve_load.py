"""The served model under load: `mlflow models serve` of the exported model, 8 concurrent clients.

    .venv/bin/python -m benchmarks.serve_load [--seconds 60] [--clients 8] [--model models/export]

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

Why no batching of concurrent requests here: ``serve_batching`` times the same eight
descriptions decoded one at a time and as one batch, in process: what a server that gathered
concurrent requests into one decode could gain over the scoring server, which decodes each
request apart (each in its own thread).
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

from benchmarks.common import interleaved_medians
from benchmarks.int8 import DATA, MODEL, missing
from nmt.data.pairs import read_jsonl
from nmt.io import read_json

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
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"the model server did not come up on {url} within {START_TIMEOUT_S} s:\n"
                                   f"{log.read().decode(errors='replace')[-3000:]}") from None
            time.sleep(0.5)


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
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, seconds: float | None, error: str | None = None) -> None:
        with self.lock:
            if error is None:
                self.latencies_s.append(seconds)
            else:
                self.errors.append(error)


def client(url: str, texts: list[str], first: int, step: int, deadline: float, load: Load) -> None:
    """Send requests one after another until ``deadline``: texts first, first + step, ... (wrapping)."""
    i = first
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            translate_request(url, texts[i % len(texts)])
            load.record(time.perf_counter() - t0)
        except (OSError, ValueError) as e:  # refused, reset, timed out, HTTP error, a bad answer
            load.record(None, f"{type(e).__name__}: {e}"[:300])
        i += step


def percentile_ms(latencies_s: list[float], q: int) -> float | None:
    if len(latencies_s) < 2:
        return round(latencies_s[0] * 1e3, 1) if latencies_s else None
    return round(statistics.quantiles(latencies_s, n=100, method="inclusive")[q - 1] * 1e3, 1)


def run_load(url: str, texts: list[str], clients: int, seconds: float) -> dict:
    """``clients`` threads sending requests for ``seconds``; requests/s, latency percentiles, errors."""
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
                           "first_errors": load.errors[:3]}}


def served_pyfunc(model_dir: Path, tmp: Path) -> Path:
    """``model_dir`` saved as the registered pyfunc under ``tmp``, its params example the model's decoding."""
    from dataclasses import replace

    from nmt.decoding.translator import BUILTIN_SETTINGS
    from nmt.tracking.registry import save_pyfunc

    recorded = read_json(model_dir / "config.json").get("decoding") or {}
    return save_pyfunc(model_dir, tmp / "pyfunc", replace(BUILTIN_SETTINGS, **recorded).recorded())


def batching_gain(model_dir: Path, texts: list[str], batch: int, repeats: int) -> dict:
    """``batch`` descriptions decoded one at a time vs as one batch (the model's recorded settings)."""
    import torch

    from nmt.decoding.translator import Translator

    translator = Translator.from_pretrained(model_dir, device="cpu")
    part = texts[:batch]

    @torch.inference_mode()
    def singles() -> None:
        for text in part:
            translator.translate([text])

    @torch.inference_mode()
    def together() -> None:
        translator.translate(part)

    together()  # warm-up
    seconds = interleaved_medians({"singles": singles, "batch": together}, repeats)
    return {"batch": batch, "one_at_a_time_s": round(seconds["singles"], 3), "one_batch_s": round(seconds["batch"], 3),
            "speedup": round(seconds["singles"] / seconds["batch"], 2)}


def serve_load(model_dir: Path = MODEL, data: Path = DATA, quick: bool = False, seconds: float | None = None,
               clients: int = 8) -> dict:
    """The exported model served by MLflow under ``clients`` concurrent clients for ``seconds``
    (default 60, ``quick`` 5), and what batching their requests would gain."""
    reason = missing(model_dir, data)
    if reason is not None:
        return {"serve_load": reason}
    texts = [r["nl"] for r in read_jsonl(data)]
    with tempfile.TemporaryDirectory(prefix="nmt-serve-") as tmp, mlflow_server(served_pyfunc(model_dir, Path(tmp))) as url:
        result = run_load(url, texts, clients, seconds if seconds is not None else 5 if quick else 60)
    return result | {"serve_batching": batching_gain(model_dir, texts, clients, 1 if quick else 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 seconds of load instead of 60")
    ap.add_argument("--seconds", type=float, default=None, help="how long the clients send requests")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients")
    ap.add_argument("--model", type=Path, default=MODEL, help="exported model directory")
    ap.add_argument("--data", type=Path, default=DATA, help="JSON lines whose 'nl' are the requests")
    args = ap.parse_args()
    if args.clients < 1 or (args.seconds is not None and args.seconds <= 0):
        ap.error("--clients must be >= 1 and --seconds > 0")
    print(json.dumps(serve_load(args.model, args.data, args.quick, args.seconds, args.clients), indent=2))


if __name__ == "__main__":
    main()
