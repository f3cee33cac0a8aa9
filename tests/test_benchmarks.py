"""The FLOP count behind MFU, the peaks it is set against, the speed-ups the benchmarks measure
(each against the other tool's fastest way), the MFU spread across runs, and a --quick smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nmt import flops as flops_module
from nmt.batching import collate
from nmt.config import ModelConfig
from nmt.flops import forward_flops, measure_peak_flops, theoretical_peak_flops, train_step_flops
from nmt.model import Dropout, Transformer, attend
from nmt.training.step import micro_batch_flops

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("copy", [False, True])
def test_forward_flops_equal_what_torch_counts(copy):
    """torch's FlopCounterMode counts every matmul actually run (SDPA on its math path, which
    computes the full T x T causal square: the masked half is the only difference)."""
    cfg = ModelConfig(d_model=32, n_heads=4, enc_layers=2, dec_layers=3, d_ff=64, copy=copy)
    model = Transformer(cfg, 50).eval()
    B, S, T = 3, 7, 5
    src, tgt = torch.randint(3, 50, (B, S)), torch.randint(3, 50, (B, T))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(src, torch.ones_like(src, dtype=torch.bool), tgt)
    masked_half = B * cfg.dec_layers * 2 * (2 * cfg.d_model * (T * T - T * (T + 1) // 2))
    assert counter.get_total_flops() == forward_flops(cfg, 50, B, S, T) + masked_half
    assert train_step_flops(cfg, 50, B, S, T) == 3 * forward_flops(cfg, 50, B, S, T)


@pytest.mark.parametrize("copy", [False, True])
def test_a_padded_batch_counts_only_its_real_tokens(copy):
    """The train stage's FLOPs: each sequence at its own lengths, never the padding it was batched with."""
    cfg = ModelConfig(d_model=32, n_heads=4, enc_layers=2, dec_layers=3, d_ff=64, copy=copy, max_len=64)
    model = Transformer(cfg, 50, pad_id=0)
    srcs, tgts = [[5] * 3, [6] * 11, [7] * 7], [[8] * 9, [9] * 2, [10] * 5]
    b = collate(srcs, tgts, pad_id=0, bos_id=1, eos_id=2, max_len=cfg.max_len)
    # as the encoder / decoder see them: source + EOS, BOS + target
    real = sum(train_step_flops(cfg, 50, 1, len(s) + 1, len(t) + 1) for s, t in zip(srcs, tgts))
    assert micro_batch_flops(model, b) == real
    assert real < train_step_flops(cfg, 50, b.src.size(0), b.src.size(1), b.tgt_in.size(1))
    unpadded = collate(srcs[:1], tgts[:1], 0, 1, 2, cfg.max_len)  # one row: nothing to pad, the shapes agree
    assert micro_batch_flops(model, unpadded) == train_step_flops(cfg, 50, 1, *unpadded.src.shape[1:],
                                                                  unpadded.tgt_in.size(1))


def test_measured_peak_is_a_plausible_rate():
    peak = measure_peak_flops(torch.device("cpu"), n=256, repeats=3)
    assert 1e8 < peak < 1e14  # FLOP/s: more than a calculator, less than a rack of GPUs


def test_peak_warm_up_runs_for_its_stated_time(monkeypatch):
    """One warm-up product read half the steady peak at a stage's start (MFU 1.12 was committed)."""
    products = []
    real_mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b: products.append(1) or real_mm(a, b))
    t0 = time.perf_counter()
    measure_peak_flops(torch.device("cpu"), n=64, repeats=2, warmup_s=0.2)
    assert time.perf_counter() - t0 >= 0.2
    assert len(products) > 2 + 1  # several warm-up products, then the 2 timed ones


def test_the_peak_is_the_best_timed_product_not_the_median(monkeypatch):
    """A peak is the best the hardware did: one fast product among slow ones sets it."""
    real_mm = torch.mm
    sleeps = iter([0.0, 0.2, 0.05, 0.2])  # one warm-up (warmup_s=0), then 3 timed
    monkeypatch.setattr(torch, "mm", lambda a, b: time.sleep(next(sleeps)) or real_mm(a, b))
    n = 8
    peak = measure_peak_flops(torch.device("cpu"), n=n, repeats=3, warmup_s=0.0)
    assert 2 * n**3 / 0.1 < peak <= 2 * n**3 / 0.05  # the 0.05 s product's rate, not the 0.2 s median's


