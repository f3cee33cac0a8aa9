"""The reverse model (code -> description) and its reconstruction score in reranking."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from nmt.checkpoint import load_model, save_model
from nmt.cli import app
from nmt.config import MlflowConfig, ModelConfig, Params, ReverseConfig, TrainConfig
from nmt.data.tokenized import TokenizedSplit
from nmt.decoding import search as search_module
from nmt.decoding.reconstruction import reconstruction_scores
from nmt.decoding.rerank import LexicalWeights, Lexicon, rerank_candidates
from nmt.decoding.search import Hypothesis
from nmt.decoding.translator import REVERSE_FILES, Translator
from nmt.errors import ConfigError, ModelFileError
from nmt.layout import TrainLayout as Paths
from nmt.model import Transformer
from nmt.params import params_from_dict
from nmt.stages import train as train_stage
from nmt.stages.tokenize import tokenize_dataset
from nmt.stages.train import train_reverse
from nmt.tokenizer import Tokenizer
from nmt.training import loop as train_module

from .conftest import plain_tokenize, synthetic_pairs, tokenized_data, write_jsonl

TINY_MODEL = ModelConfig(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, d_ff=64, dropout=0.0, max_len=64,
                         copy=False)


# ---------------------------------------------------------------------- the score
@pytest.mark.parametrize("copy", [False, True])
def test_reconstruction_is_the_teacher_forced_log_probability_whatever_the_batch(copy):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**{**vars(TINY_MODEL), "copy": copy}), vocab_size=40, pad_id=0).eval()
    bos, eos = 1, 2
    pairs = [([5, 6, 7], [8, 9]), ([10], [11, 12, 13, 14]), ([15, 16, 17, 18, 19], [20])]
    together = reconstruction_scores(model, pairs, bos, eos)
    alone = [reconstruction_scores(model, [p], bos, eos)[0] for p in pairs]
    assert together == pytest.approx(alone, abs=1e-5)  # padding in a batch changes nothing
    code, description = pairs[1]
    with torch.no_grad():
        scores = model(torch.tensor([code + [eos]]), torch.ones(1, len(code) + 1, dtype=torch.bool),
                       torch.tensor([[bos] + description]))  # (1, T, V)
    logp = torch.log_softmax(scores, -1)[0]
    expected = sum(logp[t, token].item() for t, token in enumerate(description + [eos]))
    assert together[1] == pytest.approx(expected, abs=1e-5)


def test_the_reconstruction_weight_reorders_valid_candidates_only():
    lexicon = Lexicon.from_pairs([("set x to 1", "x = 1")])
    candidates = [("x = 1", -0.1), ("x = 2", -0.2), ("x = (", -0.05)]
    rec = [-9.0, -1.0, 0.0]
    plain = rerank_candidates(candidates, "lexical", "set x", lexicon, LexicalWeights())
    assert [c[0] for c in plain] == ["x = 1", "x = 2", "x = ("]
    weighted = rerank_candidates(candidates, "lexical", "set x", lexicon, LexicalWeights(reconstruction=1.0), rec)
    assert [c[0] for c in weighted] == ["x = 2", "x = 1", "x = ("]  # invalid Python stays last
    assert dict(weighted) == dict(candidates)  # the model's own scores come back
    with pytest.raises(ValueError, match="one reconstruction score per candidate"):
        rerank_candidates(candidates, "lexical", "set x", lexicon, LexicalWeights(reconstruction=1.0))


# ---------------------------------------------------------------------- training it
def test_a_swapped_split_exchanges_description_and_code():
    split = TokenizedSplit.from_arrays(([1, 2, 3], [0, 1, 3]), ([4, 5, 6, 7], [0, 3, 4]), vocab_size=10)
    swapped = split.swapped()
    assert [swapped.src(i).tolist() for i in range(2)] == [[4, 5, 6], [7]]
    assert [swapped.tgt(i).tolist() for i in range(2)] == [[1], [2, 3]]


def reverse_params(steps: int) -> Params:
    return Params(model=TINY_MODEL, train=TrainConfig(max_steps=500, batch_tokens=400, warmup_steps=2, eval_every=3,
                                                     eval_max_len=8, threads=1),
                  reverse=ReverseConfig(max_steps=steps, eval_examples=4), mlflow=MlflowConfig(enabled=False))


def test_the_reverse_model_trains_on_code_to_description_for_its_own_steps(tmp_path, monkeypatch):
    data = tokenized_data(tmp_path, (40, 6, 6))
    forward = TokenizedSplit.load(data / "train.safetensors")
    seen = []
    real = train_module.Batches
    monkeypatch.setattr(train_module, "Batches", lambda split, *a: seen.append(split) or real(split, *a))
    out = tmp_path / "reverse"
    paths = Paths(data=data, models=out, metrics=out, plots=out, resume_root=tmp_path / "resume")
    summary = train_reverse(reverse_params(4), paths)
    assert seen[0].src(0).tolist() == forward.tgt(0).tolist() and seen[0].tgt(0).tolist() == forward.src(0).tolist()
    assert summary["steps"] == 4  # reverse.max_steps, not train.max_steps
    assert (out / "train_curve.csv").read_text().count("\n") == 2  # header + one evaluation, at the last step
    assert (out / "best.safetensors").is_file() and not (out / "README.md").exists()
    assert not (tmp_path / "resume").exists() or not any((tmp_path / "resume").rglob("*.pt"))


def test_the_reverse_model_of_a_neighbour_reading_model_writes_the_description_alone(tmp_path, monkeypatch):
    for split, n, seed in zip(("train", "dev", "test"), (40, 6, 6), (0, 1, 2)):
        write_jsonl(tmp_path / "raw" / f"{split}.jsonl", synthetic_pairs(n, seed))
    tokenize_dataset(tmp_path / "raw", tmp_path / "tokenized", plain_tokenize(min_freq=1, neighbour_code=True))
    forward = TokenizedSplit.load(tmp_path / "tokenized" / "train.safetensors")
    eos = Tokenizer.load(tmp_path / "tokenized" / "vocab.json").eos_id
    assert eos in forward.src(0).tolist()  # description, EOS, the neighbour's code
    seen = []
    real = train_module.Batches
    monkeypatch.setattr(train_module, "Batches", lambda split, *a: seen.append(split) or real(split, *a))
    out = tmp_path / "reverse"
    train_reverse(reverse_params(2), Paths(data=tmp_path / "tokenized", models=out, metrics=out, plots=out,
                                           resume_root=tmp_path / "resume"))
    for i in range(len(forward)):
        description = forward.src(i).tolist()
        assert seen[0].tgt(i).tolist() == description[: description.index(eos)]
        assert seen[0].src(i).tolist() == forward.tgt(i).tolist()


def test_the_reverse_model_has_its_own_batch_and_rdrop_not_the_forward_models(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(train_stage, "train", lambda params, paths, reverse: seen.append(params.train) or {})
    forward = replace(reverse_params(3).train, rdrop=1.0, batch_tokens=200)
    paths = Paths(models=tmp_path, metrics=tmp_path, plots=tmp_path)
    train_reverse(replace(reverse_params(3), train=forward), paths)  # reverse.batch_tokens 0: the train section's
    train_reverse(replace(reverse_params(3), train=forward,
                          reverse=ReverseConfig(max_steps=3, batch_tokens=400, rdrop=0.5)), paths)
    assert [(c.batch_tokens, c.rdrop, c.max_steps) for c in seen] == [(200, 0.0, 3), (400, 0.5, 3)]
    assert all(c.lr == forward.lr and c.schedule == forward.schedule for c in seen)


def test_zero_reverse_steps_write_a_readme_and_leave_no_stale_model(tmp_path):
    out = tmp_path / "reverse"
    out.mkdir()
    (out / "best.safetensors").write_text("old")
    (out / "best.json").write_text("old")
    train_reverse(reverse_params(0), Paths(models=out, metrics=out, plots=out))
    assert sorted(p.name for p in out.iterdir()) == ["README.md"]


def test_a_reconstruction_weight_needs_lexical_reranking_and_a_reverse_model():
    with pytest.raises(ConfigError) as e:
        params_from_dict({"evaluate": {"rerank": "syntax", "rerank_reconstruction": 0.1}})
    assert "set evaluate.rerank: lexical" in str(e.value) and "reverse.max_steps > 0" in str(e.value)
    params_from_dict({"evaluate": {"rerank": "lexical", "rerank_reconstruction": 0.1}, "reverse": {"max_steps": 5}})


# ---------------------------------------------------------------------- through the Translator and the CLI
@pytest.fixture()
def reverse_export(tmp_path, tiny_export):
    """tiny_export with a lexicon and a reverse model (random weights, another seed)."""
    out = tmp_path / "export"
    shutil.copytree(tiny_export, out)
    pairs = [(p["nl"], p["code"]) for p in synthetic_pairs(20, seed=0)]
    Lexicon.from_pairs(pairs).save(out / "lexicon.json")
    model, cfg = load_model(out / "model.safetensors", out / "config.json")
    torch.manual_seed(1)
    save_model(Transformer(model.cfg, model.vocab_size, model.pad_id), out / REVERSE_FILES[0], out / REVERSE_FILES[1],
               cfg["bos_id"], cfg["eos_id"])
    return out


def test_translate_adds_the_weighted_reconstruction_score(monkeypatch, reverse_export):
    t = Translator.from_pretrained(reverse_export, device="cpu")
    assert t.reverse is not None and not t.reverse.training
    outputs = ["x = 1", "y = 2", "z = 3"]

    def beam_search(model, src, src_mask, bos_id, eos_id, max_len, beam_size, alpha, n_best, constraint=None):
        return [[Hypothesis(t.tokenizer.encode(s), -0.01 * i) for i, s in enumerate(outputs)][:n_best]]

    monkeypatch.setattr(search_module, "beam_search", beam_search)
    nl = "set x to 1"
    source = t.tokenizer.encode(nl)
    rec = reconstruction_scores(t.reverse, [(t.tokenizer.encode(s), source) for s in outputs], t.bos_id, t.eos_id)
    assert len(set(rec)) == 3
    t.defaults = replace(t.defaults, rerank="lexical", rerank_missing=0.0, rerank_unexplained=0.0,
                         rerank_repeated=0.0)
    assert t.translate([nl], beam_size=3)[0].text == "x = 1"  # weight 0: the beam's order
    t.defaults = replace(t.defaults, rerank_reconstruction=1000.0)
    assert t.translate([nl], beam_size=3)[0].text == outputs[max(range(3), key=rec.__getitem__)]


def test_reconstruction_without_a_reverse_model_fails_before_decoding(tmp_path, reverse_export):
    for name in REVERSE_FILES:
        (reverse_export / name).unlink()
    t = Translator.from_pretrained(reverse_export, device="cpu")
    t.defaults = replace(t.defaults, rerank="lexical", rerank_reconstruction=0.5)
    with pytest.raises(ModelFileError, match="reverse model"):
        t.translate(["x"], beam_size=2)


def test_half_a_reverse_model_is_refused_naming_both_files(reverse_export):
    (reverse_export / REVERSE_FILES[1]).unlink()
    with pytest.raises(ModelFileError, match="reverse.safetensors and reverse.json"):
        Translator.from_pretrained(reverse_export, device="cpu")
    result = CliRunner().invoke(app, ["generate", "--model", str(reverse_export), "x"])
    assert result.exit_code == 2 and "reverse.json" in result.output and "Traceback" not in result.output


def test_reranked_batches_keep_every_input_in_its_place(reverse_export):
    """More inputs than one batch holds: each output is the one its input gets alone."""
    t = Translator.from_pretrained(reverse_export, device="cpu")
    t.defaults = replace(t.defaults, rerank="lexical", rerank_reconstruction=0.5)
    texts = [p["nl"] for p in synthetic_pairs(7, seed=5)]
    together = t.translate(texts, beam_size=3, max_len_b=6, batch_size=2)
    alone = [t.translate([x], beam_size=3, max_len_b=6)[0] for x in texts]
    assert [r.text for r in together] == [r.text for r in alone]
    assert all(r.reconstruction is not None and len(r.reconstruction) == 1 for r in together)
