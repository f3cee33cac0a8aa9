"""The pointer-generator (model.copy): a normalized mixture, masks, the cache, decoding, learning to copy."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from nmt.batching import collate
from nmt.checkpoint import load_model, save_model
from nmt.config import ModelConfig
from nmt.decoding.search import beam_search, greedy, sample
from nmt.device import torch_threads
from nmt.errors import ModelFileError
from nmt.model import Transformer
from nmt.params import params_from_dict
from nmt.training.step import batch_loss

from .test_model import BOS, EOS, PAD, V, random_batch, tiny


def batch_with_repeats():
    """Sources that hold an id more than once (its copy mass must be counted once, summed)."""
    srcs = [[5, 6, 5, 7, 5], [8, 9, 9], [10, 11, 12, 13, 14, 15, 16]]
    tgts = [[5, 7, 6], [9, 8, 30, 9], [16]]
    return srcs, collate(srcs, tgts, PAD, BOS, EOS, 64)


def dense_reference(model: Transformer, b) -> torch.Tensor:
    """p_gen * softmax(logits) + (1 - p_gen) * copy, in float64 probability space: (B, T, V)."""
    memory = model.encode(b.src, b.src_mask)
    h = model.ln_dec(_decoder_states(model, b.tgt_in, memory, b.src_mask))
    pointer = model.pointer
    attn = pointer.attention(h, pointer.keys(memory), b.src_mask).double()  # (B, T, S)
    p_gen = torch.sigmoid(pointer.gate_logit(h, attn.float(), memory).double())  # (B, T, 1)
    B, T, _ = h.shape
    copy = torch.zeros(B, T, V, dtype=torch.float64).scatter_add_(2, b.src[:, None, :].expand(B, T, -1), attn)
    return p_gen * model.logits(h).double().softmax(-1) + (1 - p_gen) * copy


def _decoder_states(model: Transformer, tgt_in, memory, src_mask) -> torch.Tensor:
    x = model.embed_tokens(tgt_in)
    for layer in model.decoder:
        x = layer(x, memory, src_mask[:, None, None, :])
    return x


# --------------------------------------------------------------------------- the distribution
def test_copy_option_is_read_from_params():
    assert params_from_dict({}).model.copy is ModelConfig().copy  # the declared default
    assert params_from_dict({"model": {"copy": True}}).model.copy is True
    assert params_from_dict({"model": {"copy": False}}).model.copy is False
    assert tiny().pointer is None and tiny(copy=True).pointer is not None


def test_copy_model_outputs_a_normalized_distribution_equal_to_the_dense_mixture():
    model = tiny(copy=True, seed=3)
    _, b = batch_with_repeats()
    with torch.no_grad():
        logp = model(b.src, b.src_mask, b.tgt_in)  # (B, T, V)
        reference = dense_reference(model, b)
    assert logp.dtype == torch.float32
    torch.testing.assert_close(logp.logsumexp(-1), torch.zeros(logp.shape[:2]), atol=1e-5, rtol=0)
    torch.testing.assert_close(logp.double().exp(), reference, atol=1e-6, rtol=1e-4)
    # the copy part is not negligible here, so the test can see a wrong copy distribution
    generator_only = model.logits(model.ln_dec(_decoder_states(
        model, b.tgt_in, model.encode(b.src, b.src_mask), b.src_mask))).log_softmax(-1)
    assert (logp - generator_only).abs().max() > 0.1


def test_padded_source_positions_get_no_copy_mass():
    model = tiny(copy=True, seed=1)
    _, b = batch_with_repeats()
    assert (~b.src_mask).any()
    with torch.no_grad():
        memory = model.encode(b.src, b.src_mask)
        h = model.ln_dec(_decoder_states(model, b.tgt_in, memory, b.src_mask))
        attn = model.pointer.attention(h, model.pointer.keys(memory), b.src_mask)  # (B, T, S)
        assert (attn.masked_select(~b.src_mask[:, None, :]) == 0).all()
        # ids that stand only at padded positions get exactly the generator's probability
        garbage = b.src.masked_fill(~b.src_mask, 33)  # 33 is in no source
        logp = model(garbage, b.src_mask, b.tgt_in)
        generated = F.logsigmoid(model.pointer.gate_logit(h, attn, memory)) + model.logits(h).log_softmax(-1)
    torch.testing.assert_close(logp[..., 33], generated[..., 33])


def test_gradients_are_finite_with_label_smoothing_and_saturated_gates():
    model = tiny(copy=True, seed=2).train()
    _, b = batch_with_repeats()
    with torch.no_grad():
        model.embed.weight.mul_(30.0)  # logits hundreds apart: most tokens get softmax probability ~0
    for bias in (-60.0, 0.0, 60.0):  # p_gen ~ 0 (copy only), 1/2, ~ 1 (generate only)
        with torch.no_grad():
            model.pointer.gate.bias.fill_(bias)
        model.zero_grad()
        loss = batch_loss(model, b, label_smoothing=0.1)
        loss.backward()
        assert torch.isfinite(loss)
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name} (gate bias {bias})"
    assert model.pointer.q.weight.grad.abs().sum() > 0  # the copy attention learns


def test_copy_model_needs_the_source_ids():
    model = tiny(copy=True)
    _, _, b = random_batch()
    memory = model.encode(b.src, b.src_mask)
    with pytest.raises(ValueError, match="source ids"):
        model.new_cache()
    with pytest.raises(ValueError, match="source ids"):
        model.decode(b.tgt_in, memory, b.src_mask)


def test_the_cache_carries_source_ids_and_copy_keys_through_select_cache():
    model = tiny(copy=True)
    _, _, b = random_batch()
    memory = model.encode(b.src, b.src_mask)
    cache = model.new_cache(b.src)
    with torch.no_grad():
        model.decode_step(torch.full((b.src.size(0),), BOS), memory, b.src_mask, cache)
    assert len(cache) == len(model.decoder) + 1 and set(cache[-1]) == {"src", "copy_k"}
    order = torch.tensor([3, 0, 3])
    picked = model.select_cache(cache, order)
    assert torch.equal(picked[-1]["src"], b.src[order])
    torch.testing.assert_close(picked[-1]["copy_k"], cache[-1]["copy_k"][order])


# --------------------------------------------------------------------------- checkpoints
def test_copy_checkpoint_round_trips_and_old_configs_load_without_the_key(tmp_path):
    model = tiny(copy=True, seed=4)
    save_model(model, tmp_path / "m.safetensors", tmp_path / "m.json", BOS, EOS)
    assert json.loads((tmp_path / "m.json").read_text())["model"]["copy"] is True
    loaded, config = load_model(tmp_path / "m.safetensors", tmp_path / "m.json")
    assert config["model"].copy is True
    _, _, b = random_batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(b.src, b.src_mask, b.tgt_in), model(b.src, b.src_mask, b.tgt_in))

    # a config written before model.copy existed: no key, a plain model
    plain = tiny(seed=4)
    save_model(plain, tmp_path / "p.safetensors", tmp_path / "p.json", BOS, EOS)
    raw = json.loads((tmp_path / "p.json").read_text())
    del raw["model"]["copy"]
    (tmp_path / "p.json").write_text(json.dumps(raw))
    loaded, config = load_model(tmp_path / "p.safetensors", tmp_path / "p.json")
    assert config["model"].copy is False and loaded.pointer is None

    # copy weights under a config without copy: the extra tensors are named, not silently dropped
    with pytest.raises(ModelFileError, match="pointer"):
        load_model(tmp_path / "m.safetensors", tmp_path / "p.json")


# --------------------------------------------------------------------------- learning to copy
N_SEEN, N_IDS = 500, 600  # training uses ids 3..499 only; ids 500..599 are never seen in training


def random_sequences(g: torch.Generator, n: int, low: int, high: int) -> list[list[int]]:
    return [torch.randint(low, high, (int(torch.randint(3, 7, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def train_copy_task(copy: bool, steps: int = 400, seed: int = 0) -> Transformer:
    """Target = source, random ids from 3..499, fresh batches, the training loss of nmt.training.loop (~2 s)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, d_ff=64, dropout=0.0, max_len=16, copy=copy)
    model = Transformer(cfg, N_IDS, PAD)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed + 1)
    with torch_threads(1):
        for _ in range(steps):
            seqs = random_sequences(g, 32, 3, N_SEEN)
            b = collate(seqs, seqs, PAD, BOS, EOS, 16)
            loss = batch_loss(model, b, label_smoothing=0.1) / b.n_tokens
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def held_out_sequences(n: int = 64) -> list[list[int]]:
    """Seen ids with, at random positions, ids never seen in training (like names in a description)."""
    g = torch.Generator().manual_seed(99)
    seqs = random_sequences(g, n, 3, N_SEEN)
    for s in seqs:
        new = torch.rand(len(s), generator=g) < 0.4
        new[int(torch.randint(len(s), (1,), generator=g))] = True  # at least one per sequence
        for i in new.nonzero().squeeze(1).tolist():
            s[i] = int(torch.randint(N_SEEN, N_IDS, (1,), generator=g))
    return seqs


