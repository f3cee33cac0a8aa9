"""nmt.ct2: our Transformer converted to CTranslate2 decodes the same tokens; what it cannot express is refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from nmt.batching import collate, pad, source_ids
from nmt.checkpoint import save_model
from nmt.config import ModelConfig
from nmt.decoding.search import greedy
from nmt.model import Transformer
from nmt.tokenizer import Tokenizer

from .conftest import REPO

ctranslate2 = pytest.importorskip("ctranslate2", reason="CTranslate2 is not installed (`make install` installs it)")

from benchmarks.vs_ctranslate2 import greedy_outputs, reversal_model, reversal_sources
from nmt.ct2 import UnsupportedModelError, convert, score_ids, translate_ids

V, PAD, BOS, EOS = 40, 0, 1, 2


def tiny(positions: str = "sinusoidal", copy: bool = False, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=32, n_heads=4, enc_layers=2, dec_layers=2, d_ff=64, dropout=0.0, positions=positions,
                      max_len=64, copy=copy)
    model = Transformer(cfg, V, PAD)
    if positions == "learned":  # as large as the sinusoidal table's, so a wrong position would show
        torch.nn.init.normal_(model.pos.weight, std=0.5)
    return model.eval()


def random_pairs(n: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 12, (2, n), generator=g).tolist()
    return ([torch.randint(3, V, (k,), generator=g).tolist() for k in lengths[0]],
            [torch.randint(3, V, (k,), generator=g).tolist() for k in lengths[1]])


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_log_probabilities_of_every_target_token_match(tmp_path, positions):
    """Teacher-forced scores of padded batches of mixed lengths: every layer mapped exactly, positions
    included (CTranslate2's own sinusoidal table is OpenNMT-tf's, not ours)."""
    model = tiny(positions)
    out = convert(model, tmp_path / "ct2", BOS, EOS)
    # nn.LayerNorm's epsilon, which activations of this size cannot tell from CTranslate2's default
    assert json.loads((out / "config.json").read_text())["layer_norm_epsilon"] == model.ln_enc.eps == 1e-5
    translator = ctranslate2.Translator(str(out), device="cpu")
    srcs, tgts = random_pairs(24, seed=1)
    b = collate(srcs, tgts, PAD, BOS, EOS, 64)
    with torch.no_grad():
        ours = F.log_softmax(model(b.src, b.src_mask, b.tgt_in), dim=-1).gather(2, b.tgt_out[:, :, None])[:, :, 0]
    theirs = score_ids(translator, [source_ids(s, EOS, 64) for s in srcs], tgts)
    for i, lps in enumerate(theirs):
        assert len(lps) == len(tgts[i]) + 1  # the target's tokens, then EOS
        assert torch.allclose(torch.tensor(lps), ours[i, : len(lps)], atol=1e-4), i


def test_greedy_outputs_of_a_trained_model_are_identical():
    """A model trained to reverse its source: varied outputs of varied lengths ending in EOS, all identical."""
    model = reversal_model(steps=100)
    sources = reversal_sources(64, torch.Generator().manual_seed(1))
    ours, theirs = greedy_outputs(model, sources, max_len=24)
    assert ours == theirs
    assert len({tuple(o) for o in ours}) > 50  # not one degenerate output shared by every source
    assert len({len(o) for o in ours}) > 3 and max(len(o) for o in ours) < 24  # EOS reached, at many lengths


def test_beam_search_runs_and_keeps_the_length_limit(tmp_path):
    model = tiny()
    translator = ctranslate2.Translator(str(convert(model, tmp_path / "ct2", BOS, EOS)), device="cpu")
    srcs, _ = random_pairs(8, seed=2)
    outs = translate_ids(translator, [source_ids(s, EOS, 64) for s in srcs], beam_size=4, max_len=10,
                         min_decoding_length=10)
    assert [len(o) for o in outs] == [10] * 8  # the benchmark's way of forcing equal work
    assert all(0 <= t < V for o in outs for t in o)


def test_a_copy_model_is_refused_naming_the_feature_and_nothing_is_written(tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"model\.copy.*pointer-generator"):
        convert(tiny(copy=True), tmp_path / "ct2", BOS, EOS)
    assert list(tmp_path.iterdir()) == []


def test_the_placeholder_restriction_is_refused_unless_asked_to_drop_it(tmp_path):
    model = tiny()
    model.restrict_to_source([5, 6])
    with pytest.raises(UnsupportedModelError, match="placeholder restriction"):
        convert(model, tmp_path / "ct2", BOS, EOS)
    with pytest.raises(UnsupportedModelError, match="placeholder restriction"):
        convert(tiny(), tmp_path / "ct2", BOS, EOS, placeholder_ids=[5, 6])  # as the tokenizer names them
    assert list(tmp_path.iterdir()) == []
    out = convert(model, tmp_path / "ct2", BOS, EOS, unrestricted=True)
    assert {p.name for p in out.iterdir()} >= {"model.bin", "config.json"}


def test_converting_again_replaces_the_former_model_whole(tmp_path):
    out = tmp_path / "ct2"
    convert(tiny(seed=0), out, BOS, EOS)
    (out / "stale.txt").write_text("from before")
    convert(tiny(seed=1), out, BOS, EOS)
    assert not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ct2"]  # no temporary directory left behind


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nmt.ct2", *args], check=False, cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_cli_converts_an_export_which_then_translates_as_ours(tmp_path, tiny_export):
    """`python -m nmt.ct2 models/export out`: texts through our Translator and through CTranslate2 agree."""
    from nmt import Translator

    proc = run_cli(str(tiny_export), str(tmp_path / "ct2"))
    assert proc.returncode == 0, proc.stderr
    ours = Translator.from_pretrained(tiny_export, device="cpu")
    texts = ["return the sum of x and y", "print value", "set count to total"]
    expected = [t.text for t in ours.translate(texts, beam_size=1, max_len_b=20)]
    translator = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu")
    sources = [source_ids(ids, ours.eos_id, 64) for ids in ours.tokenizer.encode_batch(texts)]
    got = [ours.tokenizer.decode(ids) for ids in translate_ids(translator, sources, beam_size=1, max_len=20)]
    assert got == expected


def test_cli_refuses_a_missing_directory_and_a_copy_model_writing_nothing(tmp_path):
    proc = run_cli(str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert proc.returncode == 2 and "model.safetensors: missing" in proc.stderr
    export = tmp_path / "copy-export"
    export.mkdir()
    save_model(tiny(copy=True), export / "model.safetensors", export / "config.json", BOS, EOS)
    Tokenizer.build(["a b c"], min_freq=1, max_vocab=1000).save(export / "tokenizer.json")
    proc = run_cli(str(export), str(tmp_path / "out"))
    assert proc.returncode == 2 and "model.copy" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_padding_in_a_greedy_batch_changes_nothing(tmp_path):
    """Sources of mixed lengths decoded in one padded batch, ours and CTranslate2's, agree on random weights too."""
    model = tiny(seed=3)
    translator = ctranslate2.Translator(str(convert(model, tmp_path / "ct2", BOS, EOS)), device="cpu")
    srcs, _ = random_pairs(16, seed=3)
    encoded = [source_ids(s, EOS, 64) for s in srcs]
    src = pad(encoded, PAD)
    ours = [h.tokens for h in greedy(model, src, src != PAD, BOS, EOS, 12)]
    assert ours == translate_ids(translator, encoded, beam_size=1, max_len=12)


def test_beam_benchmark_runs_with_fewer_sources_than_it_scores():
    """`benchmarks.vs_ctranslate2` teacher-forces up to 16 sources for its log-probability check; with
    fewer sources it scores those it has instead of failing on mismatched batch sizes."""
    from benchmarks.vs_ctranslate2 import beam_vs_ctranslate2

    out = beam_vs_ctranslate2(repeats=1, steps=2, batch=3, beam=2, batch_sizes=(0,))
    assert 0.0 <= out["ctranslate2_max_logprob_diff"] < 1e-3
    assert out["ours_beam_tok_s"] > 0 and out["ctranslate2_beam_tok_s"] > 0
