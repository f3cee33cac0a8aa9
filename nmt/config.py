"""Every option of the project, declared once: its section, type, default, help text and range.

The dataclasses below are params.yaml's schema and its one source of defaults (a test holds
params.yaml to them). :mod:`nmt.params` reads a file into them, naming every problem.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

DEFAULT_PARAMS = Path("params.yaml")


def opt(default: Any, help: str, check: Callable[[Any], bool] | None = None, rule: str = "") -> Any:
    """Declare an option: its default, its help text, and an optional range check."""
    return field(default=default, metadata={"help": help, "check": check, "rule": rule})


def section(cls: type) -> Any:
    return field(default_factory=cls, metadata={"help": cls.__doc__ or ""})


positive = (lambda v: v > 0, "must be > 0")
non_negative = (lambda v: v >= 0, "must be >= 0")
fraction = (lambda v: 0 <= v < 1, "must be in [0, 1)")


# --------------------------------------------------------------------------- data
@dataclass
class StdlibConfig:
    """Pairs extracted with `ast` from the running interpreter's standard library."""

    dev_fraction: float = opt(0.05, "share of functions hashed into the dev split", *fraction)
    test_fraction: float = opt(0.05, "share of functions hashed into the test split", *fraction)


@dataclass
class DjangoConfig:
    """Django pseudo-code -> Python (Oda et al. 2015), standard 16,000/1,000/1,805 split."""

    origin: Literal["shipped", "download", "local"] = opt(
        "shipped", "shipped: the train/dev pairs in this repository (no network; train's tail selects, dev is the "
                   "test split) | download: all three standard splits from the authors' repository at a pinned "
                   "commit (dev selects, test reports) | local: the files in local_dir")
    local_dir: str = opt("", "with origin: local, a directory with ready train.jsonl/dev.jsonl[/test.jsonl]")
    timeout_s: float = opt(10.0, "network timeout of the download, seconds", *positive)

    def validate(self) -> list[str]:
        if self.origin == "local" and not self.local_dir:
            return ["data.django.local_dir: required when data.django.origin is 'local'"]
        if self.origin != "local" and self.local_dir:
            return [(f"data.django.local_dir: only read with data.django.origin: local (it is {self.origin!r}); "
                     "set the origin to local, or empty local_dir")]
        return []


@dataclass
class ConcodeConfig:
    """CodeXGLUE text-to-code (CONCODE, Java) from the Hugging Face hub or a local copy."""

    local_dir: str = opt("", "directory with CodeXGLUE's train.json/dev.json/test.json; empty = hub")
    hub_timeout_s: float = opt(10.0, "seconds to wait for the hub before failing", *positive)


@dataclass
class JsonlConfig:
    """The user's own {"nl", "code"} JSON-lines files."""

    train: str = opt("", "path of the training file")
    dev: str = opt("", "path of the dev file")
    test: str = opt("", "path of the test file")


@dataclass
class DataConfig:
    """Where the (description, code) pairs come from: the download stage."""

    source: Literal["stdlib", "django", "concode", "jsonl"] = opt("django", "which data source to use")
    max_nl_tokens: int = opt(128, "drop pairs whose description has more cl100k tokens (train split only for benchmark sources)", *positive)
    max_code_tokens: int = opt(128, "drop pairs whose code has more cl100k tokens (train split only for benchmark sources)", *positive)
    max_bad_fraction: float = opt(0.01, "share of a data file's lines that may be bad (not UTF-8 or JSON, nl/code "
                                        "missing, not strings or empty, over 100 kB): they are skipped and counted "
                                        "in stats.json; more stops the download stage naming the first",
                                  lambda v: 0 <= v <= 1, "must be in [0, 1]")
    drop_duplicates: bool = opt(False, "drop exact (nl, code) repeats from the splits the length limits apply to "
                                       "(counted in stats.json either way; off keeps benchmark training sets as published)")
    select_size: int = opt(1000, "a source without a test split (shipped Django, concode without test code): its dev "
                                 "pairs become the test split and this many pairs from the end of train the selection "
                                 "split", *positive)
    stdlib: StdlibConfig = section(StdlibConfig)
    django: DjangoConfig = section(DjangoConfig)
    concode: ConcodeConfig = section(ConcodeConfig)
    jsonl: JsonlConfig = section(JsonlConfig)

    def validate(self) -> list[str]:
        problems = []
        if self.source == "stdlib" and self.stdlib.dev_fraction + self.stdlib.test_fraction >= 1:
            problems.append("data.stdlib: dev_fraction + test_fraction must be < 1")
        if self.source == "jsonl":
            for split in ("train", "dev", "test"):
                if not getattr(self.jsonl, split):
                    problems.append(f"data.jsonl.{split}: required when data.source is 'jsonl'")
        return problems