def token_accuracy(model: Transformer, seqs: list[list[int]]) -> tuple[float, float]:
    """Teacher-forced argmax accuracy on (seen-id targets, never-seen-id targets); nan where there are none."""
    b = collate(seqs, seqs, PAD, BOS, EOS, 16)
    with torch.no_grad():
        right = model(b.src, b.src_mask, b.tgt_in).argmax(-1) == b.tgt_out
    seen = (b.tgt_out != PAD) & (b.tgt_out != EOS) & (b.tgt_out < N_SEEN)
    unseen = b.tgt_out >= N_SEEN
    return right[seen].float().mean().item(), right[unseen].float().mean().item()


@pytest.fixture(scope="module")
def copier() -> Transformer:
    return train_copy_task(copy=True)


def test_only_the_copy_model_reproduces_ids_never_seen_in_training(copier):
    plain = train_copy_task(copy=False)
    # both learned the task on new sequences of the ids they saw ...
    seen_only = random_sequences(torch.Generator().manual_seed(98), 64, 3, N_SEEN)
    assert token_accuracy(copier, seen_only)[0] > 0.9 and token_accuracy(plain, seen_only)[0] > 0.9
    # ... but only copying can emit an id whose embedding never was a training target
    seqs = held_out_sequences()
    copy_unseen, plain_unseen = token_accuracy(copier, seqs)[1], token_accuracy(plain, seqs)[1]
    assert copy_unseen > 0.75, copy_unseen  # 0.94 here; 0.87-0.96 over training seeds 0-3
    assert plain_unseen < 0.05, plain_unseen