def test_a_gpu_peak_times_each_product_between_cuda_events_not_around_a_host_sync(monkeypatch):
    """A host clock around mm + synchronize read an H200's 8192-cube bf16 peak at 558-656 TFLOP/s
    (the sync's round trip added to a 1.4 ms product): the events time the product alone."""
    gpu_clock = [0.0]  # seconds of work the fake GPU has done

    class Event:  # torch.cuda.Event's surface the timing uses; stamps the fake GPU's clock
        def __init__(self, enable_timing: bool):
            assert enable_timing

        def record(self):
            self.at = gpu_clock[0]

        def elapsed_time(self, end: "Event") -> float:
            return (end.at - self.at) * 1e3  # ms, as torch's

    durations = iter([0.004, 0.002, 0.003])
    real_mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b: gpu_clock.__setitem__(0, gpu_clock[0] + next(durations))
                        or real_mm(a, b))
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: time.sleep(0.05))  # a slow round trip
    a = torch.ones(4, 4)
    assert flops_module._cuda_event_seconds(a, a, repeats=3) == pytest.approx([0.004, 0.002, 0.003])
    assert flops_module.peak_timing(torch.device("cuda")) == "CUDA events"
    assert flops_module.peak_timing(torch.device("cpu")) == "wall clock"


def test_a_peak_says_how_it_was_timed():
    peak = flops_module.measure_peak(torch.device("cpu"))
    assert peak.timing == "wall clock" and peak.theoretical is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_measured_gpu_peak_stays_below_the_datasheets():
    peak = flops_module.measure_peak(torch.device("cuda"))
    assert peak.timing == "CUDA events"
    if peak.theoretical is not None:
        assert 0.3 * peak.theoretical < peak.measured <= 1.05 * peak.theoretical


