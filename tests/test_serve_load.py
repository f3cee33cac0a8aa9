"""The served-model load benchmark against a real `mlflow models serve` on 127.0.0.1, for a few seconds."""

from __future__ import annotations

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
    served_pyfunc,
    translate_request,
)

from .conftest import synthetic_pairs


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [p["nl"] for p in synthetic_pairs(20, seed=4)]


def test_load_on_a_real_server_records_every_key_without_errors_and_stops_it(trained_tiny_export, tmp_path, texts):
    with mlflow_server(served_pyfunc(trained_tiny_export, tmp_path)) as url:
        result = run_load(url, texts, clients=8, seconds=2.5)
        assert translate_request(url, texts[0])  # the server answers plain requests as the clients sent them
    assert result["serve_errors"] == 0, result["serve_load"]["first_errors"]
    assert result["serve_load"]["clients"] == 8 and result["serve_load"]["requests"] >= 8
    assert result["serve_requests_per_s"] > 0
    assert 0 < result["serve_p50_ms"] <= result["serve_p99_ms"]
    with pytest.raises(OSError):  # stopped on the way out: nothing answers on its port any more
        urllib.request.urlopen(f"{url}/ping", timeout=2)


def test_a_client_counts_a_refused_request_as_an_error_not_an_answer(texts):
    load = Load()
    client(f"http://127.0.0.1:{free_port()}", texts, 0, 1, time.monotonic() + 0.3, load)  # nothing listens there
    assert load.errors and not load.latencies_s
    assert "URLError" in load.errors[0] and "refused" in load.errors[0].lower()
    assert percentile_ms(load.latencies_s, 50) is None
