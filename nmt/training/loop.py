"""Training: AdamW with warmup, label smoothing, clipping, accumulation; dev BLEU from real decoding.

Every ``train.eval_every`` steps the dev split is scored twice: teacher-forced loss, and BLEU /
exact match of *real decoding* — greedy, or beam search when ``train.eval_beam_size`` > 1 — what
a user would get, never the teacher-forced argmax. The checkpoint with the best dev BLEU is kept;
patience stops a run that no longer improves. With ``train.ema_decay`` the dev scores and the kept
checkpoint come from an exponential moving average of the weights (:mod:`nmt.training.ema`). With string
placeholders (``tokenize.string_placeholders``) dev outputs and references are restored before
scoring, so dev BLEU counts literals as the evaluate stage does.

The step's forward pass and loss run under autocast in ``train.precision`` (:mod:`nmt.training.precision`;
the weights stay float32), optionally through ``torch.compile``. ``metrics/train.json`` reports the
model FLOP/s achieved (:mod:`nmt.flops`, counted on each sequence's real, non-padding tokens) and
MFU against the matmul peak measured on the training device as the stage starts, the same way the
benchmarks measure it (warm, best of several).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import random
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from nmt import metrics, plots
from nmt.training import distributed, resume
from nmt.batching import Batch, collate, token_budget_batches
from nmt.checkpoint import save_model
from nmt.config import Params, TrainConfig, flatten, to_dict
from nmt.decoding.search import beam_search, greedy
from nmt.training.distributed import Dist, all_sum, any_rank, gather_objects
from nmt.training.ema import EMA
from nmt.stages.tokenize import TokenizedSplit, load_literals
from nmt.errors import NmtError
from nmt.flops import Peak, measure_peak, unpadded_train_flops
from nmt.io import atomic_write_json, atomic_write_text
from nmt.model import Transformer
from nmt.placeholders import restore
from nmt.training.precision import FP32, Precision, enable_tf32
from nmt.training.stopping import GracefulStop
from nmt.tokenizer import Tokenizer
from nmt.tracking.run import Run, directory_sha256, environment_tags, git_tags

CURVE_FIELDS = ["step", "train_loss", "dev_loss", "dev_bleu", "dev_exact_match", "lr"]


@dataclass
class Paths:
    """Where the train stage reads and writes (the contract in dvc.yaml)."""

    data: Path = Path("data/tokenized")
    models: Path = Path("models")
    metrics: Path = Path("metrics")
    plots: Path = Path("plots")
    # The resume checkpoint's folder lives under this one (models/resume/); it must not be a DVC output.
    resume_root: Path | None = None

    @property
    def resume_state(self) -> Path:
        return resume.state_path(self.resume_root or self.models)

    @property
    def best_weights(self) -> Path:
        return self.models / "best.safetensors"

    @property
    def best_config(self) -> Path:
        return self.models / "best.json"

    @property
    def run_facts(self) -> Path:
        """Steps, epochs, best step, parameter count...: what the run was, apart from its metrics."""
        return self.models / "train_run.json"

    @property
    def run_file(self) -> Path:
        """The MLflow run id, handed to the evaluate and export stages."""
        return self.models / "mlflow_run.json"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """The device of this process: under torchrun on GPUs, the local rank's GPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name, local_rank) if name == "cuda" else torch.device(name)


# --------------------------------------------------------------------------- optimisation
def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay only matrices of linear layers; norms, biases and embeddings are left alone."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_embedding = name.startswith(("embed.", "pos."))
        (decay if p.dim() >= 2 and not is_embedding else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, fused: one kernel updates every tensor (CPU and CUDA),
    instead of a handful of small ops per parameter tensor."""
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             fused=True)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak lr after ``step`` optimizer steps.

    Linear warmup to 1 over ``warmup_steps``; then either inverse square root,
    ``sqrt(warmup / step)``, or a cosine from 1 down to ``min_lr_ratio`` at ``max_steps``.
    """
    warmup = max(1, cfg.warmup_steps)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "inverse_sqrt":
        return math.sqrt(warmup / (step + 1))
    progress = min(1.0, (step - warmup) / max(1, cfg.max_steps - warmup))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def unwrap(model: torch.nn.Module) -> Transformer:
    """The Transformer inside torch.compile's and DistributedDataParallel's wrappers (or the model itself)."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule
    return model.module if isinstance(model, DistributedDataParallel) else model


def batch_loss(model: Transformer, batch: Batch, label_smoothing: float) -> torch.Tensor:
    """Summed (not averaged) token cross-entropy, so accumulation can divide by the step's tokens."""
    # (B, T, V) logits, or log-probabilities for model.copy: cross_entropy's log_softmax takes either
    logits = model(batch.src, batch.src_mask, batch.tgt_in)
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),  # (B*T, V)
        batch.tgt_out.reshape(-1),  # (B*T,)
        ignore_index=unwrap(model).pad_id,
        label_smoothing=label_smoothing,
        reduction="sum",
    )