@pytest.mark.parametrize("name, dtype, tf32, expected", [
    ("NVIDIA H200", torch.bfloat16, False, 989.4e12),
    ("NVIDIA H100 80GB HBM3", torch.float16, False, 989.4e12),
    ("NVIDIA H100 PCIe", torch.bfloat16, False, 756e12),
    ("NVIDIA H200 NVL", torch.bfloat16, False, 835.5e12),
    ("NVIDIA A100-SXM4-80GB", torch.float32, False, 19.5e12),
    ("NVIDIA A100-SXM4-80GB", torch.float32, True, 156e12),  # fp32 matmuls on TF32 tensor cores
    ("NVIDIA H200", torch.float32, True, 494.7e12),
    ("NVIDIA GH200 480GB", torch.bfloat16, False, None),  # not in the table: no guess
    ("NVIDIA GeForce RTX 4090", torch.bfloat16, False, None),
    ("NVIDIA H200", torch.float64, False, None),
])
def test_theoretical_peak_is_the_datasheets_for_known_cards_only(monkeypatch, name, dtype, tf32, expected):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    before = torch.backends.cuda.matmul.allow_tf32  # a computed attribute: monkeypatch cannot restore it
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        assert theoretical_peak_flops(torch.device("cuda"), dtype) == expected
        assert theoretical_peak_flops(torch.device("cpu"), dtype) is None  # never a guessed CPU peak
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_measuring_the_peak_leaves_the_global_rng_alone():
    """The train stage measures its peak around seeding: the initial weights must not depend on it."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    measure_peak_flops(torch.device("cpu"), n=64, repeats=1)
    assert torch.equal(torch.get_rng_state(), before)


def test_dropout_drops_at_rate_p_and_keeps_the_expectation():
    torch.manual_seed(0)
    drop = Dropout(0.3).train()
    x = torch.ones(200_000)
    y = drop(x)
    assert abs((y == 0).float().mean().item() - 0.3) < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.7))
    assert torch.equal(drop.eval()(x), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.3])
def test_dropout_gives_the_plain_bool_mask_form_bit_for_bit_forward_and_backward(dtype, p):
    """The float32 path builds its mask in place; it must equal ``x * ((u >= p) * scale)`` exactly,
    output dtype and gradient included, so a training run does not change."""
    x = torch.randn(8, 33, 17, dtype=dtype, requires_grad=True)
    torch.manual_seed(0)
    got = Dropout(p).train()(x)
    got.backward(torch.ones_like(got))
    got_grad, x.grad = x.grad, None
    torch.manual_seed(0)
    want = x * ((torch.rand_like(x) >= p) * (1.0 / (1.0 - p)))
    want.backward(torch.ones_like(want))
    assert got.dtype == want.dtype and torch.equal(got, want) and torch.equal(got_grad, x.grad)


class NoDrop(Dropout):
    """Training with p > 0 (so attend takes its CPU path) but dropping nothing: comparable to SDPA."""

    def forward(self, x):
        return x


@pytest.mark.parametrize("is_causal, masked", [(False, False), (True, False), (False, True)])
def test_cpu_training_attention_is_sdpa(is_causal, masked):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8) for _ in range(3))
    mask = None
    if masked:
        mask = torch.ones(2, 1, 1, 6, dtype=torch.bool)
        mask[0, ..., 4:] = False
    ours = attend(q, k, v, mask, is_causal, NoDrop(0.5).train())
    assert torch.allclose(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal),
                          atol=1e-6)


def test_quick_benchmark_run_writes_every_result(tmp_path):
    """`python -m benchmarks --quick`: the smoke run that keeps the benchmarks from rotting."""
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--device", "cpu", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    for key in ("train_tok_s", "torch_transformer_tok_s", "train_speedup_vs_torch", "mfu", "peak_flops",
                "kv_cache_speedup", "beam_speedup_vs_hf", "tokenize_tok_s", "tokenize_ratio_vs_tiktoken",
                "peak_rss_mb", "data_wait_share"):
        assert isinstance(results[key], (int, float)) and results[key] > 0, key
    assert 0 < results["mfu"] < 1 and 0 < results["data_wait_share"] < 1
    assert results["cached_equals_uncached"] is True
    assert set(results["by_length"]) == {"24", "128"}
    assert results["device"].startswith("cpu") and results["versions"]["torch"] == torch.__version__
    # the peak: measured at both ends; no datasheet figure for a CPU
    assert results["theoretical_peak_flops"] is None and results["peak_flops_end"] > 0
    # a quick run starts a fresh MFU history: one run, no spread yet
    (entry,) = results["mfu_runs"]
    assert entry["mfu"] == results["mfu"] and entry["peak_flops"] == results["peak_flops"]
    assert entry["step_s"] == results["by_length"]["128"]["step_s"] and entry["date"]
    assert results["mfu_spread"] is None
    # tiktoken: the ratio is against its fastest recorded call
    calls = results["tiktoken_calls"]
    assert len(calls) >= 4 and "encode_ordinary loop" in calls and "encode_ordinary_batch" in calls
    assert results["tiktoken_fastest_call"] == max(calls, key=calls.get)
    assert results["tiktoken_fastest_tok_s"] == max(calls.values())
    assert results["tokenize_ratio_vs_tiktoken"] == pytest.approx(
        results["tokenize_tok_s"] / max(calls.values()), rel=0.01)
    # HF generate: the speed-up is against its fastest setting that ran (a setting that raised holds its reason)
    timed = {k: v for k, v in results["hf_generate_s"].items() if isinstance(v, (int, float))}
    assert {"no_grad", "inference_mode"} <= set(timed)
    # a fastest one: at --quick sizes two settings can tie once rounded to 0.1 ms (CI run of 16a8e65)
    assert timed[results["hf_fastest_setting"]] == min(timed.values())
    assert results["hf_bart_beam_s"] == min(timed.values())
    assert results["beam_speedup_vs_hf"] == pytest.approx(min(timed.values()) / results["beam_s"], rel=0.01)
    assert all(isinstance(v, str) for k, v in results["hf_generate_s"].items() if k not in timed)
    # CTranslate2: against its fastest setting, fp32 and int8; the trained model's greedy outputs identical
    for prefix in ("ctranslate2", "ctranslate2_int8"):
        timed = {k: v for k, v in results[f"{prefix}_beam_s"].items() if isinstance(v, (int, float))}
        assert results[f"{prefix}_fastest_setting"] == min(timed, key=timed.get)
        assert results[f"beam_speedup_vs_{prefix}"] == pytest.approx(
            results["ours_beam_tok_s"] / results[f"{prefix}_beam_tok_s"], rel=0.02)
    assert results["ctranslate2_same_output"] == 1.0 and results["ctranslate2_max_logprob_diff"] < 1e-4
    assert results["ctranslate2_agreement_distinct_outputs"] > 1 and results["versions"]["ctranslate2"]
    assert "| training tok/s, length 128" in proc.stdout and "fastest" in proc.stdout


def full_run(mfu: float, device: str = "cpu (x86_64, 2 threads)", torch_version: str = "2.0", quick: bool = False,
             timed_code: str = "c0de", **extra) -> dict:
    return {"mfu": mfu, "peak_flops": 100, "by_length": {"128": {"step_s": 1.0}}, "device": device,
            "versions": {"torch": torch_version}, "quick": quick, "timed_code": timed_code, **extra}


def test_mfu_runs_carry_forward_on_the_same_machine_only():
    from benchmarks.__main__ import MFU_RUNS_KEPT, mfu_history

    first = full_run(0.5) | mfu_history(None, full_run(0.5), "d0")
    second = mfu_history(first, full_run(0.4), "d1")
    assert [r["mfu"] for r in second["mfu_runs"]] == [0.5, 0.4] and second["mfu_runs"][-1]["date"] == "d1"
    assert second["mfu_spread"] == pytest.approx(0.2)  # (0.5 - 0.4) / 0.5
    previous = full_run(0.5)
    for i in range(MFU_RUNS_KEPT + 2):
        previous = full_run(0.5 + i / 100) | mfu_history(previous, full_run(0.5 + i / 100), f"d{i}")
    assert len(previous["mfu_runs"]) == MFU_RUNS_KEPT and previous["mfu_runs"][-1]["date"] == f"d{MFU_RUNS_KEPT + 1}"
    # another machine, another torch, other timed code, or a quick run on either side: a fresh list
    for other, current in [(first, full_run(0.4, device="cpu (arm64, 8 threads)")),
                           (first, full_run(0.4, torch_version="2.1")),
                           (first, full_run(0.4, timed_code="f00d")),
                           ({k: v for k, v in first.items() if k != "timed_code"}, full_run(0.4)),
                           (first, full_run(0.4, quick=True)),
                           (full_run(0.5, quick=True, mfu_runs=[{"mfu": 0.9}]), full_run(0.4))]:
        fresh = mfu_history(other, current, "d2")
        assert [r["mfu"] for r in fresh["mfu_runs"]] == [0.4] and fresh["mfu_spread"] is None


def test_the_timed_code_digest_follows_the_files_a_training_step_runs(tmp_path):
    from benchmarks.__main__ import TIMED_CODE, timed_code_digest

    for entry in TIMED_CODE:
        path = tmp_path / entry
        (path / "step.py" if not entry.endswith(".py") else path).parent.mkdir(parents=True, exist_ok=True)
        (path / "step.py" if not entry.endswith(".py") else path).write_text("x = 1\n")
    before = timed_code_digest(tmp_path)
    assert timed_code_digest(tmp_path) == before  # the same files, the same digest
    (tmp_path / "nmt/training/step.py").write_text("x = 2\n")
    changed = timed_code_digest(tmp_path)
    (tmp_path / "README.md").write_text("not timed\n")
    assert changed != before and timed_code_digest(tmp_path) == changed
    assert timed_code_digest() == timed_code_digest()  # this repository's own files


def test_a_results_file_from_before_mfu_runs_carries_no_run_forward(tmp_path):
    from benchmarks.__main__ import mfu_history, read_previous

    path = tmp_path / "results.json"
    assert read_previous(path) is None
    path.write_text(json.dumps(full_run(0.545)))  # its peak was a median: not comparable
    assert [r["mfu"] for r in mfu_history(read_previous(path), full_run(0.39), "now")["mfu_runs"]] == [0.39]
    path.write_text("{not json")
    assert read_previous(path) is None


def test_tokenize_memory_benchmark_measures_a_run_in_its_own_process(tmp_path):
    from benchmarks.tokenize_memory import measure

    r = measure(300, True, tmp_path)
    assert r["pairs"] == 300 and r["train_tokens"] > 300 and r["vocab_size"] > 259
    assert 50 < r["peak_rss_mb"] < 4096 and r["out_mb"] > 0  # a Python process with torch loaded, not a broken read


def test_restrict_ablation_decodes_the_same_weights_with_and_without_the_restriction(tmp_path):
    """A model that prefers _ID:1_ writes it unfilled only when decoding is not restricted to the source."""
    from benchmarks.restrict_ablation import run
    from nmt.checkpoint import save_model
    from nmt.config import ModelConfig
    from nmt.model import Transformer
    from nmt.tokenizer import Tokenizer

    tok = Tokenizer.build(["set _ID:0_ to x.", "_ID:0_ = x"] * 2, 1, 100, True, True, placeholder_tokens=10)
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ff=32, dropout=0.0, max_len=32,
                      copy=False)
    model = Transformer(cfg, tok.vocab_size, tok.pad_id)
    with torch.no_grad():
        model.embed.weight[tok.encode("_ID:1_")[0]] *= 50
    save_model(model, tmp_path / "model.safetensors", tmp_path / "config.json", tok.bos_id, tok.eos_id)
    tok.save(tmp_path / "tokenizer.json")
    data = tmp_path / "dev.jsonl"
    data.write_text(json.dumps({"nl": "set foo_bar to x.", "code": "foo_bar = x"}) + "\n")
    results = run(tmp_path, data, beam_size=1)
    assert results["restricted"]["unfilled_placeholders"] == 0
    assert results["unrestricted"]["unfilled_placeholders"] == 1


def test_missed_words_counts_wrong_lines_that_leave_out_a_kept_description_word(tmp_path):
    """Only wrong lines count; a word counts only while the threshold keeps it as a word."""
    from benchmarks.missed_words import count

    train = ["return the value"] * 3 + ["call foo with value"]  # 'value' in 4 descriptions, 'foo' in 1
    predictions = [
        {"nl": "return the value", "code": "return value", "prediction": "return value"},  # right
        {"nl": "return the value", "code": "return value", "prediction": "return x"},  # misses 'value'
        {"nl": "call foo with value", "code": "foo ( value )", "prediction": "foo ( )"},  # misses 'value'
        {"nl": "call foo", "code": "foo ( )", "prediction": "bar ( )"},  # 'foo' is rare: masked, not counted
    ]
    assert count(predictions, train, [2, 5]) == {2: 2, 5: 0}


def test_rerank_weights_cross_validation_scores_each_part_with_weights_chosen_on_the_others():
    from benchmarks.rerank_weights import as_arrays, cross_validated, right_choices
    from nmt.decoding.rerank import LexicalWeights, Penalties

    def hyp(score, missing, exact):
        return {"score": score, "valid": True, "penalties": Penalties(missing, 0.0, 0.0), "reconstruction": 0.0,
                "exact": exact}

    # half the pairs need the 'missing' weight (the right hypothesis scores lower but misses nothing),
    # half are right either way
    needs = [[hyp(-0.1, 1.0, False), hyp(-0.5, 0.0, True)]] * 4
    either = [[hyp(-0.1, 0.0, True), hyp(-0.5, 1.0, False)]] * 4
    table = needs + either
    off, on = LexicalWeights(), LexicalWeights(missing=1.0)
    assert right_choices(as_arrays(table), [off, on]).sum(axis=1).tolist() == [4, 8]
    assert cross_validated(right_choices(as_arrays(table), [off, on]), folds=2, repeats=3) == [100.0] * 3
    # a weight no part can learn to prefer is not chosen by luck: only 'off' on offer scores 50
    assert cross_validated(right_choices(as_arrays(table), [off]), folds=2, repeats=2) == [50.0, 50.0]


def test_rerank_weights_scores_a_grid_at_once_as_the_reranker_scores_each_point():
    """right_choices (numpy, every grid point at once) picks what the product's reranker picks: valid
    Python first, then LexicalWeights.score, the first best on a tie; n-best lists of unequal length."""
    import itertools
    import random

    from benchmarks.rerank_weights import Weights, as_arrays, right_choices
    from nmt.decoding.rerank import LexicalWeights, Penalties

    rng = random.Random(3)
    table = []
    for _ in range(60):
        hyps = [{"score": round(rng.uniform(-5, 0), 1), "valid": rng.random() < 0.7,
                 "penalties": Penalties(*(rng.choice([0.0, 0.5, 1.0]) for _ in range(3))),
                 "reconstruction": round(rng.uniform(-3, 0), 1), "neighbour": rng.choice([0.0, 0.9]),
                 "exact": rng.random() < 0.3} for _ in range(rng.randint(1, 5))]
        table.append(sorted(hyps, key=lambda h: -h["score"]))
    grid = [Weights(LexicalWeights(*w[:4]), w[4]) for w in itertools.product((0.0, 1.0), (0.0, 0.5), (0.0, 2.0),
                                                                           (0.0, 0.8), (0.0, 1.0))]

    def chosen(hyps, w):  # the product's order (nmt.decoding.rerank.rerank_order) plus the candidate term
        return max(hyps, key=lambda h: (h["valid"], w.lexical.score(h["score"], h["penalties"], h["reconstruction"])
                                        + w.neighbour * h["neighbour"]))

    right = right_choices(as_arrays(table), grid, chunk=7)
    assert right.shape == (len(grid), len(table))
    assert right.tolist() == [[chosen(hyps, w)["exact"] for hyps in table] for w in grid]


def test_rerank_weights_neighbour_feature_rewards_the_nearest_training_lines_shape():
    from benchmarks.rerank_weights import Weights, agreement, as_arrays, nearest, right_choices, with_neighbours
    from nmt.decoding.rerank import LexicalWeights, Penalties

    pairs = [("call the function foo with an argument x.", "foo ( x )"), ("x is an integer 2.", "x = 2")]
    (i, cos), = nearest(pairs, ["call the function bar with an argument y."])
    code = pairs[i][1]
    assert code == "foo ( x )" and 0.0 < cos < 1.0
    assert agreement("bar ( y )", code, cos) == cos  # the same shape, other names
    assert agreement("bar . y", code, cos) == 0.0
    assert agreement("x = 'a'", "y = 'b'", 0.5) == 0.5  # literals are abstracted too, by kind
    assert agreement("x = 'a'", "y = 3", 0.5) == 0.0
    none = Penalties(0.0, 0.0, 0.0)
    hyps = [{"text": "bar . y", "score": -0.1, "valid": True, "penalties": none, "reconstruction": 0.0,
             "exact": False},
            {"text": "bar ( y )", "score": -0.3, "valid": True, "penalties": none, "reconstruction": 0.0,
             "exact": True}]
    scored = with_neighbours([hyps], [(code, cos)])
    assert [h["neighbour"] for h in scored[0]] == [0.0, cos] and "neighbour" not in hyps[0]  # a new table
    right = right_choices(as_arrays(scored), [Weights(LexicalWeights()), Weights(LexicalWeights(), 1.0)])
    assert right[:, 0].tolist() == [False, True]


def test_rerank_weights_template_key_finds_the_line_of_the_same_template_over_the_same_name():
    """Compared by words, "call foo with x" is nearest to another line about foo; compared by its
    template (names masked as the model reads it), to a call of another function."""
    from benchmarks.rerank_weights import RETRIEVAL_KEYS, nearest
    from nmt.tokenizer import Tokenizer

    tokenizer = Tokenizer([], string_placeholders=True, name_placeholders=True)
    pairs = [("define the function strip_tags with an argument value.", "def strip_tags ( value ) :"),
             ("call the function escape_html with an argument text.", "escape_html ( text )")]
    query = ["call the function strip_tags with an argument s."]
    assert nearest(pairs, query)[0][0] == 0  # def strip_tags ( value ) :
    key = RETRIEVAL_KEYS["template"](tokenizer)
    assert "strip_tags" not in key(query[0])
    assert nearest(pairs, query, key)[0][0] == 1  # escape_html ( text )


def test_rerank_weights_retrieved_line_fills_the_neighbours_names_and_literals_from_the_description():
    from benchmarks.rerank_weights import retrieved_line
    from nmt.tokenizer import Tokenizer

    tokenizer = Tokenizer([], string_placeholders=True, name_placeholders=True)
    pair = ("call the function escape_html with an argument raw_text.", "escape_html ( raw_text )")
    assert retrieved_line("call the function strip_tags with an argument html_text.", pair, tokenizer) \
        == "strip_tags ( html_text )"
    assert retrieved_line("x is a string 'b'.", ("y is a string 'a'.", "y = 'a'"), tokenizer) == "y = 'b'"
    # a placeholder the description has no literal for stays, so the line cannot be right
    assert "_ID:1_" in retrieved_line("call strip_tags.", pair, tokenizer)


def test_rerank_weights_writes_its_figures_and_scores_the_neighbour_on_the_same_folds(tmp_path, tiny_export,
                                                                                    monkeypatch):
    """End to end on a tiny export: --neighbour for both keys, --out; the cross-validated figure
    'without the neighbour' of each key is the plain grid's (same folds, same points)."""
    import json
    import shutil

    from benchmarks.rerank_weights import main
    from nmt.decoding.rerank import Lexicon

    from .conftest import synthetic_pairs, write_jsonl

    out = tmp_path / "export"
    shutil.copytree(tiny_export, out)
    train, dev = synthetic_pairs(40, seed=1), synthetic_pairs(8, seed=2)
    Lexicon.from_pairs([(p["nl"], p["code"]) for p in train]).save(out / "lexicon.json")
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "dev.jsonl", dev)
    main(["export", "dev.jsonl", "--beam-size", "3", "--repeats", "2", "--neighbour", "words",
          "--neighbour", "template", "--pairs", "train.jsonl", "--out", "figures.json"])
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["command"].startswith("python -m benchmarks.rerank_weights export dev.jsonl --beam-size 3")
    assert figures["pairs"] == 8 and figures["top_hypothesis"] <= figures["ceiling"] <= 100
    assert set(figures["neighbour"]) == {"words", "template"}
    for key, found in figures["neighbour"].items():
        assert found["grid"]["cross_validated_without_neighbour"] == figures["grid"]["cross_validated"], key
        assert len(found["grid"]["cross_validated"]) == 2
        assert 0 <= found["retrieved_line_right_beyond_ceiling"] <= found["retrieved_line_right"] <= 100