def test_greedy_beam_and_sampling_on_a_copy_model_copy_and_stop_at_eos(copier):
    # different lengths, so sources finish at different steps and leave the batch (select_cache)
    seqs = [[3, 17, 420], [250, 260, 270, 280, 290, 300], [42, 43, 44, 45]]
    b = collate(seqs, seqs, PAD, BOS, EOS, 16)
    assert [h.tokens for h in greedy(copier, b.src, b.src_mask, BOS, EOS, 12)] == seqs
    beams = beam_search(copier, b.src, b.src_mask, BOS, EOS, 12, beam_size=3, n_best=2)
    assert [n_best[0].tokens for n_best in beams] == seqs
    assert all(len(n_best) == 2 and n_best[0].score >= n_best[1].score for n_best in beams)
    samples = sample(copier, b.src, b.src_mask, BOS, EOS, 12, top_k=1, n_samples=2,
                     generator=torch.Generator().manual_seed(0))
    assert [[h.tokens for h in hyps] for hyps in samples] == [[s, s] for s in seqs]
    drawn = sample(copier, b.src, b.src_mask, BOS, EOS, 12, n_samples=3, generator=torch.Generator().manual_seed(0))
    assert all(len(h.tokens) < 12 for hyps in drawn for h in hyps)  # every sample ended with EOS