@dataclass
class StepResult:
    loss: float  # summed over the step's target tokens, all ranks
    grad_norm: float  # before clipping
    tokens: int  # target tokens, all ranks
    flops: float  # model FLOPs (forward + backward) of the step's micro-batches, all ranks
    overflow: bool = False  # fp16: finite loss, inf/NaN gradients; the GradScaler skipped the update

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(self.grad_norm)


def micro_batch_flops(model: Transformer, b: Batch) -> int:
    """Model FLOPs of one training pass over ``b``: each sequence at its real source and target
    lengths, so padding (work done, not needed) never counts as useful towards MFU."""
    # One (2, B) copy to the CPU per micro-batch: the per-sequence lengths, not the padded shape.
    src_lengths, tgt_lengths = torch.stack([b.src_mask.sum(1), (b.tgt_out != model.pad_id).sum(1)]).cpu()
    return unpadded_train_flops(model.cfg, model.vocab_size, src_lengths, tgt_lengths)


def optimizer_step(
    model: torch.nn.Module,
    micro: list[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    cfg: TrainConfig,
    ema: EMA | None = None,
    d: Dist = Dist(),
    precision: Precision = FP32,
) -> StepResult:
    """One optimizer step over this rank's micro-batches; no update when the loss or the gradient
    norm is NaN/inf.

    Each micro-batch's summed loss is divided by the step's token count (over all ranks) before
    backward, so the gradient is the per-token mean over the whole step however it was split
    across micro-batches and processes (nmt/training/distributed.py: DDP averages over ranks, hence the
    factor world_size).
    """
    device = micro[0].src.device
    scaler = precision.scaler
    local_flops = sum(micro_batch_flops(unwrap(model), b) for b in micro)
    step_tokens, step_flops = all_sum([float(sum(b.n_tokens for b in micro)), float(local_flops)], d, device)
    step_tokens = int(step_tokens)
    step_loss = 0.0
    for i, b in enumerate(micro):
        # Gradients are averaged across ranks once per step, after the last micro-batch.
        sync = nullcontext() if i == len(micro) - 1 or not d.enabled else model.no_sync()
        with sync:
            with precision.autocast():  # forward and loss; backward follows the forward's dtypes by itself
                loss = batch_loss(model, b, cfg.label_smoothing)
            scaled = loss * d.world_size / step_tokens
            (scaler.scale(scaled) if scaler else scaled).backward()
        step_loss += loss.item()
    step_loss = all_sum([step_loss], d, device)[0]
    if scaler:
        scaler.unscale_(optimizer)  # the true gradients, for clipping and the finite check
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm or float("inf")))
    # A NaN/inf loss or gradient would poison the weights and AdamW's moments for good: skip the
    # update (the schedule still advances, so steps and lr stay aligned); the caller counts it.
    result = StepResult(step_loss, grad_norm, step_tokens, step_flops)
    if result.finite:
        if scaler:
            scaler.step(optimizer)  # after unscale_: the optimizer steps on the true gradients
        else:
            optimizer.step()
        if ema:
            ema.update(unwrap(model))
    if scaler:
        # Overflowing gradients with a finite loss are the scale's fault, not the model's: update()
        # lowers the scale (and raises it after growth_interval clean steps).
        result.overflow = math.isfinite(step_loss) and not result.finite
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return result