def test_rerank_weights_neighbour_without_training_pairs_names_the_fix(tmp_path, tiny_export, capsys):
    import shutil

    from benchmarks.rerank_weights import main

    from .conftest import synthetic_pairs, write_jsonl

    out = tmp_path / "export"
    shutil.copytree(tiny_export, out)
    data = write_jsonl(tmp_path / "dev.jsonl", synthetic_pairs(3, seed=2))
    with pytest.raises(SystemExit) as exit_info:
        main([str(out), str(data), "--neighbour", "words", "--pairs", str(tmp_path / "missing.jsonl"),
              "--out", str(tmp_path / "figures.json")])
    assert "--neighbour" in str(exit_info.value) and "missing.jsonl" in str(exit_info.value)
    assert not (tmp_path / "figures.json").exists()


def test_rerank_weights_reads_the_reverse_models_scores_from_the_export(monkeypatch, tmp_path, tiny_export):
    import shutil

    import torch

    from benchmarks.rerank_weights import hypotheses
    from nmt.checkpoint import load_model, save_model
    from nmt.decoding.rerank import Lexicon
    from nmt.decoding.translator import REVERSE_FILES
    from nmt.model import Transformer

    from .conftest import synthetic_pairs, write_jsonl

    out = tmp_path / "export"
    shutil.copytree(tiny_export, out)
    pairs = synthetic_pairs(6, seed=4)
    Lexicon.from_pairs([(p["nl"], p["code"]) for p in pairs]).save(out / "lexicon.json")
    data = write_jsonl(tmp_path / "dev.jsonl", pairs)
    assert all(h["reconstruction"] == 0.0 for hyps in hypotheses(out, data, 3) for h in hyps)
    model, cfg = load_model(out / "model.safetensors", out / "config.json")
    torch.manual_seed(2)
    save_model(Transformer(model.cfg, model.vocab_size, model.pad_id), out / REVERSE_FILES[0], out / REVERSE_FILES[1],
               cfg["bos_id"], cfg["eos_id"])
    table = hypotheses(out, data, 3)
    assert len(table) == 6 and all(len(hyps) == 3 for hyps in table)
    assert all(h["reconstruction"] < 0 for hyps in table for h in hyps)  # log-probabilities, computed
    assert all([h["score"] for h in hyps] == sorted((h["score"] for h in hyps), reverse=True) for hyps in table)


