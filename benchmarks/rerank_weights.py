"""The lexical reranker's weights on an exported model: a grid, and what the chosen ones are worth.

    .venv/bin/python -m benchmarks.rerank_weights MODEL_DIR DATA.jsonl [--beam-size 10] [--folds 2] [--repeats 5]
        [--ensemble W.safetensors:W.json ...] [--match tokens|tree] [--neighbour words|template ...]
        [--pairs TRAIN.jsonl] [--out results/rerank-NAME.json]

Decodes ``DATA.jsonl`` once (beam search, the whole n-best, with the model's literal_prefixes
setting), computes the three penalties of every hypothesis (:mod:`nmt.decoding.rerank`) and, when the model
directory has a reverse model, its reconstruction score (:mod:`nmt.decoding.reconstruction`), and scores exact
match for each point of a grid of (missing, unexplained, repeated, reconstruction) weights without
decoding again.
It prints the top hypothesis's exact match and the n-best's (the ceiling of any reranking), the
model's own weights, the best grid points, and a cross-validated estimate: the data
is cut in ``--folds`` random parts ``--repeats`` times, the best weights of the other parts are
scored on each part, so the figure is free of the optimism of choosing weights on the same pairs.
Needs the model's lexicon.json. With ``--ensemble``, the n-best is that of the model and the given
checkpoints decoding as one (:mod:`benchmarks.ensemble`): the same figures, for an ensemble.
``--match tree`` counts a hypothesis right when its Python syntax tree is the reference's
(:func:`nmt.metrics.same_code`, the *same syntax tree* metric) instead of its tokens.

``--neighbour KEY`` adds a fifth, candidate feature that the product's reranker does not have (issue
24's "agreement with the retrieved neighbour"): each hypothesis scores ``cos`` when its shape (its
Python tokens with names, strings and numbers abstracted, :func:`benchmarks.error_analysis.shape`) is
the shape of the code of the nearest training pair (the retrieval baseline, :mod:`nmt.retrieval`, over
the export's ``retrieval.jsonl.gz`` or ``--pairs``), ``cos`` being that pair's TF-IDF cosine with the
description; 0 otherwise. The descriptions are compared by ``KEY`` (:data:`RETRIEVAL_KEYS`): their
words, or their template (the description as the model reads it: names and literals replaced by
placeholders, so that "call foo with x" finds "call bar with y" before another line about foo).
Its weight joins the grid, and the cross-validated figure with it is printed beside the one without
it, from the same folds. Each ``--neighbour`` given is scored on the one decode. ``--out`` also
writes the figures as JSON (the command, the export, the split, the n-best's figures, and per
--neighbour key what retrieval alone gets and the cross-validated exact match with and without it).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import random
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.ensemble import parse_member, with_members
from benchmarks.error_analysis import shape
from nmt import metrics
from nmt.data.pairs import read_jsonl
from nmt.decoding.rerank import LexicalWeights, penalties
from nmt.decoding.translator import Translator
from nmt.io import atomic_write_json
from nmt.metrics import is_valid_python
from nmt.placeholders import mask_description, mask_pair, restore
from nmt.retrieval import RetrievalBaseline
from nmt.tokenizer import Tokenizer

# Up to 3x the reconstruction score's old top (0.3): on the bf16 recipe's export the selection split's
# best point had sat on that edge (0.3), and past it the best is interior (0.8). Unexplained up to 4:
# on the 12,000-step R-Drop export the best point sat on the old edge (2).
GRID = {"missing": (0.0, 1.0, 1.5, 2.0, 3.0), "unexplained": (0.0, 0.5, 1.0, 2.0, 3.0, 4.0),
        "repeated": (0.0, 0.5, 1.0, 2.0, 3.0), "reconstruction": (0.0, 0.15, 0.3, 0.6, 0.8, 1.0, 1.5, 2.0)}
NEIGHBOUR_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # --neighbour: the weight of agreeing with the neighbour's shape
# When a hypothesis counts as right: exact_match's token equality, or exact_match_ast's equal syntax trees.
MATCHES = {"tokens": metrics.same_tokens, "tree": metrics.same_code}


@dataclass(frozen=True)
class Weights:
    """A grid point: the product's lexical weights and the candidate neighbour weight (``--neighbour``)."""

    lexical: LexicalWeights
    neighbour: float = 0.0


