"""Time `nmt demo` (start, answer) in a headless Chromium and take the README's screenshot of it.

    python -m benchmarks.demo_page --model models/export --out docs/img/demo.png

Start: from launching `nmt demo` to its "demo ready" line (imports, model and retrieval index
loaded, page served). Answer: from clicking Translate to the n-best table and the baseline's answer
on the page, for each description given (the first of the default dataset's test split if none).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from nmt.layout import RAW


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(model: str, pairs: str | None, port: int) -> tuple[subprocess.Popen, float]:
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "nmt.cli", "demo", "--model", model, "--port", str(port)]
    proc = subprocess.Popen(cmd + (["--pairs", pairs] if pairs else []), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    for line in proc.stdout:
        if line.startswith("demo ready"):
            return proc, time.perf_counter() - started
    raise SystemExit(f"nmt demo exited with {proc.wait()} before serving")


def _answer(page, url: str, description: str) -> float:
    """Seconds from clicking Translate to the answer, on a fresh page (so no earlier answer counts)."""
    page.goto(url)
    page.locator("#description textarea").fill(description)
    clicked = time.perf_counter()
    page.locator("#submit").click()
    page.wait_for_function("document.querySelector('#retrieval textarea').value.length > 0 && "
                           "document.querySelectorAll('#nbest [role=row].virtual-row').length > 0", timeout=120_000)
    elapsed = time.perf_counter() - clicked
    # Gradio fades the outputs until every one of them is in: wait for its status trackers to hide.
    page.wait_for_function("Array.from(document.querySelectorAll('[data-testid=status-tracker]'))"
                           ".every(t => t.classList.contains('hide'))", timeout=120_000)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/export")
    ap.add_argument("--pairs", help="nmt demo --pairs (for exports without retrieval.jsonl.gz)")
    ap.add_argument("--out", type=Path, help="write the page's screenshot here, answering the first description")
    ap.add_argument("--browser", default="/usr/bin/chromium", help="Chromium executable ('' = Playwright's own)")
    ap.add_argument("descriptions", nargs="*")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    descriptions = args.descriptions or [json.loads((RAW / "test.jsonl").open().readline())["nl"]]
    proc, start_s = _start(args.model, args.pairs, port := _port())
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.browser or None, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            answers = []
            for d in descriptions:
                answers.append(_answer(page, f"http://127.0.0.1:{port}/", d))
                if args.out is not None and len(answers) == 1:  # the screenshot shows the first description
                    page.wait_for_timeout(1500)  # the outputs' fade-in transition
                    page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
    print(json.dumps({"start_s": round(start_s, 2), "answer_s": [round(a, 2) for a in answers]}))


if __name__ == "__main__":
    main()