def test_rerank_weights_match_tree_counts_a_line_right_by_its_syntax_tree(tmp_path, tiny_export):
    import shutil

    from benchmarks.rerank_weights import MATCHES, hypotheses
    from nmt.decoding.rerank import Lexicon

    from .conftest import synthetic_pairs, write_jsonl

    assert MATCHES["tree"]("f ( 'a' )", 'f ( "a" )') and not MATCHES["tokens"]("f ( 'a' )", 'f ( "a" )')
    assert MATCHES["tokens"]("f (  a )", "f ( a )") and not MATCHES["tree"]("f ( a )", "f ( b )")
    out = tmp_path / "export"
    shutil.copytree(tiny_export, out)
    pairs = synthetic_pairs(6, seed=4)
    Lexicon.from_pairs([(p["nl"], p["code"]) for p in pairs]).save(out / "lexicon.json")
    data = write_jsonl(tmp_path / "dev.jsonl", pairs)
    by_tokens, by_tree = hypotheses(out, data, 3), hypotheses(out, data, 3, match="tree")
    assert [[h["score"] for h in hyps] for hyps in by_tokens] == [[h["score"] for h in hyps] for hyps in by_tree]
    assert all(b["exact"] >= a["exact"] for x, y in zip(by_tokens, by_tree) for a, b in zip(x, y))