# --------------------------------------------------------------------------- data
def as_lists(split: TokenizedSplit, n: int | None = None) -> tuple[list[list[int]], list[list[int]]]:
    """Python lists of the first ``n`` pairs' ids (the dev set: decoded batch after batch)."""
    return split.lists(range(len(split) if n is None else n))


class Batches:
    """Endless stream of training batches: a fresh bucketing and shuffled order each epoch.

    Only the lengths are held in Python; a batch's ids are sliced from the split's tensors (memory-
    mapped from the tokenize stage's file) as it is made, so memory does not grow with the ids.
    """

    def __init__(self, split: TokenizedSplit, tok: Tokenizer, cfg: TrainConfig, max_len: int, seed: int):
        self.split, self.tok, self.cfg, self.max_len = split, tok, cfg, max_len
        self.src_lengths = split.src_lengths.clamp(max=max_len - 1).tolist()
        self.tgt_lengths = split.tgt_lengths.clamp(max=max_len - 1).tolist()
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.position = 0  # batches of the current epoch handed out so far
        self._epoch_start = self.generator.get_state()  # the generator as the current epoch began
        self._skip = 0

    def __iter__(self):
        while True:
            self._epoch_start = self.generator.get_state()
            self.epoch += 1
            batches = token_budget_batches(self.src_lengths, self.tgt_lengths, self.cfg.batch_tokens, self.generator)
            order = torch.randperm(len(batches), generator=self.generator).tolist()
            self.position, self._skip = self._skip, 0
            while self.position < len(order):
                self.position += 1
                yield self.make(batches[order[self.position - 1]])

    def state_dict(self) -> dict:
        """Where the stream stands: the epoch, the generator as it began, the batches handed out."""
        return {"epoch": self.epoch, "epoch_start": self._epoch_start, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        """Continue a stream from :meth:`state_dict`: the same epoch's batches, from the same place
        (call before iterating). The epoch is rebuilt from its generator state, not stored."""
        self.generator.set_state(state["epoch_start"])
        self.epoch = max(0, state["epoch"] - 1)  # __iter__ counts the epoch again as it rebuilds it
        self._skip = state["position"]

    def make(self, indices: list[int]) -> Batch:
        return collate(
            *self.split.lists(indices), self.tok.pad_id, self.tok.bos_id, self.tok.eos_id, self.max_len,
        )


class RankSlices:
    """This rank's micro-batches of each step, cut from the one global stream every rank walks.

    A step takes the next ``world_size x accumulate`` batches of the stream; rank r keeps the
    r-th run of ``accumulate`` of them. The stream's position (what a resume checkpoint records)
    is global, so a run resumes on any number of processes where it stopped in the data.
    """

    def __init__(self, stream, d: Dist, accumulate: int, pin_memory: bool = False):
        self.stream, self.d, self.accumulate, self.pin_memory = stream, d, accumulate, pin_memory

    def __iter__(self):
        return self

    def __next__(self) -> list[Batch]:
        group = [next(self.stream) for _ in range(self.d.world_size * self.accumulate)]
        mine = group[self.d.rank * self.accumulate : (self.d.rank + 1) * self.accumulate]
        # Pinned here rather than as the stream collates: the other ranks' batches are never copied.
        return [b.pin_memory() for b in mine] if self.pin_memory else mine


# --------------------------------------------------------------------------- evaluation
@dataclass
class DevSet:
    srcs: list[list[int]]
    tgts: list[list[int]]
    references: list[str]
    batches: list[list[int]]
    literals: list[list[str]]  # per pair, what its string placeholders stand for (empty lists when off)

    def text(self, i: int, ids: list[int], tok: Tokenizer) -> str:
        """Decoded ids of pair ``i``'s output, placeholders restored: what the user would get."""
        return restore(tok.decode(ids), self.literals[i])


def make_dev_set(split: TokenizedSplit, tok: Tokenizer, n_examples: int, batch_tokens: int,
                 literals: list[list[str]] | None = None) -> DevSet:
    """The first ``n_examples`` dev pairs (all when 0), in length-bucketed batches."""
    n = len(split) if n_examples == 0 else min(n_examples, len(split))
    srcs, tgts = as_lists(split, n)
    batches = token_budget_batches([len(s) for s in srcs], [len(t) for t in tgts], batch_tokens)
    dev = DevSet(srcs, tgts, [], batches, literals[:n] if literals is not None else [[] for _ in range(n)])
    dev.references = [dev.text(i, t, tok) for i, t in enumerate(tgts)]
    return dev


@torch.no_grad()
def evaluate_dev(model: Transformer, dev: DevSet, tok: Tokenizer, cfg: TrainConfig, device: torch.device,
                 d: Dist = Dist()) -> dict:
    """Teacher-forced dev loss, then real decoding (greedy or beam) scored with BLEU and exact match.

    With several processes each decodes every world_size-th batch; the predictions and loss sums
    are gathered, so every rank gets the same scores.
    """
    model.eval()
    total_loss, total_tokens = 0.0, 0
    predictions: dict[int, str] = {}
    max_len = model.cfg.max_len
    for indices in dev.batches[d.rank :: d.world_size]:
        batch = collate([dev.srcs[i] for i in indices], [dev.tgts[i] for i in indices],
                        tok.pad_id, tok.bos_id, tok.eos_id, max_len).to(device)
        total_loss += batch_loss(model, batch, 0.0).item()
        total_tokens += batch.n_tokens
        if cfg.eval_beam_size == 1:
            hyps = greedy(model, batch.src, batch.src_mask, tok.bos_id, tok.eos_id, cfg.eval_max_len)
        else:
            hyps = [n_best[0] for n_best in beam_search(model, batch.src, batch.src_mask, tok.bos_id, tok.eos_id,
                                                        cfg.eval_max_len, beam_size=cfg.eval_beam_size)]
        for i, h in zip(indices, hyps):
            predictions[i] = dev.text(i, h.tokens, tok)
    model.train()
    total_loss, total_tokens = all_sum([total_loss, float(total_tokens)], d, device)
    for part in gather_objects(predictions, d):
        predictions.update(part)
    hyps = [predictions[i] for i in range(len(dev.references))]
    return {
        "dev_loss": total_loss / max(1, total_tokens),
        "dev_bleu": metrics.bleu(hyps, dev.references),
        "dev_exact_match": metrics.exact_match(hyps, dev.references),
    }


# --------------------------------------------------------------------------- outputs
@dataclass
class History:
    rows: list[dict] = field(default_factory=list)

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CURVE_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in CURVE_FIELDS})
        return buf.getvalue()


