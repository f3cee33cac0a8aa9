"""R-Drop (train.rdrop): two dropout passes per batch and the symmetric KL between them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nmt.config import TrainConfig
from nmt.errors import ConfigError
from nmt.params import params_from_dict
from nmt.training.step import batch_loss, lr_factor, make_optimizer, optimizer_step, rdrop_losses

from .test_copy import batch_with_repeats
from .test_model import random_batch, tiny


def symmetric_kl_by_hand(model, b) -> torch.Tensor:
    """1/2 (KL(P1||P2) + KL(P2||P1)) of two separate passes, summed over real target tokens, from
    torch's own kl_div; the same RNG state as rdrop_losses' one doubled pass is not reproducible
    here, so this only checks the formula on two given distributions."""
    torch.manual_seed(7)
    p1 = F.log_softmax(model(b.src, b.src_mask, b.tgt_in).float(), -1)
    p2 = F.log_softmax(model(b.src, b.src_mask, b.tgt_in).float(), -1)
    real = (b.tgt_out != model.pad_id).unsqueeze(-1)
    kl12 = F.kl_div(p2, p1, log_target=True, reduction="none")  # p1 * (log p1 - log p2)
    kl21 = F.kl_div(p1, p2, log_target=True, reduction="none")
    return ((kl12 + kl21) * real).sum() / 2, p1, p2


@pytest.mark.parametrize("copy", [False, True])
def test_without_dropout_the_two_passes_agree_and_the_loss_is_the_plain_one(copy):
    model = tiny(copy=copy, seed=1).eval()  # eval: no dropout, so both copies of the batch are the same pass
    _, _, b = random_batch()
    nll, kl = rdrop_losses(model, b, label_smoothing=0.1)
    torch.testing.assert_close(nll, batch_loss(model, b, label_smoothing=0.1), rtol=1e-5, atol=1e-4)
    assert abs(kl.item()) < 1e-5


@pytest.mark.parametrize("copy", [False, True])
def test_with_dropout_the_kl_is_positive_and_matches_its_definition(copy):
    model = tiny(copy=copy, dropout=0.3, seed=2).train()
    _, _, b = random_batch(n=4)
    _, kl = rdrop_losses(model, b, label_smoothing=0.0)
    assert kl.item() > 0
    # The closed form rdrop_losses uses, on two independent passes, against torch's kl_div.
    expected, p1, p2 = symmetric_kl_by_hand(model, b)
    real = (b.tgt_out != model.pad_id).unsqueeze(-1)
    closed_form = (((p1.exp() - p2.exp()) * (p1 - p2)) * real).sum() / 2
    torch.testing.assert_close(closed_form, expected, rtol=1e-4, atol=1e-5)


def test_gradients_stay_finite_where_copy_probabilities_are_zero():
    """Saturated gates give exact zeros in the copy model's distribution: 0 * (-inf - -inf) must not
    turn the KL into NaN."""
    model = tiny(copy=True, dropout=0.2, seed=3).train()
    _, b = batch_with_repeats()
    with torch.no_grad():
        model.embed.weight.mul_(30.0)
    for bias in (-60.0, 0.0, 60.0):
        with torch.no_grad():
            model.pointer.gate.bias.fill_(bias)
        model.zero_grad()
        nll, kl = rdrop_losses(model, b, label_smoothing=0.1)
        (nll + 2.5 * kl).backward()
        assert torch.isfinite(nll) and torch.isfinite(kl)
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name} (gate bias {bias})"


def _one_step(rdrop: float):
    model = tiny(copy=True, dropout=0.3, seed=4).train()
    _, _, b = random_batch(n=6)
    cfg = TrainConfig(rdrop=rdrop, warmup_steps=0, max_steps=10)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    before = [p.detach().clone() for p in model.parameters()]
    result = optimizer_step(model, [b], optimizer, scheduler, cfg)
    moved = any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    return result, moved


def test_an_rdrop_step_updates_reports_the_kl_and_counts_both_passes():
    plain, plain_moved = _one_step(0.0)
    rdrop, rdrop_moved = _one_step(5.0)
    assert plain_moved and rdrop_moved
    assert plain.rdrop_kl == 0.0 and rdrop.rdrop_kl > 0
    assert rdrop.tokens == plain.tokens  # tokens are the batch's, counted once
    assert rdrop.flops == 2 * plain.flops  # the work is two passes
    assert rdrop.finite


def test_rdrop_is_read_from_params_and_a_negative_weight_is_refused():
    assert params_from_dict({}).train.rdrop == 0.0
    assert params_from_dict({"train": {"rdrop": 5}}).train.rdrop == 5
    with pytest.raises(ConfigError, match="train.rdrop"):
        params_from_dict({"train": {"rdrop": -1.0}})
