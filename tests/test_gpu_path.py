"""The training step's GPU path: precision (autocast, fp16 loss scaling), torch.compile, pinned
batches, and the FLOP/s / MFU report. What runs on a CPU is tested here on the CPU (bf16 autocast,
a GradScaler driven on CPU tensors); the CUDA runs are skipped without a GPU. A compiled run is
CUDA-only: compiling the model cold on a 2-core CPU takes about two minutes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nmt.batching import collate
from nmt.config import Params, TrainConfig
from nmt.device import torch_threads
from nmt.errors import ConfigError
from nmt.flops import train_step_flops
from nmt.layout import TrainLayout as Paths
from nmt.model import Transformer
from nmt.params import params_from_dict
from nmt.stages.train import train as train_model
from nmt.training import loop as loop_module
from nmt.training import resume
from nmt.training import step as step_module
from nmt.training.distributed import Dist
from nmt.training.loop import TrainingDiverged
from nmt.training.precision import Precision, PrecisionError, resolve_precision
from nmt.training.stream import Batches, RankSlices

from .conftest import TINY, tokenized_data

CPU = torch.device("cpu")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
QUICK = {"max_steps": 12, "eval_every": 6, "checkpoint_every": 1000, "warmup_steps": 4}


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory) -> Path:
    return tokenized_data(tmp_path_factory.mktemp("gpu_path"), (120, 12, 12))


def tiny_params(**train) -> Params:
    return params_from_dict({"seed": 0, "model": TINY["model"], "train": {**TINY["train"], **QUICK, **train},
                             "mlflow": {"enabled": False}})


def train_tiny(tokenized: Path, out: Path, **train) -> dict:
    paths = Paths(data=tokenized, models=out / "models", metrics=out / "metrics", plots=out / "plots")
    return train_model(tiny_params(**train), paths)


def assert_trained(out: Path, summary: dict) -> None:
    """Finite losses, a sane FLOP/s report on disk, and float32 weights whatever the precision."""
    written = json.loads((out / "metrics/train.json").read_text())
    facts = json.loads((out / "models/train_run.json").read_text())
    assert {**written, **facts} == summary and not set(written) & set(facts)  # measurements apart from facts
    rows = (out / "metrics/train_curve.csv").read_text().splitlines()[1:]
    assert rows and all(math.isfinite(float(v)) for row in rows for v in row.split(",")[1:3])  # train, dev loss
    assert summary["train_flops_per_s"] > 0 and summary["peak_flops"] > 0
    assert 0 < summary["mfu"] <= 1
    assert summary["mfu"] == pytest.approx(summary["train_flops_per_s"] / summary["peak_flops"], rel=1e-3)
    weights = load_file(out / "models/best.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}
    assert all(torch.isfinite(t).all() for t in weights.values())


# --------------------------------------------------------------------------- precision, on the CPU
def test_torch_threads_sets_the_count_for_the_body_and_restores_it_also_on_an_error():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="inside"), torch_threads(1):
        raise ValueError("inside")
    assert torch.get_num_threads() == before


def test_auto_and_fp32_are_plain_float32_on_the_cpu():
    assert resolve_precision("auto", CPU) is None and resolve_precision("fp32", CPU) is None
    p = Precision.of("auto", CPU)
    assert p.name == "fp32" and p.scaler is None and p.compute_dtype == torch.float32


def test_bf16_autocasts_on_the_cpu():
    assert resolve_precision("bf16", CPU) == torch.bfloat16
    p = Precision.of("bf16", CPU)
    assert p.name == "bf16" and p.scaler is None  # bf16 has fp32's range: nothing to scale
    with p.autocast():
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16


def test_bf16_on_a_cpu_without_bf16_instructions_warns_how_to_go_back_to_fp32(tmp_path, monkeypatch, capsys):
    from nmt.training import precision

    flags = tmp_path / "cpuinfo"
    flags.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: fpu sse2\n")
    assert precision.cpu_has_bf16(flags) is False
    flags.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert precision.cpu_has_bf16(flags) is True
    flags.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")  # aarch64
    assert precision.cpu_has_bf16(flags) is True
    assert precision.cpu_has_bf16(tmp_path / "absent") is None  # not Linux: unknown, no warning

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert Precision.of("bf16", torch.device("cpu")).dtype == torch.bfloat16  # it still runs
    assert "train.precision: fp32" in capsys.readouterr().err
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    Precision.of("bf16", torch.device("cpu"))
    Precision.of("fp32", torch.device("cpu"))
    assert capsys.readouterr().err == ""


def test_fp16_on_the_cpu_is_refused_naming_the_param(tokenized, tmp_path):
    with pytest.raises(PrecisionError, match="train.precision") as e:
        resolve_precision("fp16", CPU)
    assert "bf16" in str(e.value)  # and says what runs instead
    with pytest.raises(PrecisionError, match="train.precision"):
        train_tiny(tokenized, tmp_path, precision="fp16", device="cpu")
    assert not (tmp_path / "models").exists()  # refused before any work


def test_new_train_params_are_validated():
    params = params_from_dict({"train": {"precision": "bf16", "compile": True}})
    assert params.train.precision == "bf16" and params.train.compile is True
    assert params_from_dict({}).train.precision == "auto" and params_from_dict({}).train.compile is False
    with pytest.raises(ConfigError) as e:
        params_from_dict({"train": {"precision": "fp8", "compile": "yes"}})
    assert sorted(p.split(":")[0] for p in e.value.problems) == ["train.compile", "train.precision"]


# --------------------------------------------------------------------------- the step
def tiny_model_and_batches(n: int) -> tuple[Transformer, list]:
    torch.manual_seed(0)
    cfg = params_from_dict({"model": TINY["model"]}).model
    model = Transformer(cfg, 50, 0)
    pairs = [([5 + i % 7] * (3 + i), [6 + i % 5] * (2 + 2 * i)) for i in range(n)]
    return model, [collate([s], [t], 0, 1, 2, cfg.max_len) for s, t in pairs]


def test_a_step_counts_the_model_flops_of_each_micro_batch():
    model, micro = tiny_model_and_batches(3)
    optimizer = step_module.make_optimizer(model, TrainConfig())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    result = step_module.optimizer_step(model, micro, optimizer, scheduler, TrainConfig())
    expected = sum(train_step_flops(model.cfg, 50, b.src.size(0), b.src.size(1), b.tgt_in.size(1)) for b in micro)
    assert result.flops == expected and result.finite and not result.overflow


class GradBomb(torch.autograd.Function):
    """Identity forward, inf gradient: a finite loss whose gradients overflow, as fp16's can."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def test_a_scaler_overflow_skips_the_update_and_lowers_the_scale(monkeypatch):
    model, micro = tiny_model_and_batches(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = step_module.make_optimizer(model, TrainConfig())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    scaled = Precision(scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))
    real = step_module.batch_loss
    monkeypatch.setattr(step_module, "batch_loss", lambda *a: GradBomb.apply(real(*a)))
    result = step_module.optimizer_step(model, micro, optimizer, scheduler, TrainConfig(),
                                         precision=scaled)
    assert result.overflow and math.isfinite(result.loss) and not result.finite
    assert scaled.scaler.get_scale() == 512.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no update