def hypotheses(model_dir: Path, data: Path, beam_size: int,
               members: list[tuple[Path, Path]] | None = None, match: str = "tokens",
               translator: Translator | None = None) -> list[list[dict]]:
    """Per pair: each hypothesis's text, score, validity, penalties, reconstruction score (0 without a
    reverse model) and whether it is right by ``match`` (:data:`MATCHES`); the beam's best score
    first. ``members``: checkpoints (weights, config) that decode together with the model (an ensemble).
    ``translator``: ``model_dir`` already loaded (its model and defaults are changed here)."""
    right = MATCHES[match]
    translator = translator or Translator.from_pretrained(model_dir, device="cpu")
    translator.model = with_members(translator.model, members or [], translator.tokenizer.placeholder_ids)
    if translator.lexicon is None:
        raise SystemExit(f"{model_dir}: no lexicon.json; re-export the model with the export stage")
    if translator.reverse is not None:  # any weight > 0 makes translate() compute the scores
        translator.defaults = dataclasses.replace(
            translator.defaults, rerank_reconstruction=translator.defaults.rerank_reconstruction or 1.0)
    rows = read_jsonl(data)
    translations = translator.translate([r["nl"] for r in rows], beam_size=beam_size, n_best=beam_size,
                                        rerank="lexical")
    table = []
    for row, t in zip(rows, translations):
        rec = t.reconstruction or [0.0] * len(t.n_best)
        hyps = [{"text": text, "score": score, "valid": is_valid_python(text), "reconstruction": r,
                 "penalties": penalties(row["nl"], text, translator.lexicon),
                 "exact": right(text, row["code"])}
                for (text, score), r in zip(t.n_best, rec)]
        table.append(sorted(hyps, key=lambda h: -h["score"]))
    return table


def template_key(tokenizer: Tokenizer) -> Callable[[str], str]:
    """A description as the model reads it: its names and literals replaced by placeholders."""
    return lambda nl: mask_description(nl, tokenizer.name_placeholders, tokenizer.common_words).text


# How descriptions are compared when looking for the nearest training pair (--neighbour).
RETRIEVAL_KEYS: dict[str, Callable[[Tokenizer], Callable[[str], str]]] = {
    "words": lambda tokenizer: lambda nl: nl, "template": template_key}


def nearest(pairs: Sequence[tuple[str, str]], descriptions: Sequence[str],
            key: Callable[[str], str] = lambda nl: nl) -> list[tuple[int, float]]:
    """The index of each description's nearest training pair, comparing ``key(description)``, and
    their TF-IDF cosine (:mod:`nmt.retrieval`)."""
    baseline = RetrievalBaseline().fit([key(nl) for nl, _ in pairs], [code for _, code in pairs])
    return baseline.neighbours([key(nl) for nl in descriptions])


def retrieved_line(description: str, pair: tuple[str, str], tokenizer: Tokenizer) -> str:
    """The training pair's code with its own names and literals masked, filled with the description's:
    the line retrieval alone would write ("call bar with y" and the pair ("call foo with x",
    "foo ( x )") give "bar ( y )" when both names are masked in order)."""
    names, common = tokenizer.name_placeholders, tokenizer.common_words
    _, masked_code, _ = mask_pair(*pair, names=names, common=common)
    return restore(masked_code, mask_description(description, names, common).literals)


def with_neighbours(table: list[list[dict]], neighbours: Sequence[tuple[str, float]]) -> list[list[dict]]:
    """The table with each hypothesis's agreement with its pair's neighbour (:func:`agreement`)."""
    if len(neighbours) != len(table):
        raise ValueError(f"{len(neighbours)} neighbours for {len(table)} pairs")
    return [[{**h, "neighbour": agreement(h["text"], code, cos)} for h in hyps]
            for hyps, (code, cos) in zip(table, neighbours)]


def agreement(hypothesis: str, neighbour_code: str, cosine: float) -> float:
    """``cosine`` when the hypothesis has the neighbour's shape, else 0."""
    return cosine if shape(hypothesis) == shape(neighbour_code) else 0.0


