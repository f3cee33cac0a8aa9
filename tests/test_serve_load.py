"""The served-model load benchmark against a real `mlflow models serve` on 127.0.0.1, for a few seconds."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from benchmarks.serve_load import (
    Load,
    client,
    free_port,
    mlflow_server,
    percentile_ms,
    run_load,
    same_output,
    serve_load,
    served_pyfunc,
    translate_request,
)
from nmt.decoding.translator import Translator

from .conftest import synthetic_pairs


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [p["nl"] for p in synthetic_pairs(20, seed=4)]


def test_load_on_a_real_server_records_every_key_without_errors_and_stops_it(trained_tiny_export, tmp_path, texts):
    with mlflow_server(served_pyfunc(trained_tiny_export, tmp_path, max_batch=8)) as url:
        result = run_load(url, texts, clients=8, seconds=2.5)
        assert translate_request(url, texts[0])  # the server answers plain requests as the clients sent them
    assert result["serve_errors"] == 0, result["serve_load"]["first_errors"]
    assert result["serve_load"]["clients"] == 8 and result["serve_load"]["requests"] >= 8
    assert result["serve_requests_per_s"] > 0
    assert 0 < result["serve_p50_ms"] <= result["serve_p99_ms"]
    # under batching each client still got its own description's translation
    local = Translator.from_pretrained(trained_tiny_export, device="cpu")
    answered = sorted(result["answers"])
    assert answered and [result["answers"][t] for t in answered] == [t.text for t in local.translate(answered)]
    with pytest.raises(OSError):  # stopped on the way out: nothing answers on its port any more
        urllib.request.urlopen(f"{url}/ping", timeout=2)


def test_before_and_after_batching_are_both_measured_on_the_same_descriptions(trained_tiny_export, tmp_path, texts):
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"nl": t, "code": "x"}) + "\n" for t in texts))
    result = serve_load(trained_tiny_export, data, seconds=2, clients=4, max_batch=4)
    assert result["serve_max_batch"] == 4
    for run in (result, result["serve_unbatched"]):
        assert run["serve_errors"] == 0 and run["serve_requests_per_s"] > 0 and run["serve_load"]["clients"] == 4
    assert result["serve_batching_speedup"] == round(
        result["serve_requests_per_s"] / result["serve_unbatched"]["serve_requests_per_s"], 2)
    assert result["serve_same_output"] == 1.0  # batching changes when a description is decoded, not what it gets
    assert "answers" not in result and "answers" not in result["serve_unbatched"]


def test_without_an_exported_model_it_says_which_command_makes_one(tmp_path):
    result = serve_load(tmp_path / "no-export", tmp_path / "no.jsonl", quick=True)
    assert set(result) == {"serve_load"} and "make repro" in result["serve_load"]


def test_same_output_compares_only_descriptions_answered_in_both_runs():
    assert same_output({"a": "x", "b": "y"}, {"b": "y", "c": "z"}) == 1.0
    assert same_output({"a": "x", "b": "y"}, {"a": "x", "b": "z"}) == 0.5
    assert same_output({"a": "x"}, {"b": "y"}) is None


def test_a_client_counts_a_refused_request_as_an_error_not_an_answer(texts):
    load = Load()
    client(f"http://127.0.0.1:{free_port()}", texts, 0, 1, time.monotonic() + 0.3, load)  # nothing listens there
    assert load.errors and not load.latencies_s
    assert "URLError" in load.errors[0] and "refused" in load.errors[0].lower()
    assert percentile_ms(load.latencies_s, 50) is None