# --------------------------------------------------------------------------- tokenize
@dataclass
class TokenizeConfig:
    """Compact vocabulary over cl100k_base with a lossless 256-byte fallback."""

    min_freq: int = opt(2, "keep a cl100k token if it occurs at least this often in the training split", *positive)
    max_vocab: int = opt(8000, "at most this many cl100k tokens (bytes and specials come on top)", *positive)
    string_placeholders: bool = opt(True, "replace quoted literals of the description, and the same literals in "
                                           "the code, by _STR:0_, _STR:1_ ... (restored after decoding; "
                                           "recorded in the tokenizer file)")
    name_placeholders: bool = opt(True, "also replace code-like names of the description (snake_case, camelCase, "
                                         "with digits) and their occurrences in the code by _ID:0_ ... "
                                         "(needs string_placeholders)")
    rare_words: int = opt(20, "with name_placeholders, a plain word of the description (toks, hextet) is a name "
                             "too when fewer than this many training descriptions contain it; 0 = code-like "
                             "names only", *non_negative)
    placeholder_tokens: bool = opt(True, "make each placeholder one token (cl100k spells _ID:12_ as 5) and let "
                                          "decoding emit only the placeholders its source holds "
                                          "(needs string_placeholders)")
    neighbour_code: bool = opt(False, "complete each description with the code of the training pair whose description "
                                      "is nearest (TF-IDF cosine; a training pair gets its nearest other pair), after "
                                      "EOS, its literals masked as the description's: the encoder and the copy "
                                      "pointer read a similar line (nmt/neighbours.py; recorded in the tokenizer file)")

    def validate(self) -> list[str]:
        problems = []
        if self.name_placeholders and not self.string_placeholders:
            problems.append("tokenize.name_placeholders: needs tokenize.string_placeholders: true "
                            "(they share the literals file)")
        if self.rare_words and not self.name_placeholders:
            problems.append("tokenize.rare_words: needs tokenize.name_placeholders: true (rare words become names)")
        if self.placeholder_tokens and not self.string_placeholders:
            problems.append("tokenize.placeholder_tokens: needs tokenize.string_placeholders: true "
                            "(without it there are no placeholders)")
        return problems


# --------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    """The encoder-decoder Transformer (pre-LayerNorm, tied embeddings, optional copying)."""

    d_model: int = opt(256, "width of the residual stream", *positive)
    n_heads: int = opt(4, "attention heads (must divide d_model)", *positive)
    enc_layers: int = opt(3, "encoder layers", *positive)
    dec_layers: int = opt(3, "decoder layers", *positive)
    d_ff: int = opt(1024, "hidden width of the feed-forward blocks", *positive)
    dropout: float = opt(0.1, "dropout on residual branches, attention and embeddings", *fraction)
    word_dropout: float = opt(0.0, "training only: share of input tokens (source and target prefix) whose "
                                   "embedding is zeroed, position kept (Sennrich & Zhang 2019): a regulariser "
                                   "for small data", *fraction)
    positions: Literal["sinusoidal", "learned"] = opt("sinusoidal", "position encoding")
    max_len: int = opt(512, "longest source or target sequence the model accepts (tokens)", *positive)
    copy: bool = opt(True, "pointer-generator (See et al. 2017): the decoder can copy source tokens "
                            "(names, strings) into the output; the model then outputs log-probabilities")

    def validate(self) -> list[str]:
        if self.d_model % self.n_heads:
            return [f"model.n_heads: {self.n_heads} does not divide model.d_model={self.d_model}"]
        return []