# ---------------------------------------------------------------- scoring every grid point at once
# A hypothesis's reranked score is score - m*missing - u*unexplained - r*repeated + c*reconstruction
# + n*neighbour (LexicalWeights.score plus the candidate term), valid Python first. Evaluated for a whole
# grid with numpy in the same order of operations as LexicalWeights.score, so the figures are those of
# scoring each point in turn; the argmax takes the first best hypothesis, as max() over the list does.
FEATURES = (("missing", -1.0), ("unexplained", -1.0), ("repeated", -1.0), ("reconstruction", 1.0),
            ("neighbour", 1.0))


@dataclass(frozen=True)
class Arrays:
    """A table as arrays over (pair, hypothesis); lists shorter than the longest are padded."""

    score: np.ndarray  # (P, H) the model's score; -inf for padding
    features: np.ndarray  # (F, P, H) in FEATURES order
    eligible: np.ndarray  # (P, H) the hypotheses a pair chooses from: its valid ones if any, else all
    exact: np.ndarray  # (P, H) right


def as_arrays(table: list[list[dict]]) -> Arrays:
    n_pairs, width = len(table), max((len(hyps) for hyps in table), default=0)
    score = np.full((n_pairs, width), -np.inf)
    features = np.zeros((len(FEATURES), n_pairs, width))
    valid = np.zeros((n_pairs, width), dtype=bool)
    present = np.zeros((n_pairs, width), dtype=bool)
    exact = np.zeros((n_pairs, width), dtype=bool)
    for i, hyps in enumerate(table):
        for j, h in enumerate(hyps):
            score[i, j], valid[i, j], present[i, j], exact[i, j] = h["score"], h["valid"], True, h["exact"]
            p = h["penalties"]
            features[:, i, j] = (p.missing, p.unexplained, p.repeated, h["reconstruction"], h.get("neighbour", 0.0))
    eligible = np.where(valid.any(axis=1, keepdims=True), valid, present)
    return Arrays(score, features, eligible, exact)


def weight_vector(w: Weights | LexicalWeights) -> tuple[float, ...]:
    if isinstance(w, LexicalWeights):
        w = Weights(w)
    lex = w.lexical
    return (lex.missing, lex.unexplained, lex.repeated, lex.reconstruction, w.neighbour)


def right_choices(arrays: Arrays, grid: Sequence[Weights | LexicalWeights], chunk: int = 256) -> np.ndarray:
    """(G, P) bool: whether each grid point's choice for each pair is right."""
    vectors = np.array([weight_vector(w) for w in grid], dtype=float).reshape(len(grid), len(FEATURES))
    out = np.zeros((len(grid), arrays.score.shape[0]), dtype=bool)
    pairs = np.arange(arrays.score.shape[0])
    for start in range(0, len(grid), chunk):
        w = vectors[start:start + chunk, :, None, None]  # (g, F, 1, 1)
        s = np.broadcast_to(arrays.score, (w.shape[0], *arrays.score.shape))  # (g, P, H)
        for f, (_, sign) in enumerate(FEATURES):
            s = s - w[:, f] * arrays.features[f] if sign < 0 else s + w[:, f] * arrays.features[f]
        s = np.where(arrays.eligible, s, -np.inf)
        out[start:start + chunk] = arrays.exact[pairs, s.argmax(axis=2)]
    return out


def cross_validated(right: np.ndarray, folds: int, repeats: int, seed: int = 0) -> list[float]:
    """Exact match (%) of each repeat: every part scored with the grid's best weights on the other parts.
    ``right``: (G, P) from :func:`right_choices`; the first best grid point wins a tie."""
    n_pairs = right.shape[1]
    rng, everything, figures = random.Random(seed), list(range(n_pairs)), []
    for _ in range(repeats):
        order = everything[:]
        rng.shuffle(order)
        parts = [order[k::folds] for k in range(folds)]
        held_out = 0
        for k, part in enumerate(parts):
            rest = [i for j, p in enumerate(parts) if j != k for i in p]
            best = int(right[:, rest].sum(axis=1).argmax())
            held_out += int(right[best, part].sum())
        figures.append(100 * held_out / n_pairs)
    return figures