def test_scaler_overflows_are_not_bad_steps_but_nan_losses_still_are(tokenized, tmp_path, monkeypatch):
    """Six overflowing steps in a row, max_bad_steps 3: fine with a GradScaler, fatal without."""
    calls = {"n": 0}
    real = step_module.batch_loss

    def bombs(model, batch, smoothing):
        loss = real(model, batch, smoothing)
        if not torch.is_grad_enabled():  # dev evaluation
            return loss
        calls["n"] += 1
        return GradBomb.apply(loss) if 3 <= calls["n"] <= 8 else loss

    monkeypatch.setattr(step_module, "batch_loss", bombs)
    monkeypatch.setattr(Precision, "of", classmethod(
        lambda cls, name, device: cls(scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))))
    summary = train_tiny(tokenized, tmp_path / "scaled", max_bad_steps=3)
    assert summary["scaler_skipped_steps"] == 6 and summary["skipped_steps"] == 0 and summary["steps"] == 12

    monkeypatch.undo()
    calls["n"] = 0
    monkeypatch.setattr(step_module, "batch_loss", bombs)
    with pytest.raises(TrainingDiverged, match="3 consecutive steps"):
        train_tiny(tokenized, tmp_path / "unscaled", max_bad_steps=3)


def test_the_scaler_state_round_trips_through_a_resume_checkpoint(tmp_path):
    saved = Precision(scaler=torch.amp.GradScaler("cpu"))
    saved.load_state_dict({**saved.state_dict(), "scale": 1234.0, "_growth_tracker": 7})
    path = tmp_path / "state.pt"
    resume.save_state(path, {"fingerprint": {}, "scaler": saved.state_dict()})
    state = resume.load_state(path, {})  # weights_only: the scaler state is plain numbers
    restored = Precision(scaler=torch.amp.GradScaler("cpu"))
    restored.load_state_dict(state["scaler"])
    assert restored.scaler.get_scale() == 1234.0 and restored.state_dict() == saved.state_dict()
    unscaled = Precision()  # fp32/bf16: nothing saved, nothing restored
    assert unscaled.state_dict() is None
    unscaled.load_state_dict(state["scaler"])
    fresh = Precision(scaler=torch.amp.GradScaler("cpu"))
    fresh.load_state_dict(None)  # a checkpoint of a run without a scaler
    assert fresh.scaler.get_scale() == 2.0**16


