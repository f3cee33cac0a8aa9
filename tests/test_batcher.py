"""Micro-batching of concurrent translate calls (nmt.decoding.batcher): who shares a decode, and
that every caller gets exactly its own outputs, or its own error, back."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from nmt.decoding.batcher import MicroBatcher


class SlowDecoder:
    """Upper-cases texts, slowly enough that callers arriving meanwhile queue; records each call.
    A text "boom" raises, as a bad input would."""

    def __init__(self, seconds: float = 0.05):
        self.seconds, self.calls, self.threads = seconds, [], set()
        self.lock = threading.Lock()

    def __call__(self, texts: list[str], settings) -> list[str]:
        with self.lock:
            self.calls.append((list(texts), settings))
            self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        if "boom" in texts:
            raise ValueError("cannot decode 'boom'")
        return [f"{t.upper()}/{settings}" for t in texts]


def concurrently(batcher: MicroBatcher, requests: list[tuple[list[str], str]]) -> list:
    """Each request from its own thread, all started together; their results (or exceptions) in order."""
    start = threading.Barrier(len(requests))

    def call(request):
        start.wait()
        try:
            return batcher.translate(*request)
        except Exception as e:  # noqa: BLE001 - returned for the test to inspect
            return e

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(call, requests))


def test_concurrent_requests_share_decodes_and_each_gets_its_own_outputs():
    decoder = SlowDecoder()
    batcher = MicroBatcher(decoder, max_batch=32)
    requests = [([f"text {i}", f"more {i}"], "beam4") for i in range(12)]
    results = concurrently(batcher, requests)
    batcher.close()
    assert results == [[f"TEXT {i}/beam4", f"MORE {i}/beam4"] for i in range(12)]
    # the first decode starts alone (nobody waits for company); the others queue behind it and share
    assert len(decoder.calls) < len(requests)
    assert batcher.decodes == len(decoder.calls) and batcher.requests == len(requests)
    assert max(len(texts) for texts, _ in decoder.calls) > 2
    assert decoder.threads == {"nmt-micro-batcher"}  # one worker decodes: no two decodes contend


def test_a_batch_never_exceeds_max_batch_descriptions_nor_mixes_settings():
    decoder = SlowDecoder()
    batcher = MicroBatcher(decoder, max_batch=5)
    requests = [([f"t{i}", f"u{i}"], "beam4" if i % 3 else "greedy") for i in range(15)]
    results = concurrently(batcher, requests)
    batcher.close()
    for (texts, settings), result in zip(requests, results):
        assert result == [f"{t.upper()}/{settings}" for t in texts]
    assert all(len(texts) <= 5 for texts, _ in decoder.calls)
    for texts, settings in decoder.calls:  # every text in a decode was sent with that decode's settings
        assert all(dict((t, s) for ts, s in requests for t in ts)[t] == settings for t in texts)


def test_a_request_larger_than_max_batch_is_decoded_whole_on_its_own():
    decoder = SlowDecoder(0.0)
    batcher = MicroBatcher(decoder, max_batch=2)
    assert batcher.translate(["a", "b", "c"], "s") == ["A/s", "B/s", "C/s"]
    batcher.close()
    assert decoder.calls == [(["a", "b", "c"], "s")]


def test_an_error_reaches_only_the_request_that_caused_it():
    decoder = SlowDecoder()
    batcher = MicroBatcher(decoder, max_batch=32)
    requests = [(["fine"], "s")] + [(["boom"] if i == 3 else [f"ok {i}"], "s") for i in range(8)]
    results = concurrently(batcher, requests)
    assert isinstance(results[4], ValueError) and "boom" in str(results[4])
    assert all(r == [f"{texts[0].upper()}/s"] for (texts, _), r in zip(requests, results) if texts != ["boom"])
    assert batcher.translate(["after"], "s") == ["AFTER/s"]  # the worker survived the error
    batcher.close()


def test_a_decode_returning_the_wrong_number_of_outputs_is_an_error_not_a_misalignment():
    batcher = MicroBatcher(lambda texts, settings: texts[:-1], max_batch=8)
    with pytest.raises(RuntimeError, match="1 outputs for 2 texts"):
        batcher.translate(["a", "b"], "s")
    batcher.close()


def test_max_batch_one_decodes_in_the_callers_thread_and_zero_is_refused():
    decoder = SlowDecoder(0.0)
    batcher = MicroBatcher(decoder, max_batch=1)
    assert batcher.translate(["x"], "s") == ["X/s"]
    assert decoder.threads == {threading.current_thread().name}
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        MicroBatcher(decoder, max_batch=0)


def test_a_closed_batcher_refuses_new_requests():
    batcher = MicroBatcher(SlowDecoder(0.0), max_batch=4)
    assert batcher.translate(["x"], "s") == ["X/s"]
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.translate(["y"], "s")


def test_closed_loop_clients_merge_into_one_batch_when_the_batch_waits_for_company():
    """Each client sends its next request as soon as its answer comes: without a wait the clients
    split into groups that alternate; a few milliseconds let every client join one batch."""
    def sizes(max_wait_s: float) -> list[int]:
        decoder = SlowDecoder(0.02)
        batcher = MicroBatcher(decoder, max_batch=32, max_wait_s=max_wait_s)

        def client(k: int) -> None:
            if k:  # one client first, so the first decode starts alone and the others queue behind it
                time.sleep(0.005)
            for i in range(8):
                assert batcher.translate([f"c{k} r{i}"], "s") == [f"C{k} R{i}/s"]

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(client, range(4)))
        batcher.close()
        return [len(texts) for texts, _ in decoder.calls]

    assert max(sizes(0.0)) < 4  # the first client's decode splits them, and the groups never merge
    merged = sizes(0.05)
    assert merged.count(4) >= len(merged) - 2  # all four together, but for the first decode or two


def test_a_lone_request_waits_at_most_max_wait_and_a_full_batch_not_at_all():
    decoder = SlowDecoder(0.0)
    batcher = MicroBatcher(decoder, max_batch=2, max_wait_s=0.3)
    t0 = time.perf_counter()
    assert batcher.translate(["a"], "s") == ["A/s"]
    waited = time.perf_counter() - t0
    assert 0.25 <= waited < 5  # it waited for company, and then decoded alone
    t0 = time.perf_counter()
    assert batcher.translate(["b", "c"], "s") == ["B/s", "C/s"]  # max_batch queued: no wait
    assert time.perf_counter() - t0 < 0.25
    batcher.close()
    with pytest.raises(ValueError, match="max_wait_s must be >= 0"):
        MicroBatcher(decoder, max_batch=2, max_wait_s=-1)


def test_served_batching_round_trips_through_the_model_config():
    """What the export records (serving_config) is what the served model reads back (batching_of);
    a model logged before batching existed decodes each request apart."""
    from nmt.tracking.registry import batching_of, serving_config

    assert batching_of(serving_config(32, 10)) == (32, 0.01)
    assert batching_of(None) == batching_of({}) == (1, 0.0)