def edges(best: Weights | LexicalWeights) -> list[str]:
    """The weights whose best value is the grid's largest: the optimum may lie beyond the grid."""
    if isinstance(best, LexicalWeights):
        best = Weights(best)
    out = [name for name, values in GRID.items() if getattr(best.lexical, name) == values[-1]]
    return out + (["neighbour"] if best.neighbour == NEIGHBOUR_GRID[-1] else [])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path, help="an exported model (models/export) with its lexicon.json")
    ap.add_argument("data", type=Path, help='JSON lines of {"nl", "code"}')
    ap.add_argument("--beam-size", type=int, default=10)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ensemble", action="append", default=[], metavar="WEIGHTS:CONFIG",
                    help="a checkpoint (e.g. another run's models/best.safetensors:models/best.json, same "
                         "tokenizer) that decodes together with the model; repeat for more")
    ap.add_argument("--match", choices=sorted(MATCHES), default="tokens",
                    help="a hypothesis is right when its whitespace tokens (exact_match) or its Python syntax "
                         "tree (exact_match_ast) equal the reference's")
    ap.add_argument("--neighbour", action="append", choices=sorted(RETRIEVAL_KEYS), default=[],
                    help="add the candidate feature 'has the nearest training pair's shape', the pairs compared by "
                         "their words or their template (names and literals masked); repeat to score both")
    ap.add_argument("--pairs", type=Path, default=None,
                    help="with --neighbour: the training pairs to search (default: the export's retrieval.jsonl.gz)")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures here as JSON")
    args = ap.parse_args(argv)
    try:
        members = [parse_member(spec) for spec in args.ensemble]
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"--ensemble: {e}") from None
    pairs = []
    if args.neighbour:
        from nmt.demo import load_pairs
        from nmt.errors import DataError

        try:
            pairs, _ = load_pairs(args.model_dir, args.pairs)
        except DataError as e:
            raise SystemExit(f"--neighbour: {e}") from None
    translator = Translator.from_pretrained(args.model_dir, device="cpu")
    own = translator.defaults.weights  # before hypotheses() turns the reconstruction score on
    table = hypotheses(args.model_dir, args.data, args.beam_size, members, args.match, translator)
    reverse = any(h["reconstruction"] for hyps in table for h in hyps)
    lexical = [LexicalWeights(*w) for w in itertools.product(*GRID.values()) if reverse or not w[3]]
    arrays = as_arrays(table)

    def figure(w: Weights | LexicalWeights, arrays: Arrays = arrays) -> float:
        return 100 * float(right_choices(arrays, [w])[0].mean())

    models = f", an ensemble of {1 + len(members)} models" if members else ""
    top = 100 * sum(hyps[0]["exact"] for hyps in table) / len(table)
    ceiling = 100 * sum(any(h["exact"] for h in hyps) for hyps in table) / len(table)
    result = {"command": shlex.join(["python", "-m", "benchmarks.rerank_weights", *(argv if argv is not None
                                                                                    else sys.argv[1:])]),
              "model_dir": str(args.model_dir), "data": str(args.data), "pairs": len(table),
              "beam_size": args.beam_size, "ensemble": args.ensemble,
              "reverse_model": reverse, "match": args.match, "top_hypothesis": top,
              "ceiling": ceiling, "model_weights": dataclasses.asdict(own), "model_weights_exact_match": figure(own)}
    print(f"pairs {len(table)}, beam {args.beam_size}{models}, {'with' if reverse else 'without'} a reverse model; "
          f"right: the same {'syntax tree' if args.match == 'tree' else 'tokens'}")
    print(f"top hypothesis: {top:.1f}; the gold line among the n-best (the most any reranking can get): {ceiling:.1f}")
    print(f"no weights (syntax rerank): {figure(LexicalWeights()):.1f}")
    print(f"the model's weights {own}: {figure(own):.1f}")
    if own.reconstruction:
        print(f"  the same without the reconstruction score: {figure(dataclasses.replace(own, reconstruction=0.0)):.1f}")
        print(f"  the reconstruction score alone: {figure(LexicalWeights(reconstruction=own.reconstruction)):.1f}")
    grid = [Weights(w) for w in lexical]
    result["grid"] = report_grid(arrays, grid, args.folds, args.repeats)
    result["neighbour"] = {}
    rows = read_jsonl(args.data)
    for key in args.neighbour:
        found = nearest(pairs, [r["nl"] for r in rows], RETRIEVAL_KEYS[key](translator.tokenizer))
        neighbours = [(pairs[i][1], cos) for i, cos in found]
        scored = with_neighbours(table, neighbours)
        arrays = as_arrays(scored)
        baseline = sum(MATCHES[args.match](code, r["code"]) for (code, _), r in zip(neighbours, rows))
        has_shape = sum(any(h["neighbour"] for h in hyps) for hyps in scored)
        print(f"\n--neighbour {key}: the nearest training pair's code itself (the retrieval baseline) "
              f"{100 * baseline / len(rows):.1f}; an n-best line has its shape for {100 * has_shape / len(rows):.1f}")
        retrieved = [MATCHES[args.match](retrieved_line(r["nl"], pairs[i], translator.tokenizer), r["code"])
                     for (i, _), r in zip(found, rows)]
        beyond = sum(ok and not any(h["exact"] for h in hyps) for ok, hyps in zip(retrieved, table))
        print(f"  its code with its names and literals filled from the description: right for "
              f"{100 * sum(retrieved) / len(rows):.1f}, of which the n-best lacks the reference: {100 * beyond / len(rows):.1f}")
        with_own = {n: figure(Weights(own, n), arrays) for n in NEIGHBOUR_GRID[1:]}
        for n, value in with_own.items():
            print(f"  the model's weights + neighbour {n}: {value:.1f}")
        result["neighbour"][key] = {
            "retrieval_baseline": 100 * baseline / len(rows), "nbest_has_its_shape": 100 * has_shape / len(rows),
            "retrieved_line_right": 100 * sum(retrieved) / len(rows),
            "retrieved_line_right_beyond_ceiling": 100 * beyond / len(rows),
            "model_weights_plus_neighbour": {str(n): v for n, v in with_own.items()},
            "grid": report_grid(arrays, [Weights(w, n) for n in NEIGHBOUR_GRID for w in lexical], args.folds,
                                args.repeats)}
    if args.out:
        atomic_write_json(args.out, result)
        print(f"wrote {args.out}")