def test_the_compiled_wrapper_unwraps_to_the_eager_module():
    model, _ = tiny_model_and_batches(1)
    assert step_module.unwrap(torch.compile(model)) is model  # what is saved, averaged and evaluated


def test_compile_may_change_on_resume_but_precision_may_not():
    assert "train.compile" in resume.MAY_CHANGE and "train.precision" not in resume.MAY_CHANGE


# --------------------------------------------------------------------------- a whole run, on the CPU
def test_a_bf16_run_on_the_cpu_trains_and_reports_mfu(tokenized, tmp_path):
    summary = train_tiny(tokenized, tmp_path, precision="bf16", device="cpu")
    assert summary["precision"] == "bf16" and summary["device"] == "cpu" and summary["steps"] == 12
    assert_trained(tmp_path, summary)


def test_an_fp32_run_measures_its_peak_in_fp32(tokenized, tmp_path, monkeypatch):
    seen = []
    real = loop_module.measure_peak
    monkeypatch.setattr(loop_module, "measure_peak", lambda device, dtype: seen.append(dtype) or real(device, dtype))
    summary = train_tiny(tokenized, tmp_path, device="cpu")
    assert seen == [torch.float32] and summary["precision"] == "fp32"
    assert "theoretical_peak_flops" not in summary  # no datasheet peak for a CPU: left out, never guessed
    assert_trained(tmp_path, summary)


# --------------------------------------------------------------------------- on a GPU
@cuda
def test_auto_precision_on_cuda_trains_in_bf16(tokenized, tmp_path):
    summary = train_tiny(tokenized, tmp_path, device="cuda")
    expected = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    assert summary["precision"] == expected and summary["device"] == torch.cuda.get_device_name()
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert_trained(tmp_path, summary)


@cuda
def test_batches_for_cuda_are_pinned(tokenized):
    from nmt.data.tokenized import TokenizedSplit
    from nmt.tokenizer import Tokenizer

    tok = Tokenizer.load(tokenized / "vocab.json")
    split = TokenizedSplit.load(tokenized / "train.safetensors", tok.vocab_size)
    stream = Batches(split, tok, tiny_params().train, 64, seed=0)
    (batch,) = next(RankSlices(iter(stream), Dist(), 1, pin_memory=True))
    assert all(t.is_pinned() for t in (batch.src, batch.src_mask, batch.tgt_in, batch.tgt_out))


@cuda
def test_fp16_on_cuda_scales_the_loss_and_a_resumed_run_restores_the_scale(tokenized, tmp_path, monkeypatch):
    monkeypatch.setattr(resume, "remove", lambda path: None)  # keep the last checkpoint to resume from
    first = train_tiny(tokenized, tmp_path, device="cuda", precision="fp16", max_steps=8, checkpoint_every=4)
    assert first["precision"] == "fp16"
    assert_trained(tmp_path, first)
    path = TrainLayout(models=tmp_path / "models").resume_state
    state = torch.load(path, weights_only=True)
    assert state["scaler"]["scale"] > 0
    state["scaler"]["scale"] = 1234.0  # a scale no fresh scaler has
    torch.save(state, path)

    restored = []
    real = Precision.load_state_dict

    def spy(self, saved):
        real(self, saved)
        restored.append(self.scaler.get_scale())

    monkeypatch.setattr(Precision, "load_state_dict", spy)
    second = train_tiny(tokenized, tmp_path, device="cuda", precision="fp16", max_steps=12, checkpoint_every=4)
    assert restored == [1234.0] and second["steps"] == 12
    assert_trained(tmp_path, second)


@cuda
def test_compiled_training_on_cuda(tokenized, tmp_path):
    summary = train_tiny(tokenized, tmp_path, device="cuda", compile=True)
    assert_trained(tmp_path, summary)
