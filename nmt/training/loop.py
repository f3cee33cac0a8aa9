"""The training loop: a :class:`Trainer` holds one run's model, optimizer, schedule, EMA, precision,
process group and MLflow run, and trains it step by step, evaluating dev, keeping the best
checkpoint and a resume checkpoint, until ``train.max_steps`` or patience.

Every ``train.eval_every`` steps the dev split is scored (:mod:`nmt.training.validate`: real
decoding, never the teacher-forced argmax). The checkpoint with the best dev BLEU is kept;
patience stops a run that no longer improves. With ``train.ema_decay`` the dev scores and the kept
checkpoint come from an exponential moving average of the weights (:mod:`nmt.training.ema`).

The step's forward pass and loss run under autocast in ``train.precision`` (:mod:`nmt.training.precision`;
the weights stay float32), optionally through ``torch.compile``. ``metrics/train.json`` reports the
model FLOP/s achieved (:mod:`nmt.flops`, counted on each sequence's real, non-padding tokens) and
MFU against the matmul peak measured on the training device as the stage starts, the same way the
benchmarks measure it (warm, best of several). What the run *was* (steps, epochs, best step,
parameter count) goes to ``models/train_run.json`` and the run's tags, never to the metrics.
"""

from __future__ import annotations

import csv
import io
import math
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from nmt import plots
from nmt.checkpoint import save_model
from nmt.config import Params
from nmt.data.source import language_of
from nmt.data.tokenized import TokenizedSplit, load_literals
from nmt.errors import NmtError
from nmt.flops import Peak, measure_peak
from nmt.io import atomic_write_json, atomic_write_text
from nmt.layout import TrainLayout
from nmt.model import Transformer
from nmt.params import flatten, to_dict
from nmt.signals import GracefulStop
from nmt.tokenizer import Tokenizer
from nmt.tracking.datasets import split_inputs
from nmt.tracking.provenance import environment_tags, git_tags
from nmt.tracking.run import Run
from nmt.tracking.store import TrackingError
from nmt.training import resume
from nmt.training.distributed import Dist, any_rank
from nmt.training.ema import EMA
from nmt.training.precision import Precision, enable_tf32
from nmt.training.step import lr_factor, make_optimizer, optimizer_step
from nmt.training.stream import Batches, RankSlices
from nmt.training.validate import DevSet, evaluate_dev, make_dev_set

# dev_exact_match_ast: Python code only (empty otherwise, and in rows resumed from before it existed)
CURVE_FIELDS = ["step", "train_loss", "dev_loss", "dev_bleu", "dev_exact_match", "dev_exact_match_ast", "lr"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- outputs
@dataclass
class History:
    rows: list[dict] = field(default_factory=list)

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CURVE_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            values = {k: row.get(k, "") for k in CURVE_FIELDS}
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items()})
        return buf.getvalue()


def write_outputs(paths: TrainLayout, history: History, measured: dict, facts: dict) -> None:
    atomic_write_json(paths.metrics / "train.json", measured)
    atomic_write_json(paths.run_facts, facts)
    atomic_write_text(paths.metrics / "train_curve.csv", history.csv())
    plots.bleu_curve(
        [r["step"] for r in history.rows], [r["dev_bleu"] for r in history.rows],
        [r["dev_exact_match"] for r in history.rows], paths.plots / "bleu.png",
    )


# --------------------------------------------------------------------------- the loop
class TrainingDiverged(NmtError):
    """Too many consecutive steps with a NaN/inf loss or gradient."""


@dataclass
class Progress:
    """Everything the loop counts, saved whole in the resume checkpoint."""

    step: int = 0
    best: dict = field(default_factory=lambda: {"dev_bleu": -1.0, "dev_exact_match": 0.0, "step": 0})
    evals_without_gain: int = 0
    tokens_seen: int = 0
    train_time: float = 0.0
    data_time: float = 0.0
    loss_sum: float = 0.0  # since the last evaluation
    loss_tokens: int = 0
    bad_steps: int = 0  # consecutive, now
    skipped_steps: int = 0  # in all
    scaler_skipped_steps: int = 0  # fp16: updates the GradScaler skipped for overflowing gradients
    flops: float = 0.0  # model FLOPs of every step so far, all ranks
    rows: list = field(default_factory=list)  # the dev curve

    def state_dict(self) -> dict:
        return dict(vars(self))