def test_rerank_weights_flags_a_best_point_on_the_grids_edge():
    """A best weight at the grid's largest value says the optimum may lie beyond: the grid is too small."""
    from benchmarks.rerank_weights import GRID, edges
    from nmt.decoding.rerank import LexicalWeights

    assert edges(LexicalWeights(missing=1.0, unexplained=1.0, repeated=0.5, reconstruction=0.15)) == []
    assert edges(LexicalWeights(missing=1.0, unexplained=0.0, repeated=0.5,
                                reconstruction=GRID["reconstruction"][-1])) == ["reconstruction"]
    # the recipe's own weights are a grid point, so the grid can only match or beat them
    assert all(value in GRID[name] for name, value in
               {"missing": 1.0, "unexplained": 1.0, "repeated": 0.5, "reconstruction": 0.15}.items())


def test_an_ensemble_steps_with_the_log_of_its_members_mean_probability():
    """Members of different widths, one with copy: two steps, so each member's own cache is the one it grows."""
    from benchmarks.ensemble import Ensemble
    from nmt.config import ModelConfig
    from nmt.model import Transformer

    torch.manual_seed(0)
    members = [Transformer(ModelConfig(d_model=d, n_heads=2, enc_layers=1, dec_layers=layers, d_ff=32, dropout=0.0,
                                       max_len=16, copy=copy), 40, 0).eval()
               for d, layers, copy in ((16, 1, False), (24, 2, True))]
    ensemble = Ensemble(members).eval()
    src = torch.randint(3, 40, (3, 5))
    mask = src != 0
    with torch.no_grad():
        memory, cache = ensemble.encode(src, mask), ensemble.new_cache(src)
        alone = [(m.encode(src, mask), m.new_cache(src)) for m in members]
        for token in (torch.tensor([1, 1, 1]), torch.tensor([7, 8, 9])):
            got = ensemble.decode_step(token, memory, mask, cache)
            probs = [m.decode_step(token, mem, mask, c).float().softmax(-1) for m, (mem, c) in zip(members, alone)]
            torch.testing.assert_close(got, ((probs[0] + probs[1]) / 2).log(), atol=1e-5, rtol=1e-5)
    assert got.shape == (3, 40)