def report_grid(arrays: Arrays, grid: list[Weights], folds: int, repeats: int) -> dict:
    """Print the grid's best points and the cross-validated exact match; with neighbour weights in the
    grid, also without them, on the same folds (the grid's points without come first, in the same
    order). Returns the figures."""
    right = right_choices(arrays, grid)
    em = 100 * right.mean(axis=1)
    for g in np.argsort(-em, kind="stable")[:5]:
        print(f"  grid {grid[g]}: {em[g]:.1f}")
    for name in edges(grid[int(em.argmax())]):
        print(f"  note: the best {name} weight is the grid's largest: widen the grid past it")
    figures = cross_validated(right, folds, repeats)
    if any(w.neighbour for w in grid):
        without = cross_validated(right[[i for i, w in enumerate(grid) if w.neighbour == 0.0]], folds, repeats)
        for repeat, (a, b) in enumerate(zip(without, figures)):
            print(f"cross-validated exact match, repeat {repeat}: without the neighbour {a:.1f}, with it {b:.1f}")
        print(f"cross-validated mean: without {sum(without) / len(without):.2f}, with {sum(figures) / len(figures):.2f}")
    else:
        without = None
        for repeat, figure in enumerate(figures):
            print(f"cross-validated exact match, repeat {repeat}: {figure:.1f}")
        print(f"cross-validated mean: {sum(figures) / len(figures):.2f}")
    best = grid[int(em.argmax())]
    return {"best": {**dataclasses.asdict(best.lexical), "neighbour": best.neighbour}, "best_exact_match": float(em.max()),
            "cross_validated": figures, "cross_validated_mean": sum(figures) / len(figures),
            **({"cross_validated_without_neighbour": without,
                "cross_validated_mean_without_neighbour": sum(without) / len(without)} if without else {})}


if __name__ == "__main__":
    main()