# --------------------------------------------------------------------------- train
@dataclass
class TrainConfig:
    """Optimisation, evaluation during training, and early stopping."""

    max_steps: int = opt(1300, "optimizer steps to train for (upper bound, early stopping may end sooner)", *positive)
    batch_tokens: int = opt(2048, "token budget of one batch (source + target tokens, padding included)", *positive)
    accumulate: int = opt(1, "batches whose gradients are summed before one optimizer step", *positive)
    lr: float = opt(2e-3, "peak learning rate", *positive)
    schedule: Literal["inverse_sqrt", "cosine"] = opt("inverse_sqrt", "decay after warmup")
    warmup_steps: int = opt(150, "linear warmup steps", *non_negative)
    min_lr_ratio: float = opt(0.1, "cosine: final lr as a share of the peak", *fraction)
    weight_decay: float = opt(0.01, "AdamW decay (never applied to norms, biases, embeddings)", *non_negative)
    beta1: float = opt(0.9, "AdamW beta1", *fraction)
    beta2: float = opt(0.98, "AdamW beta2", *fraction)
    label_smoothing: float = opt(0.1, "label smoothing of the cross-entropy", *fraction)
    rdrop: float = opt(0.0, "R-Drop (Liang et al. 2021): each batch runs twice under different dropout and the "
                            "loss adds rdrop/2 x the symmetric KL between the two output distributions, a "
                            "regulariser for small data (0 = off; the paper's translation runs use 5); doubles "
                            "each step's compute", *non_negative)
    clip_norm: float = opt(1.0, "gradient clipping by global norm (0 = off)", *non_negative)
    eval_every: int = opt(325, "steps between dev evaluations (loss, greedy BLEU, exact match)", *positive)
    eval_examples: int = opt(500, "dev pairs decoded at each evaluation (0 = all)", *non_negative)
    eval_max_len: int = opt(128, "longest decode during dev evaluation (tokens)", *positive)
    eval_beam_size: int = opt(1, "beam width of the dev decode (1 = greedy, the fast default)", *positive)
    patience: int = opt(0, "stop after this many evaluations without a better dev BLEU (0 = never)", *non_negative)
    ema_decay: float = opt(0.0, "exponential moving average of the weights, used for dev scores and the saved "
                                "checkpoint (0 = off; e.g. 0.999)", *fraction)
    device: Literal["auto", "cpu", "cuda"] = opt("auto", "where to train; auto = cuda when available")
    threads: int = opt(0, "CPU threads for torch (0 = torch's default)", *non_negative)
    checkpoint_every: int = opt(100, "steps between resume checkpoints (models/resume/), also written on "
                                     "Ctrl-C and SIGTERM; removed once training ends", *positive)
    resume: bool = opt(True, "continue from models/resume/ when a killed run left one (params must match, "
                             "max_steps aside); false starts over")
    max_bad_steps: int = opt(5, "stop after this many consecutive steps with a NaN/inf loss or gradient "
                                "(each is skipped: no update)", *positive)
    dist_timeout_s: float = opt(300.0, "under torchrun: seconds a rank waits for the others (joining, each "
                                       "all-reduce) before the job fails instead of hanging", *positive)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt(
        "auto", "dtype of the forward pass and loss (torch.autocast; weights, gradients and AdamW stay fp32): "
                "auto = bf16 on a GPU that has it, else fp16 with loss scaling, fp32 on the CPU; bf16 also runs "
                "on the CPU, fp16 needs a GPU")
    compile: bool = opt(False, "torch.compile the training step's model (the first steps compile; dev "
                               "evaluation and decoding stay eager)")


# --------------------------------------------------------------------------- reverse
@dataclass
class ReverseConfig:
    """A code -> description model, trained on the same pairs swapped; the lexical reranker can weigh
    each hypothesis by how well it gives its description back (evaluate.rerank_reconstruction)."""

    max_steps: int = opt(0, "optimizer steps of the reverse model (0 = no reverse model); its architecture, "
                            "optimizer and schedule are the model and train sections'", *non_negative)
    batch_tokens: int = opt(0, "token budget of one reverse batch (0 = train.batch_tokens); its own, so halving "
                               "the forward batch for R-Drop need not halve the reverse model's data", *non_negative)
    rdrop: float = opt(0.0, "R-Drop weight of the reverse model (train.rdrop is the forward model's and is not "
                            "inherited: R-Drop costs 2 passes a step, and the reverse model has a fixed step budget)",
                       *non_negative)
    eval_examples: int = opt(200, "dev pairs it decodes once, at its last step, for its report (0 = all)",
                             *non_negative)


# --------------------------------------------------------------------------- evaluate
Rerank = Literal["none", "syntax", "lexical"]
RERANK_CHOICES: tuple[str, ...] = typing.get_args(Rerank)