def write_outputs(paths: Paths, history: History, measured: dict, facts: dict) -> None:
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


def raise_on_sigterm() -> None:
    """Turn SIGTERM (a scheduler stopping the job, `kill`) into SystemExit(143), like Ctrl-C's 130.

    The exception unwinds through the loop, so the MLflow run is marked KILLED, not left RUNNING.
    (Between steps, :class:`GracefulStop` takes over and saves a resume checkpoint first.)
    """
    def handler(signum, frame):
        raise SystemExit(128 + signal.SIGTERM)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def find_resume_state(params: Params, paths: Paths, data_sha: str, d: Dist = Dist()) -> dict | None:
    """The resume checkpoint a killed run left, if any and if ``train.resume`` (refused when incompatible)."""
    path = paths.resume_state
    if not path.exists():
        return None
    if not params.train.resume:
        if d.is_main:
            print(f"train.resume is false: starting over (removing {path})", file=sys.stderr)
            resume.remove(path)
        return None
    return resume.load_state(path, resume.fingerprint(params, data_sha))


def train(params: Params, paths: Paths = Paths(), reverse: bool = False) -> dict:
    """Train a model on ``paths.data``; write the best checkpoint, metrics, curve and plot.

    A run killed earlier continues from its resume checkpoint, in its MLflow run. Otherwise the
    MLflow run is opened first, so an unreachable tracking store fails the stage before any work;
    its id goes to ``paths.run_file`` for the evaluate and export stages. ``reverse`` trains on the
    pairs swapped: code -> description (:func:`train_reverse`).
    """
    raise_on_sigterm()
    device = pick_device(params.train.device, distributed.from_environment().local_rank)
    precision = Precision.of(params.train.precision, device)  # fp16 on a CPU: refused before any work
    d = distributed.setup(device, params.train.dist_timeout_s)
    try:
        data_sha = directory_sha256(paths.data)
        state = find_resume_state(params, paths, data_sha, d)
        if not d.is_main:
            run = Run()  # rank 0 alone talks to MLflow
        elif state is not None and state.get("mlflow_run_id"):
            run = Run.reopen(state["mlflow_run_id"], params.mlflow, system_metrics=params.mlflow.system_metrics)
        else:
            name = os.environ.get("DVC_EXP_NAME")
            run = Run.start(params.mlflow, run_name=f"{name or 'train'}-reverse" if reverse else None)
        with run:
            summary = _train(params, paths, run, data_sha, state, device, d, precision, reverse)
    finally:
        distributed.teardown()
    return summary


