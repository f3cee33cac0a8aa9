"""train.ema_decay: the best checkpoint holds the moving average of the weights, computed as documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nmt.layout import TrainLayout as Paths
from nmt.model import Transformer
from nmt.params import params_from_dict
from nmt.stages.train import train
from nmt.tokenizer import Tokenizer
from nmt.training.ema import EMA
from nmt.training.loop import seed_everything

from .conftest import tokenized_data

DECAY = 0.2  # below the warm-up's 3/12 at the second update, so both branches of min() are used


def params(max_steps: int, ema_decay: float):
    return params_from_dict({
        "seed": 7,
        "model": {"d_model": 16, "n_heads": 2, "enc_layers": 1, "dec_layers": 1, "d_ff": 32, "dropout": 0.0,
                  "max_len": 32},
        "train": {"max_steps": max_steps, "eval_every": max_steps, "batch_tokens": 400, "warmup_steps": 2,
                  "lr": 1e-2, "eval_max_len": 4, "eval_examples": 4, "threads": 1, "ema_decay": ema_decay},
        "mlflow": {"enabled": False},
    })


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tokenized_data(tmp_path_factory.mktemp("ema"), (60, 6, 6))


def saved_weights(data: Path, out: Path, max_steps: int, ema_decay: float) -> dict[str, torch.Tensor]:
    paths = Paths(data=data, models=out / "models", metrics=out / "metrics", plots=out / "plots")
    train(params(max_steps, ema_decay), paths)
    return load_file(str(paths.best_weights))


def test_the_saved_checkpoint_is_the_hand_computed_moving_average(data, tmp_path):
    p = params(3, 0.0)
    seed_everything(p.seed)  # train() builds its model right after seeding, as here
    tok = Tokenizer.load(data / "vocab.json")
    initial = {k: v.detach().clone() for k, v in Transformer(p.model, tok.vocab_size, tok.pad_id).state_dict().items()}
    raw = [initial] + [saved_weights(data, tmp_path / f"raw{k}", k, 0.0) for k in (1, 2, 3)]
    averaged = saved_weights(data, tmp_path / "ema", 3, DECAY)

    expected = {k: v.double() for k, v in raw[0].items()}
    for t in (1, 2, 3):
        d = min(DECAY, (1 + t) / (10 + t))
        expected = {k: d * expected[k] + (1 - d) * raw[t][k].double() for k in expected}
    assert averaged.keys() == expected.keys()
    for k in expected:
        assert averaged[k].dtype == torch.float32
        torch.testing.assert_close(averaged[k].double(), expected[k], rtol=1e-5, atol=1e-6)
    moved = [k for k in expected if not torch.equal(averaged[k], raw[3][k])]
    assert len(moved) > len(expected) // 2  # the average is not the trained weights


def test_ema_is_float32_and_leaves_the_training_weights_alone():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    ema = EMA(model, 0.5)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # d_1 = min(0.5, 2 / 11)
    d = 2 / 11
    assert ema.model.weight.dtype == torch.float32 and not ema.model.weight.requires_grad
    torch.testing.assert_close(ema.model.weight.double(), d * before + (1 - d) * model.weight.detach(),
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model.weight.detach(), before + 1.0)
    with pytest.raises(ValueError):
        EMA(model, 1.0)
