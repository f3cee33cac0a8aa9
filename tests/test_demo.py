"""`nmt demo`: the page served for real, driven by a headless Chromium through Playwright."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nmt.batching import collate
from nmt.checkpoint import load_model, save_model
from nmt.cli import app
from nmt.decoding.translator import Translator
from nmt.demo import IN_OUTPUT, PLACEHOLDER, Demo, highlight, load_pairs
from nmt.model import target_nll
from nmt.retrieval import PAIRS_FILE, RetrievalBaseline, pairs_bytes
from nmt.tokenizer import Tokenizer

from .conftest import REPO, synthetic_pairs

runner = CliRunner()
DESCRIPTION = "return the length of items"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")  # system ones, after Playwright's


@pytest.fixture(scope="module")
def trained_export(tmp_path_factory, tiny_export) -> Path:
    """tiny_export trained for a few seconds on its own 50 synthetic pairs, carrying them for retrieval."""
    out = tmp_path_factory.mktemp("demo") / "export"
    shutil.copytree(tiny_export, out)
    tok = Tokenizer.load(out / "tokenizer.json")
    model, cfg = load_model(out / "model.safetensors", out / "config.json")
    pairs = synthetic_pairs(50, seed=0)  # the pairs tiny_export's vocabulary was built from
    b = collate(tok.encode_batch([p["nl"] for p in pairs]), tok.encode_batch([p["code"] for p in pairs]),
                tok.pad_id, tok.bos_id, tok.eos_id, model.cfg.max_len)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        opt.zero_grad()
        (target_nll(model, tok.pad_id, b.src, b.src_mask, b.tgt_in, b.tgt_out) / b.n_tokens).backward()
        opt.step()
    save_model(model.eval(), out / "model.safetensors", out / "config.json", cfg["bos_id"], cfg["eos_id"])
    (out / PAIRS_FILE).write_bytes(pairs_bytes((p["nl"], p["code"]) for p in pairs))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium: Playwright's own, else a system one; skipped, naming why, when none launches."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        problems = []
        for executable in [None, *filter(None, map(shutil.which, BROWSERS))]:
            try:
                b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            except sync_api.Error as e:
                problems.append(f"{executable or 'playwright chromium'}: {str(e).splitlines()[0]}")
                continue
            yield b
            b.close()
            return
        pytest.skip("no browser could be launched (`python -m playwright install chromium`, or apt-get install "
                    f"chromium): {'; '.join(problems)}")


@pytest.fixture()
def server(trained_export):
    """`nmt demo` in its own process group on a free port, until it says it is ready; killed at teardown."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nmt.cli", "demo", "--model", str(trained_export), "--port",
                             str(port), "--device", "cpu", "--n-best", "3"], cwd=REPO, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        seen = []
        for line in proc.stdout:  # ends when the process exits
            seen.append(line)
            if line.startswith("demo ready"):
                break
        else:
            pytest.fail(f"nmt demo exited with {proc.wait()} before serving:\n{''.join(seen)}")
        yield f"http://127.0.0.1:{port}/"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


def test_page_answers_a_description_with_the_n_best_the_baseline_and_the_copied_words(server, browser,
                                                                                      trained_export):
    page = browser.new_page()
    page.goto(server)
    page.locator("#description textarea").fill(DESCRIPTION)
    page.locator("#submit").click()
    page.wait_for_function("document.querySelector('#retrieval textarea').value.length > 0", timeout=60_000)
    rows = page.locator("#nbest [role=row].virtual-row")  # Gradio's Dataframe: a virtual table of div rows
    rows.first.wait_for(timeout=60_000)
    shown = [[cell.inner_text().strip() for cell in row.locator("[role=gridcell]").all()] for row in rows.all()]

    # What the page shows is what the translator and the baseline answer, outside the server.
    translator = Translator.from_pretrained(trained_export, device="cpu")
    pairs, _ = load_pairs(trained_export, None)
    expected = Demo(translator, pairs, n_best=3).answer(DESCRIPTION)
    assert [r[2] for r in shown] == [code for _, _, code in expected.n_best] and len(shown) == 3
    assert [r[0] for r in shown] == ["1", "2", "3"]
    assert page.locator("#retrieval textarea").input_value() == expected.retrieval
    nearest = RetrievalBaseline().fit([nl for nl, _ in pairs], [c for _, c in pairs]).predict([DESCRIPTION])[0]
    assert expected.retrieval == nearest
    copied = page.locator("#copied")
    assert "length" in copied.inner_text() and "items" in copied.inner_text()
    marked = [text for text, label in expected.highlight if label == IN_OUTPUT]
    assert marked, f"the trained model's best line {expected.n_best[0][2]!r} holds none of the description's words"
    assert IN_OUTPUT in copied.inner_text()  # the legend, shown once some word carries the label
    page.close()


def test_empty_description_is_refused_on_the_page(server, browser):
    page = browser.new_page()
    page.goto(server)
    page.locator("#submit").click()
    page.get_by_text("type a description first").first.wait_for(timeout=30_000)
    page.close()


def test_missing_model_dir_exits_2_naming_it(tmp_path):
    result = runner.invoke(app, ["demo", "--model", str(tmp_path / "nope"), "--port", str(free_port())])
    assert result.exit_code == 2
    assert "model directory not found" in result.output and "nope" in result.output


def test_model_dir_without_pairs_exits_2_saying_how_to_fix_it(tmp_path, tiny_export, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/raw/train.jsonl here either
    result = runner.invoke(app, ["demo", "--model", str(tiny_export), "--port", str(free_port()), "--device", "cpu"])
    assert result.exit_code == 2
    assert PAIRS_FILE in result.output and "--pairs" in result.output


def test_port_in_use_exits_1_naming_the_port(trained_export):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["demo", "--model", str(trained_export), "--port", str(port)])
    assert result.exit_code == 1
    assert f"port {port}" in result.output and "--port" in result.output


def test_pairs_file_is_the_same_bytes_for_the_same_pairs_and_reads_back(tmp_path):
    pairs = [("print x", "print(x)"), ("set ü to 'a b'", "ü = 'a b'")]
    assert pairs_bytes(pairs) == pairs_bytes(iter(pairs))
    (tmp_path / PAIRS_FILE).write_bytes(pairs_bytes(pairs))
    assert load_pairs(tmp_path, None) == (pairs, tmp_path / PAIRS_FILE)


def test_highlight_marks_placeholders_the_output_holds_and_other_shared_words():
    tok = Tokenizer.build(["call f with x"], min_freq=1, max_vocab=100, string_placeholders=True,
                          name_placeholders=True)
    text = "call warn_user with string 'get_cache is deprecated' and level, or 'unused'."
    pieces = highlight(text, "warn_user ( 'get_cache is deprecated' , level )", tok)
    assert "".join(p for p, _ in pieces) == text  # the pieces join back to the description
    labels = {p: label for p, label in pieces if label}
    assert labels == {"warn_user": PLACEHOLDER, "get_cache is deprecated": PLACEHOLDER, "level": IN_OUTPUT}
    plain = Tokenizer.build(["call f with x"], min_freq=1, max_vocab=100)  # no placeholders: a literal in the output is just words in output
    assert {p for p, label in highlight(text, "warn_user ( 'get_cache' )", plain) if label == PLACEHOLDER} == set()