REVERSE_PATHS = Paths(models=Path("models/reverse"), metrics=Path("models/reverse"), plots=Path("models/reverse"),
                      resume_root=Path("models/reverse-resume"))


def train_reverse(params: Params, paths: Paths = REVERSE_PATHS) -> dict:
    """The reverse model: ``reverse.max_steps`` steps on the training pairs swapped (code -> description).

    Same architecture, optimizer, schedule and batching as the forward model (the model and train
    sections), one dev evaluation at the end on ``reverse.eval_examples`` pairs, its own MLflow run.
    Its log P(description | code) is the lexical reranker's reconstruction score (Yin & Neubig 2019:
    a hypothesis that cannot give its description back has likely lost part of it). With
    ``reverse.max_steps`` 0 it writes only a README saying there is no reverse model.
    """
    paths.models.mkdir(parents=True, exist_ok=True)
    steps = params.reverse.max_steps
    if steps == 0:
        for stale in (paths.best_weights, paths.best_config, paths.run_file, paths.run_facts):
            stale.unlink(missing_ok=True)
        atomic_write_text(paths.models / "README.md", "No reverse model: reverse.max_steps is 0.\n")
        return {}
    (paths.models / "README.md").unlink(missing_ok=True)
    cfg = dataclasses.replace(params.train, max_steps=steps, eval_every=steps, patience=0,
                              eval_examples=params.reverse.eval_examples)
    return train(dataclasses.replace(params, train=cfg), paths, reverse=True)