@dataclass
class EvaluateConfig:
    """Decoding the test split and scoring it against the retrieval baseline."""

    beam_size: int = opt(8, "beam width for the test decode (1 = greedy)", *positive)
    length_penalty: float = opt(0.6, "GNMT length penalty alpha used by beam search", *non_negative)
    max_len_a: float = opt(0.0, "longest output grows by this many tokens per source token (fairseq's max_len_a)", *non_negative)
    max_len_b: int = opt(200, "longest output = max_len_a * source tokens + max_len_b (capped by model.max_len)", *positive)
    rerank: Rerank = opt("lexical", "syntax: output the best-scoring hypothesis of the beam that is valid Python "
                                 "(else the best one); lexical: the same, with each score lowered by how far "
                                 "the hypothesis strays from its description's words (nmt/decoding/rerank.py)")
    rerank_missing: float = opt(2.0, "lexical rerank: weight of the description's words a hypothesis leaves out "
                                     "(tuned on the Django dev split)", *non_negative)
    rerank_unexplained: float = opt(1.0, "lexical rerank: weight of a hypothesis's words its description does "
                                         "not hold", *non_negative)
    rerank_repeated: float = opt(2.0, "lexical rerank: weight of names a hypothesis repeats more often than its "
                                      "description does", *non_negative)
    rerank_reconstruction: float = opt(0.0, "lexical rerank: weight of log P(description | hypothesis) under the "
                                            "reverse model (needs reverse.max_steps > 0; 0 = off)", *non_negative)
    literal_prefixes: bool = opt(True, "give a literal that the description calls a raw string (bytes string) "
                                        "its r (b) prefix when the output lacks one")
    grammar: bool = opt(False, "beam search keeps only hypotheses that can still become valid Python: none ends "
                               "unless it parses, none closes a bracket it did not open (nmt/decoding/grammar.py)")
    batch_size: int = opt(64, "sources decoded together", *positive)
    n_examples: int = opt(6, "rows of the example table (fixed sample of the test split)", *non_negative)


# The evaluate options that say how to decode: the export records them (config.json "decoding"),
# and `nmt generate` / `nmt evaluate` use them unless told otherwise.
RERANK_WEIGHTS = ("rerank_missing", "rerank_unexplained", "rerank_repeated", "rerank_reconstruction")  # the lexical reranker's
DECODING_KEYS = ("beam_size", "length_penalty", "max_len_a", "max_len_b", "rerank", *RERANK_WEIGHTS,
                 "literal_prefixes", "grammar")


# --------------------------------------------------------------------------- export / mlflow
@dataclass
class ExportConfig:
    """The self-contained model directory."""

    name: str = opt("nmt-text2code", "model name used in the model card and the MLflow model registry")
    register: bool = opt(True, "log the exported model to MLflow as a pyfunc and register it under export.name (needs mlflow.enabled)")
    serve_max_batch: int = opt(32, "the served model decodes concurrent requests together, up to this many descriptions "
                                   "in one batch (1 = each request apart)", *positive)
    serve_max_wait_ms: float = opt(10.0, "the served model waits at most this long for concurrent requests to join a "
                                         "batch before decoding it", *non_negative)


@dataclass
class MlflowConfig:
    """MLflow tracking: the store is MLFLOW_TRACKING_URI when set, else sqlite:///mlflow.db at the repo root."""

    enabled: bool = opt(True, "log each training run (params, curves, system metrics, evaluation, model) to MLflow")
    experiment: str = opt("nmt", "MLflow experiment name")
    required: bool = opt(True, "fail when the tracking store cannot be reached; false = warn and train without tracking")
    reconnect_s: float = opt(60.0, "with required: false, seconds between checks whether a tracking server that "
                             "stopped answering is back; logging then resumes into the same run (what came "
                             "meanwhile is not logged); 0 = never check", *non_negative)
    system_metrics: bool = opt(True, "sample CPU, memory, disk, network (and GPU through NVML) during training")
    system_metrics_interval_s: float = opt(5.0, "seconds between system metric samples", *positive)


@dataclass
class Params:
    """All of params.yaml."""

    seed: int = opt(1234, "seed of every random number generator", *non_negative)
    data: DataConfig = section(DataConfig)
    tokenize: TokenizeConfig = section(TokenizeConfig)
    model: ModelConfig = section(ModelConfig)
    train: TrainConfig = section(TrainConfig)
    reverse: ReverseConfig = section(ReverseConfig)
    evaluate: EvaluateConfig = section(EvaluateConfig)
    export: ExportConfig = section(ExportConfig)
    mlflow: MlflowConfig = section(MlflowConfig)

    def validate(self) -> list[str]:
        problems = []
        if self.evaluate.rerank != "none" and self.data.source == "concode":
            problems.append(f"evaluate.rerank: {self.evaluate.rerank!r} keeps valid *Python*, "
                            "but data.source 'concode' is Java")
        if self.evaluate.rerank_reconstruction > 0:
            if self.evaluate.rerank != "lexical":
                problems.append("evaluate.rerank_reconstruction: weighs the lexical reranker's hypotheses; "
                                f"set evaluate.rerank: lexical (it is {self.evaluate.rerank!r}) or the weight to 0")
            if self.reverse.max_steps == 0:
                problems.append("evaluate.rerank_reconstruction: needs a reverse model; set reverse.max_steps > 0 "
                                "or the weight to 0")
        return problems