def test_an_ensemble_of_a_model_with_itself_finds_the_models_own_n_best(tiny_export):
    from benchmarks.ensemble import with_members
    from nmt.decoding.translator import Translator

    from .conftest import synthetic_pairs

    texts = [p["nl"] for p in synthetic_pairs(4, seed=3)]
    translator = Translator.from_pretrained(tiny_export, device="cpu")
    alone = translator.translate(texts, beam_size=3, n_best=3)
    translator.model = with_members(translator.model, [(tiny_export / "model.safetensors",
                                                        tiny_export / "config.json")],
                                    translator.tokenizer.placeholder_ids)
    assert len(translator.model.members) == 2
    together = translator.translate(texts, beam_size=3, n_best=3)
    for a, b in zip(alone, together, strict=True):
        assert [text for text, _ in a.n_best] == [text for text, _ in b.n_best]
        assert [score for _, score in a.n_best] == pytest.approx([score for _, score in b.n_best], abs=1e-4)


def test_an_ensemble_member_is_named_weights_colon_config(tmp_path):
    from benchmarks.ensemble import Ensemble, parse_member

    (tmp_path / "w.safetensors").write_bytes(b"")
    (tmp_path / "w.json").write_text("{}")
    assert parse_member(f"{tmp_path}/w.safetensors:{tmp_path}/w.json") == (tmp_path / "w.safetensors",
                                                                           tmp_path / "w.json")
    with pytest.raises(ValueError, match="WEIGHTS.safetensors:CONFIG.json"):
        parse_member(f"{tmp_path}/w.safetensors")
    with pytest.raises(FileNotFoundError, match="missing.json not found"):
        parse_member(f"{tmp_path}/w.safetensors:{tmp_path}/missing.json")
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])