def _train(params: Params, paths: Paths, run: Run, data_sha: str, state: dict | None, device: torch.device,
           d: Dist, precision: Precision, reverse: bool = False) -> dict:
    cfg = params.train
    torch.use_deterministic_algorithms(True, warn_only=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        enable_tf32()
    peak_flops = measure_peak(device, precision.compute_dtype)  # MFU's denominator, warm, before seeding
    seed_everything(params.seed)

    tok = Tokenizer.load(paths.data / "vocab.json")
    train_split = TokenizedSplit.load(paths.data / "train.safetensors", tok.vocab_size)
    dev_split = TokenizedSplit.load(paths.data / "dev.safetensors", tok.vocab_size)
    if reverse:
        train_split, dev_split = train_split.swapped(), dev_split.swapped()
    literals = load_literals(paths.data, "dev", len(dev_split)) if tok.string_placeholders else None
    dev = make_dev_set(dev_split, tok, cfg.eval_examples, cfg.batch_tokens, literals)

    model = Transformer(params.model, tok.vocab_size, tok.pad_id).to(device)  # same seed: same weights on every rank
    if tok.placeholder_ids:  # dev decoding uses only the placeholders of its own source
        model.restrict_to_source(tok.placeholder_ids)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    scored = ema.model if ema else model  # the weights dev scores and the best checkpoint come from
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    stream = Batches(train_split, tok, cfg, params.model.max_len, params.seed)
    progress, best_weights = Progress(), None
    resume_path = paths.resume_state

    def save_best() -> None:
        if not d.is_main:
            return
        save_model(scored, paths.best_weights, paths.best_config, tok.bos_id, tok.eos_id,
                   info={"step": progress.best["step"], "dev_bleu": progress.best["dev_bleu"]})

    def checkpoint() -> None:
        if not d.is_main:
            return
        resume.save_state(resume_path, {
            "fingerprint": resume.fingerprint(params, data_sha), "mlflow_run_id": run.run_id or "",
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "ema": {"model": ema.model.state_dict(), "updates": ema.updates} if ema else None,
            "batches": stream.state_dict(), "rng": resume.rng_states(), "progress": progress.state_dict(),
            "best_weights": best_weights, "world_size": d.world_size, "scaler": precision.state_dict(),
        })

    if state is None:
        run.write_run_file(paths.run_file)
        run.log_params(flatten(to_dict(params)))
        run.set_tags({**git_tags(Path.cwd()), **environment_tags(device), "data.source": params.data.source,
                      "data.sha256": data_sha, "parameters": model.num_parameters(), "precision": precision.name,
                      "direction": "code -> description" if reverse else "description -> code"})
    else:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema:
            ema.model.load_state_dict(state["ema"]["model"])
            ema.updates = state["ema"]["updates"]
        stream.load_state_dict(state["batches"])
        precision.load_state_dict(state.get("scaler"))
        resume.set_rng_states(state["rng"])
        progress = Progress(**state["progress"])
        best_weights = state["best_weights"]
        if best_weights is not None:
            # `dvc repro` deletes the stage's outputs before running it again: put the best back.
            scored_now = {k: v.clone() for k, v in scored.state_dict().items()}
            scored.load_state_dict(best_weights)
            save_best()
            scored.load_state_dict(scored_now)
        run.write_run_file(paths.run_file)
        if d.is_main:
            print(f"resuming from step {progress.step} ({resume_path}, written by {state.get('world_size', 1)} "
                  f"process(es), now {d.world_size}; best dev BLEU {progress.best['dev_bleu']:.2f} at step "
                  f"{progress.best['step']})", file=sys.stderr)

    batches = RankSlices(iter(stream), d, cfg.accumulate, pin_memory=device.type == "cuda")
    trained = DistributedDataParallel(model) if d.enabled else model  # what the step runs: syncs gradients
    if cfg.compile:
        # dynamic: every step's batch has another (B, S, T); `model` stays the eager module (saved, averaged,
        # evaluated).
        trained = torch.compile(trained, dynamic=True)
    model.train()
    # A live bar on a terminal; in a log file (CI, dvc repro > log) one line every 30 s, not thousands.
    bar = tqdm(range(progress.step + 1, cfg.max_steps + 1), desc="train", unit="step", dynamic_ncols=True,
               initial=progress.step, total=cfg.max_steps, mininterval=0.1 if sys.stderr.isatty() else 30.0,
               disable=not d.is_main)
    try:
        with GracefulStop() as stop:
            for step in bar:
                good = _one_step(step, trained, batches, optimizer, scheduler, cfg, ema, device, progress, run, bar, d,
                                 precision)
                progress.step = step
                stopping = any_rank(stop.requested, d, device)  # every rank stops after the same step
                if good:
                    lr = scheduler.get_last_lr()[0]
                    if _evaluate_if_due(step, lr, scored, dev, tok, cfg, device, progress, run, bar, d):
                        save_best()
                        best_weights = {k: v.detach().cpu().clone() for k, v in scored.state_dict().items()}
                    if step % cfg.checkpoint_every == 0 or stopping:
                        checkpoint()
                if stopping:
                    GracefulStop.raise_now(stop.signum or signal.SIGTERM)  # a rank told by another: as SIGTERM
                if good and cfg.patience and progress.evals_without_gain >= cfg.patience:
                    bar.write(f"early stop: no better dev BLEU in {cfg.patience} evaluations")
                    break
    finally:
        bar.close()

    measured = {**_measurements(progress), **_efficiency(progress, peak_flops, d)}
    facts = _run_facts(progress, train_split, model, run, d, device, precision)
    if not d.is_main:
        return {**measured, **facts}
    write_outputs(paths, History(progress.rows), measured, facts)
    resume.remove(resume_path)  # finished: nothing left to resume
    run.log_metrics({k: v for k, v in measured.items() if isinstance(v, (int, float))})
    run.set_tags({k: facts[k] for k in ("steps", "best_step", "epochs")})
    for artifact in (Path("params.yaml"), paths.metrics / "train_curve.csv", paths.plots / "bleu.png", paths.best_config):
        run.log_artifact(artifact)
    return {**measured, **facts}


def _one_step(step: int, model: torch.nn.Module, batches: RankSlices, optimizer, scheduler, cfg: TrainConfig,
              ema: EMA | None, device: torch.device, progress: Progress, run: Run, bar, d: Dist,
              precision: Precision) -> bool:
    """Train one step; False when its loss or gradient was not finite (skipped: no update).

    An fp16 step whose gradients overflowed under a finite loss counts as trained: the GradScaler
    skipped its update and lowered the scale, the usual way it finds its level.
    """
    t0 = time.perf_counter()
    micro = [b.to(device, non_blocking=True) for b in next(batches)]
    progress.data_time += time.perf_counter() - t0
    result = optimizer_step(model, micro, optimizer, scheduler, cfg, ema, d, precision)
    step_loss, grad_norm, step_tokens = result.loss, result.grad_norm, result.tokens
    step_time = time.perf_counter() - t0
    progress.train_time += step_time
    progress.flops += result.flops  # also for skipped steps: their time is in train_time too
    progress.scaler_skipped_steps += result.overflow
    if not (result.finite or result.overflow):
        progress.bad_steps += 1
        progress.skipped_steps += 1
        bar.write(f"step {step}: non-finite loss ({step_loss}) or gradient norm ({grad_norm}): skipped "
                  f"({progress.bad_steps} in a row, train.max_bad_steps={cfg.max_bad_steps})")
        if progress.bad_steps >= cfg.max_bad_steps:
            raise TrainingDiverged(
                f"training stopped at step {step}: {progress.bad_steps} consecutive steps with a NaN/inf loss or "
                f"gradient; models/best.safetensors keeps the best dev checkpoint (step {progress.best['step']}) "
                f"and models/resume/ the last periodic one. Lower train.lr, raise train.warmup_steps or set "
                f"train.clip_norm, then run again with train.resume: false")
        return False
    progress.bad_steps = 0
    progress.loss_sum += step_loss
    progress.loss_tokens += step_tokens
    progress.tokens_seen += step_tokens
    lr = scheduler.get_last_lr()[0]
    # refresh=False: the bar redraws on its own schedule (every 30 s in a log file), not every step
    bar.set_postfix(loss=f"{progress.loss_sum / progress.loss_tokens:.3f}", lr=f"{lr:.2e}",
                    tok_s=f"{progress.tokens_seen / progress.train_time:.0f}", refresh=False)
    logged = {"train_loss": step_loss / step_tokens, "lr": lr, "tok_s": step_tokens / step_time}
    if math.isfinite(grad_norm):  # inf on an fp16 overflow step
        logged["grad_norm"] = grad_norm
    if precision.scaler:
        logged["loss_scale"] = precision.scaler.get_scale()
    run.log_metrics(logged, step)
    return True


def _evaluate_if_due(step: int, lr: float, scored: Transformer, dev: DevSet, tok: Tokenizer, cfg: TrainConfig,
                     device: torch.device, progress: Progress, run: Run, bar, d: Dist) -> bool:
    """Score dev every ``eval_every`` steps and at the last; True when this is a new best dev BLEU."""
    if step % cfg.eval_every and step != cfg.max_steps:
        return False
    scores = evaluate_dev(scored, dev, tok, cfg, device, d)
    row = {"step": step, "train_loss": progress.loss_sum / max(1, progress.loss_tokens), "lr": lr, **scores}
    progress.rows.append(row)
    progress.loss_sum, progress.loss_tokens = 0.0, 0
    run.log_metrics(dict(scores), step)
    bar.write(f"step {step}: dev loss {scores['dev_loss']:.3f}  BLEU {scores['dev_bleu']:.2f}  "
              f"EM {scores['dev_exact_match']:.2f}")
    if scores["dev_bleu"] > progress.best["dev_bleu"]:
        progress.best = {"dev_bleu": scores["dev_bleu"], "dev_exact_match": scores["dev_exact_match"], "step": step}
        progress.evals_without_gain = 0
        return True
    progress.evals_without_gain += 1
    return False


def _measurements(progress: Progress) -> dict:
    """What the run measured: metrics/train.json (numbers only, so `dvc metrics diff` compares results)."""
    train_time = max(progress.train_time, 1e-9)
    return {
        "split": "dev",  # the best_dev_* scores: the selection split (data/raw/stats.json: roles)
        "best_dev_bleu": progress.best["dev_bleu"],
        "best_dev_exact_match": progress.best["dev_exact_match"],
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