class Trainer:
    """One training run (forward or reverse) from its first or resumed step to its outputs."""

    def __init__(self, params: Params, paths: TrainLayout, run: Run, data_sha: str, device: torch.device, d: Dist,
                 precision: Precision, reverse: bool = False):
        self.params, self.cfg, self.paths, self.run, self.data_sha = params, params.train, paths, run, data_sha
        self.device, self.d, self.precision, self.reverse = device, d, precision, reverse
        torch.use_deterministic_algorithms(True, warn_only=True)
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        if device.type == "cuda":
            enable_tf32()
        self.peak: Peak = measure_peak(device, precision.compute_dtype)  # MFU's denominator, warm, before seeding
        seed_everything(params.seed)
        self._load_data()
        # Same seed: the same initial weights on every rank.
        self.model = Transformer(params.model, self.tok.vocab_size, self.tok.pad_id).to(device)
        if self.tok.placeholder_ids:  # dev decoding uses only the placeholders of its own source
            self.model.restrict_to_source(self.tok.placeholder_ids)
        self.ema = EMA(self.model, self.cfg.ema_decay) if self.cfg.ema_decay else None
        self.scored = self.ema.model if self.ema else self.model  # the weights dev scores and the best checkpoint come from
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, self.cfg))
        self.stream = Batches(self.train_split, self.tok, self.cfg, params.model.max_len, params.seed)
        self.progress, self.best_weights = Progress(), None

    def _load_data(self) -> None:
        data = self.paths.data
        self.tok = Tokenizer.load(data / "vocab.json")
        self.train_split = TokenizedSplit.load(data / "train.safetensors", self.tok.vocab_size)
        dev_split = TokenizedSplit.load(data / "dev.safetensors", self.tok.vocab_size)
        if self.reverse:
            if self.tok.neighbour_code:  # code -> the description alone, not its neighbour's code
                self.train_split, dev_split = (s.sources_cut_at(self.tok.eos_id) for s in (self.train_split, dev_split))
            self.train_split, dev_split = self.train_split.swapped(), dev_split.swapped()
        literals = load_literals(data, "dev", len(dev_split)) if self.tok.string_placeholders else None
        # The reverse model's targets are descriptions, whatever the code's language.
        python = not self.reverse and language_of(self.paths.raw) == "python"
        self.dev: DevSet = make_dev_set(dev_split, self.tok, self.cfg.eval_examples, self.cfg.batch_tokens, literals,
                                        python)

    # ----------------------------------------------------------------- start or resume
    def start(self, state: dict | None) -> None:
        """A new run: record its params and tags. A resumed one: every state as the checkpoint left it."""
        if state is None:
            self.run.write_run_file(self.paths.run_file)
            self.run.log_params(flatten(to_dict(self.params)))
            self.run.set_tags({**git_tags(Path.cwd()), **environment_tags(self.device),
                               "data.source": self.params.data.source, "data.sha256": self.data_sha,
                               "parameters": self.model.num_parameters(), "precision": self.precision.name,
                               "direction": "code -> description" if self.reverse else "description -> code"})
            if self.run.enabled:  # the splits as dataset inputs: the runs table's Dataset column
                self.run.log_inputs(split_inputs(self.paths.data, self.params.data.source))
        else:
            self._resume(state)

    def _resume(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema:
            self.ema.model.load_state_dict(state["ema"]["model"])
            self.ema.updates = state["ema"]["updates"]
        self.stream.load_state_dict(state["batches"])
        self.precision.load_state_dict(state.get("scaler"))
        resume.set_rng_states(state["rng"])
        self.progress = Progress(**state["progress"])
        self.best_weights = state["best_weights"]
        if self.best_weights is not None:
            # `dvc repro` deletes the stage's outputs before running it again: put the best back.
            scored_now = {k: v.clone() for k, v in self.scored.state_dict().items()}
            self.scored.load_state_dict(self.best_weights)
            self.save_best()
            self.scored.load_state_dict(scored_now)
        self.run.write_run_file(self.paths.run_file)
        if self.d.is_main:
            p = self.progress
            print(f"resuming from step {p.step} ({self.paths.resume_state}, written by {state.get('world_size', 1)} "
                  f"process(es), now {self.d.world_size}; best dev BLEU {p.best['dev_bleu']:.2f} at step "
                  f"{p.best['step']})", file=sys.stderr)

    # ----------------------------------------------------------------- checkpoints
    def save_best(self) -> None:
        if self.d.is_main:
            save_model(self.scored, self.paths.best_weights, self.paths.best_config, self.tok.bos_id, self.tok.eos_id,
                       info={"step": self.progress.best["step"], "dev_bleu": self.progress.best["dev_bleu"]})

    def checkpoint(self) -> None:
        """The resume checkpoint: everything a killed run needs to go on as if it had not stopped."""
        if not self.d.is_main:
            return
        ema = self.ema
        resume.save_state(self.paths.resume_state, {
            "fingerprint": resume.fingerprint(self.params, self.data_sha), "mlflow_run_id": self.run.run_id or "",
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": {"model": ema.model.state_dict(), "updates": ema.updates} if ema else None,
            "batches": self.stream.state_dict(), "rng": resume.rng_states(), "progress": self.progress.state_dict(),
            "best_weights": self.best_weights, "world_size": self.d.world_size, "scaler": self.precision.state_dict(),
        })

    # ----------------------------------------------------------------- the loop
    def fit(self) -> dict:
        """Train to ``train.max_steps`` (or early stop); write the outputs; the run's measurements and facts."""
        cfg, d = self.cfg, self.d
        batches = RankSlices(iter(self.stream), d, cfg.accumulate, pin_memory=self.device.type == "cuda")
        trained = DistributedDataParallel(self.model) if d.enabled else self.model  # what the step runs: syncs gradients
        if cfg.compile:
            # dynamic: every step's batch has another (B, S, T); `model` stays the eager module (saved, averaged,
            # evaluated).
            trained = torch.compile(trained, dynamic=True)
        self.model.train()
        # A live bar on a terminal; in a log file (CI, dvc repro > log) one line every 30 s, not thousands.
        bar = tqdm(range(self.progress.step + 1, cfg.max_steps + 1), desc="train", unit="step", dynamic_ncols=True,
                   initial=self.progress.step, total=cfg.max_steps, mininterval=0.1 if sys.stderr.isatty() else 30.0,
                   disable=not d.is_main)
        try:
            with GracefulStop() as stop:
                for step in bar:
                    if not self._step_and_evaluate(step, trained, batches, bar, stop):
                        break
        finally:
            bar.close()
        return self.finish()

    def _step_and_evaluate(self, step: int, trained: torch.nn.Module, batches: RankSlices, bar,
                           stop: GracefulStop) -> bool:
        """One step, then dev and checkpoints when due; False when patience says stop."""
        cfg, progress = self.cfg, self.progress
        good = self._one_step(step, trained, batches, bar)
        progress.step = step
        # Every rank stops after the same step: on a signal, or when the tracking store was lost and is required.
        stopping = any_rank(stop.requested or self.run.must_stop, self.d, self.device)
        if good:
            if self._evaluate_if_due(step, self.scheduler.get_last_lr()[0], bar):
                self.save_best()
                self.best_weights = {k: v.detach().cpu().clone() for k, v in self.scored.state_dict().items()}
            if step % cfg.checkpoint_every == 0 or stopping:
                self.checkpoint()
        if self.run.must_stop:
            raise self._tracking_lost()
        if stopping:
            GracefulStop.raise_now(stop.signum or signal.SIGTERM)  # a rank told by another: as SIGTERM
        if good and cfg.patience and progress.evals_without_gain >= cfg.patience:
            bar.write(f"early stop: no better dev BLEU in {cfg.patience} evaluations")
            return False
        return True

    def _one_step(self, step: int, model: torch.nn.Module, batches: RankSlices, bar) -> bool:
        """Train one step; False when its loss or gradient was not finite (skipped: no update).

        An fp16 step whose gradients overflowed under a finite loss counts as trained: the GradScaler
        skipped its update and lowered the scale, the usual way it finds its level.
        """
        progress, cfg = self.progress, self.cfg
        t0 = time.perf_counter()
        micro = [b.to(self.device, non_blocking=True) for b in next(batches)]
        progress.data_time += time.perf_counter() - t0
        result = optimizer_step(model, micro, self.optimizer, self.scheduler, cfg, self.ema, self.d, self.precision)
        step_time = time.perf_counter() - t0
        progress.train_time += step_time
        progress.flops += result.flops  # also for skipped steps: their time is in train_time too
        progress.scaler_skipped_steps += result.overflow
        if not (result.finite or result.overflow):
            self._skip(step, result.loss, result.grad_norm, bar)
            return False
        progress.bad_steps = 0
        progress.loss_sum += result.loss
        progress.loss_tokens += result.tokens
        progress.tokens_seen += result.tokens
        lr = self.scheduler.get_last_lr()[0]
        # refresh=False: the bar redraws on its own schedule (every 30 s in a log file), not every step
        bar.set_postfix(loss=f"{progress.loss_sum / progress.loss_tokens:.3f}", lr=f"{lr:.2e}",
                        tok_s=f"{progress.tokens_seen / progress.train_time:.0f}", refresh=False)
        logged = {"train_loss": result.loss / result.tokens, "lr": lr, "tok_s": result.tokens / step_time}
        if cfg.rdrop:
            logged["rdrop_kl"] = result.rdrop_kl / result.tokens
        if math.isfinite(result.grad_norm):  # inf on an fp16 overflow step
            logged["grad_norm"] = result.grad_norm
        if self.precision.scaler:
            logged["loss_scale"] = self.precision.scaler.get_scale()
        self.run.log_metrics(logged, step)
        return True

    def _skip(self, step: int, loss: float, grad_norm: float, bar) -> None:
        """Count a step with a NaN/inf loss or gradient; too many in a row stop training."""
        progress, cfg = self.progress, self.cfg
        progress.bad_steps += 1
        progress.skipped_steps += 1
        bar.write(f"step {step}: non-finite loss ({loss}) or gradient norm ({grad_norm}): skipped "
                  f"({progress.bad_steps} in a row, train.max_bad_steps={cfg.max_bad_steps})")
        if progress.bad_steps >= cfg.max_bad_steps:
            raise TrainingDiverged(
                f"training stopped at step {step}: {progress.bad_steps} consecutive steps with a NaN/inf loss or "
                f"gradient; models/best.safetensors keeps the best dev checkpoint (step {progress.best['step']}) "
                f"and models/resume/ the last periodic one. Lower train.lr, raise train.warmup_steps or set "
                f"train.clip_norm, then run again with train.resume: false")

    def _evaluate_if_due(self, step: int, lr: float, bar) -> bool:
        """Score dev every ``eval_every`` steps and at the last; True when this is a new best dev BLEU."""
        cfg, progress = self.cfg, self.progress
        if step % cfg.eval_every and step != cfg.max_steps:
            return False
        scores = evaluate_dev(self.scored, self.dev, self.tok, cfg, self.device, self.d)
        row = {"step": step, "train_loss": progress.loss_sum / max(1, progress.loss_tokens), "lr": lr, **scores}
        progress.rows.append(row)
        progress.loss_sum, progress.loss_tokens = 0.0, 0
        self.run.log_metrics(dict(scores), step)
        tree = f"  same tree {scores['dev_exact_match_ast']:.2f}" if "dev_exact_match_ast" in scores else ""
        bar.write(f"step {step}: dev loss {scores['dev_loss']:.3f}  BLEU {scores['dev_bleu']:.2f}  "
                  f"EM {scores['dev_exact_match']:.2f}{tree}")
        if scores["dev_bleu"] > progress.best["dev_bleu"]:
            progress.best = {"step": step, **{k: v for k, v in scores.items() if k != "dev_loss"}}
            progress.evals_without_gain = 0
            return True
        progress.evals_without_gain += 1
        return False

    def _tracking_lost(self) -> TrackingError:
        """The required tracking store stopped answering: the resume checkpoint is written; say how to go on."""
        return TrackingError(
            f"{self.run.lost}. Training stopped after step {self.progress.step}; its resume checkpoint "
            f"{self.paths.resume_state} keeps the training so far. Start the server again and rerun the same "
            f"command: it resumes into the same run. Or set mlflow.required: false to train on without tracking")

    # ----------------------------------------------------------------- the end
    def finish(self) -> dict:
        """Write metrics, run facts, curve and plot (rank 0), log them, drop the resume checkpoint.

        The resume checkpoint goes only once the run has its final metrics and artifacts: when the
        required store is lost here, a checkpoint at the last step stays, and the rerun only logs.
        """
        progress, d = self.progress, self.d
        measured = {**_measurements(progress), **_efficiency(progress, self.peak, d)}
        facts = _run_facts(progress, self.train_split, self.model, self.run, d, self.device, self.precision)
        if not d.is_main:
            return {**measured, **facts}
        paths = self.paths
        write_outputs(paths, History(progress.rows), measured, facts)
        self.run.log_metrics({k: v for k, v in measured.items() if isinstance(v, (int, float))})
        self.run.set_tags({k: facts[k] for k in ("steps", "best_step", "epochs")})
        for artifact in (Path("params.yaml"), paths.metrics / "train_curve.csv", paths.plots / "bleu.png",
                         paths.best_config):
            self.run.log_artifact(artifact)
        if self.run.must_stop:
            self.checkpoint()
            raise self._tracking_lost()
        resume.remove(paths.resume_state)  # finished and logged: nothing left to resume
        return {**measured, **facts}


def _measurements(progress: Progress) -> dict:
    """What the run measured: metrics/train.json (numbers only, so `dvc metrics diff` compares results)."""
    train_time = max(progress.train_time, 1e-9)
    return {
        "split": "dev",  # the best_dev_* scores: the selection split (data/raw/stats.json: roles)
        "best_dev_bleu": progress.best["dev_bleu"],
        "best_dev_exact_match": progress.best["dev_exact_match"],
        **({"best_dev_exact_match_ast": progress.best["dev_exact_match_ast"]} if "dev_exact_match_ast" in progress.best
           else {}),
        "skipped_steps": progress.skipped_steps,  # NaN/inf loss or gradient: no update
        "train_seconds": round(progress.train_time, 1),
        "train_tokens_per_s": round(progress.tokens_seen / train_time),
        "data_wait_share": round(progress.data_time / train_time, 4),  # of the step time, spent making batches
    }


def _run_facts(progress: Progress, train_split: TokenizedSplit, model: Transformer, run: Run, d: Dist,
               device: torch.device, precision: Precision) -> dict:
    """What the run was, not what it measured: models/train_run.json and MLflow tags, never metrics."""
    return {
        "best_step": progress.best["step"],
        "steps": progress.step,
        "epochs": round(progress.tokens_seen / max(1, int(train_split.tgt_lengths.sum()) + len(train_split)), 2),
        "parameters": model.num_parameters(),
        "world_size": d.world_size,
        "mlflow_run_id": run.run_id or "",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "precision": precision.name,
    }


def _efficiency(progress: Progress, peak: Peak, d: Dist) -> dict:
    """Achieved model FLOP/s over the run (all ranks) and MFU: their share of world_size devices'
    measured peak. The datasheet's peak is written beside it for the GPUs nmt.flops knows (left
    out elsewhere: metrics/train.json holds numbers only, never a null)."""
    flops_per_s = progress.flops / max(progress.train_time, 1e-9)
    out = {
        "scaler_skipped_steps": progress.scaler_skipped_steps,  # fp16: overflowing gradients, no update
        "train_flops_per_s": round(flops_per_s),
        "peak_flops": round(peak.measured),  # best warm matmul at the start, on this device, in the training dtype
        "mfu": float(f"{flops_per_s / (d.world_size * peak.measured):.4g}"),  # significant digits: tiny models
    }
    if peak.theoretical is not None:
        out["theoretical_peak_flops"] = round(peak.theoretical)
    return out
