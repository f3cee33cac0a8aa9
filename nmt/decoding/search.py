"""Decoding over a :class:`~nmt.model.Transformer`: greedy, batched beam search and sampling.

All three decode incrementally with the model's KV cache, and all drop sequences (greedy,
sampling) or sources (beam) that are finished from the batch, so finished work stops costing
compute. Outputs are token ids without BOS/EOS.

The model's next-token scores are logits, or log-probabilities for a copy model (``model.copy``).
Every decoder only applies ``log_softmax`` / ``softmax`` to them (after dividing by a temperature
or filtering, for sampling), which gives the same distributions either way: on log-probabilities
log_softmax is the identity, and log p / T is a logit of p^(1/T) just as z / T is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

from nmt.model import Transformer

if TYPE_CHECKING:  # settings.py imports this module (check_sampling): the type only, for annotations
    from nmt.decoding.settings import DecodeSettings


@dataclass
class Hypothesis:
    tokens: list[int]
    # length-normalised log-probability (beam) or summed log-probability (greedy, sampling)
    score: float
    parses: bool = True  # False: a beam search constraint refused to end it here (nmt.decoding.grammar)


# Next-token scores (b, V) (logits or log-probabilities) -> chosen token ids (b,) and their log-probabilities (b,).
Picker = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _check_len(model: Transformer, max_len: int) -> int:
    # The first decoder input (BOS) takes position 0, so max_len outputs need max_len positions.
    return max(1, min(max_len, model.cfg.max_len))


def length_limit(src_len: int, max_len_a: float, max_len_b: int) -> int:
    """Longest output for a source of ``src_len`` tokens (fairseq): ``floor(a * src_len) + b``.

    The decoders cap it further at the model's ``max_len``, so ``a * src_len`` is capped at 2**62
    first: ``a = 1e308`` would otherwise make it inf, which int() refuses.
    """
    return int(min(max_len_a * src_len, 2**62)) + max_len_b


def _decode_rows(
    model: Transformer,
    src: torch.Tensor,
    memory: torch.Tensor,
    src_mask: torch.Tensor,
    bos_id: int,
    eos_id: int,
    max_len: int,
    pick: Picker,
) -> list[Hypothesis]:
    """Extend every row one token at a time with ``pick`` until it emits EOS or reaches ``max_len``.

    Rows that emitted EOS leave the batch (memory, mask and cache, which holds the source ids
    ``src`` a copy model needs). A hypothesis's score is the sum of the log-probabilities ``pick``
    returns for its tokens, EOS included.
    """
    N = memory.size(0)
    cache = model.new_cache(src)
    tokens: list[list[int]] = [[] for _ in range(N)]
    scores = [0.0] * N
    rows = torch.arange(N, device=memory.device)  # which original rows are still decoding
    token = torch.full((N,), bos_id, dtype=torch.long, device=memory.device)
    for _ in range(max_len):
        token, token_logp = pick(model.decode_step(token, memory, src_mask, cache).float())  # (b,), (b,)
        picked = token.tolist()
        for row, tok, lp in zip(rows.tolist(), picked, token_logp.tolist()):
            scores[row] += lp
            if tok != eos_id:
                tokens[row].append(tok)
        ended = [tok == eos_id for tok in picked]
        if any(ended):
            if all(ended):
                break
            keep = torch.tensor(swap_remove_order(ended), device=memory.device)  # (b',)
            rows, token = rows[keep], token[keep]
            memory, src_mask = memory[keep], src_mask[keep]
            cache = model.drop_sources(cache, keep, keep)
    return [Hypothesis(t, s) for t, s in zip(tokens, scores)]


def swap_remove_order(ended: list[bool]) -> list[int]:
    """The rows to keep when the rows ``ended`` leave the batch, in their new order: each row that
    ended among the first ``n`` (n: the rows kept) takes the place of a kept row from past ``n``,
    and every other kept row stays where it was. The cache then moves only those few rows
    (:meth:`~nmt.model.KVCache.take_`), where keeping the order would move every row after the
    first to end. ``[F, T, F, F] -> [0, 3, 2]``."""
    n = ended.count(False)
    movers = iter(i for i in range(n, len(ended)) if not ended[i])
    return [next(movers) if ended[i] else i for i in range(n)]


def _pick_best(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    best_logp, token = F.log_softmax(logits, dim=-1).max(dim=-1)  # (b,), (b,)
    return token, best_logp


@torch.no_grad()
def greedy(
    model: Transformer,
    src: torch.Tensor,
    src_mask: torch.Tensor,
    bos_id: int,
    eos_id: int,
    max_len: int,
) -> list[Hypothesis]:
    """Pick the most likely token at each step; (B, S) sources -> B hypotheses."""
    memory = model.encode(src, src_mask)  # (B, S, D)
    return _decode_rows(model, src, memory, src_mask, bos_id, eos_id, _check_len(model, max_len), _pick_best)


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """Raise ValueError, naming the option, unless ``temperature > 0``, ``top_k >= 0`` and ``0 < top_p <= 1``."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p}")


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf the logits of tokens that top-k, then nucleus (top-p) filtering remove; (b, V) -> (b, V).

    With z the logits of one row and p = softmax(z):

    * top-k (``top_k > 0``, Fan et al. 2018): keep token v iff z_v >= z_(k), the k-th largest
      logit (ties at the boundary are all kept).
    * top-p (``top_p < 1``, Holtzman et al. 2020), on the distribution that top-k left: sort
      p_(1) >= p_(2) >= ... and keep the smallest prefix whose mass reaches ``top_p``: rank r is
      kept iff p_(1) + ... + p_(r-1) < top_p. The most likely token is always kept, so a tiny
      ``top_p`` is greedy decoding.

    Sampling then draws from q = softmax of the filtered logits, i.e. q_v = p_v / (sum of p_u over
    kept u) for kept v and 0 for the others.
    """
    V = logits.size(-1)
    if 0 < top_k < V:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (b, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (b, V)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # (b, V) mass of the better-ranked tokens
        drop_sorted = mass_before >= top_p
        drop_sorted[:, 0] = False  # the best token, even when top_p rounds to 0 in the logits' dtype (5e-324)
        drop = drop_sorted.scatter(1, order, drop_sorted)  # (b, V) back in vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def sample(
    model: Transformer,
    src: torch.Tensor,
    src_mask: torch.Tensor,
    bos_id: int,
    eos_id: int,
    max_len: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
) -> list[list[Hypothesis]]:
    """Draw ``n_samples`` outputs per source; (B, S) sources -> B lists of samples, in draw order.

    At each step the next token is drawn from q = softmax(filter(z / temperature)), z the
    model's logits and ``filter`` top-k then top-p (:func:`filter_logits`): temperature < 1
    sharpens the distribution, > 1 flattens it. A sample's score is sum_t log q_t(y_t) over its
    tokens, EOS included: its log-probability under the distribution it was drawn from.

    Draws come from ``generator`` (on the model's device) or torch's global generator: the same
    seed, sources and batch give the same samples.
    """
    check_sampling(temperature, top_k, top_p)
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")

    def pick(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The top logit shifted to 0, and the temperature kept a normal number of the logits' dtype
        # (1e-300 is 0 in float32): a tiny temperature then sends the rest to -inf (greedy), never to nan.
        t = max(temperature, torch.finfo(logits.dtype).tiny)
        z = (logits - logits.max(dim=-1, keepdim=True).values) / t
        logp = F.log_softmax(filter_logits(z, top_k, top_p), dim=-1)  # (b, V)
        token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)  # (b,)
        return token, logp.gather(1, token[:, None]).squeeze(1)

    B, n = src.size(0), n_samples
    memory = model.encode(src, src_mask).repeat_interleave(n, dim=0)  # (B*n, S, D)
    src, src_mask = src.repeat_interleave(n, dim=0), src_mask.repeat_interleave(n, dim=0)  # (B*n, S)
    hyps = _decode_rows(model, src, memory, src_mask, bos_id, eos_id, _check_len(model, max_len), pick)
    return [hyps[i * n : (i + 1) * n] for i in range(B)]


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty (Wu et al. 2016): lp(Y) = ((5 + |Y|) / 6) ** alpha; score = log P(Y) / lp(Y).

    A huge alpha (1e300) gives inf, as float ** raises OverflowError rather than return it.
    """
    try:
        return ((5.0 + length) / 6.0) ** alpha
    except OverflowError:
        return float("inf")


class Constraint(Protocol):
    """What beam search asks before it keeps an extension (:mod:`nmt.decoding.grammar`)."""

    def checks(self, token: int) -> bool:
        """False when appending ``token`` to an allowed prefix is always allowed (skips :meth:`allows`)."""

    def allows(self, source: int, tokens: list[int], final: bool) -> bool:
        """Whether hypothesis ``tokens`` of batch source ``source`` may grow (``final``: may end)."""


@dataclass
class _Beams:
    """The live state of a batched beam search: B x K rows, those of finished sources dropped."""

    memory: torch.Tensor  # (b, S, D): each source once; its K hypotheses are rows i*K ... i*K+K-1 below
    src_mask: torch.Tensor  # (b, S)
    cache: object  # the decoder's KV cache: self-attention one row per hypothesis, the source's entries per source
    logp: torch.Tensor  # (b, K) running log-probabilities
    history: torch.Tensor  # (b*K, t) tokens so far
    token: torch.Tensor  # (b*K,) the last token
    sources: list[int]  # original index of each source still in the batch


@torch.no_grad()
def beam_search(
    model: Transformer,
    src: torch.Tensor,
    src_mask: torch.Tensor,
    bos_id: int,
    eos_id: int,
    max_len: int,
    beam_size: int = 4,
    alpha: float = 0.6,
    n_best: int = 1,
    constraint: Constraint | None = None,
) -> list[list[Hypothesis]]:
    """Batched beam search; (B, S) sources -> for each, its ``n_best`` hypotheses, best first.

    All B x K live hypotheses form one batch, over one copy of each source: the decoder reads a
    source's memory once per step for its K hypotheses (:meth:`~nmt.model.Transformer.decode_step`
    groups them), instead of K copies of it. At each step the 2K best extensions of a source
    are scanned in order: one ending in EOS (among the first K) is set aside as finished, the
    first K others become the new beams. A source is done when it holds ``n_best`` finished
    hypotheses and none of its live beams can still beat the worst of them: a live beam's
    log-probability only falls as it grows, so its best possible final score is
    ``logp / lp(max_len)`` when ``alpha >= 0``.

    A ``constraint`` (:class:`Constraint`, e.g. :class:`nmt.decoding.grammar.PythonLineConstraint`)
    vets extensions as they are scanned: a live one it refuses is skipped and the next takes its
    slot; an ended one it refuses is kept with ``parses=False``, after every one that parses (the
    first dropped when more than K end), so a source always gets its ``n_best`` hypotheses.
    """
    if beam_size < 1 or n_best < 1 or n_best > beam_size:
        raise ValueError(f"need 1 <= n_best <= beam_size, got n_best={n_best}, beam_size={beam_size}")
    max_len = _check_len(model, max_len)
    B, K, device = src.size(0), beam_size, src.device
    # Only beam 0 is live at the start, so the K beams do not all pick the same first token.
    logp = torch.full((B, K), float("-inf"), device=device)
    logp[:, 0] = 0.0
    state = _Beams(memory=model.encode(src, src_mask), src_mask=src_mask, cache=model.new_cache(src),
                   logp=logp, history=torch.empty(B * K, 0, dtype=torch.long, device=device),
                   token=torch.full((B * K,), bos_id, dtype=torch.long, device=device), sources=list(range(B)))
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    best_bound = length_penalty(max_len, alpha) if alpha >= 0 else 1.0

    for step in range(max_len):
        b = len(state.sources)
        # The first step decodes one row per source (G = 1): the K beams all hold BOS, and only
        # beam 0 is live. _advance then widens the cache to K rows per source.
        G = 1 if step == 0 else K
        token = state.token.view(b, K)[:, :G].reshape(-1)  # (b*G,)
        step_logp = F.log_softmax(model.decode_step(token, state.memory, state.src_mask, state.cache).float(),
                                  dim=-1)  # (b*G, V)
        V = step_logp.size(-1)
        cand = (state.logp[:, :G, None] + step_logp.view(b, G, V)).view(b, G * V)  # (b, G*V)
        top_logp, top_idx = cand.topk(min(2 * K, G * V), dim=1)  # (b, 2K): fewer when one row has fewer tokens
        last_step = step == max_len - 1
        # The scan is plain Python over lists: indexing tensors element by element here cost more
        # than the decoder step itself. Dead slots keep beam 0, token 0 and -inf.
        rows = [_scan_source(finished[s], state.history, i, K, lps, beams, toks, eos_id, step + 1, alpha, last_step,
                             n_best, best_bound, constraint, s)
                for i, (s, lps, beams, toks) in enumerate(zip(state.sources, top_logp.tolist(),
                                                              (top_idx // V).tolist(), (top_idx % V).tolist()))]
        done = [row[3] for row in rows]
        if all(done):
            break
        _advance(model, state, rows, done, K, G)
    return [hyps[:n_best] for hyps in finished]


def _scan_source(finished: list[Hypothesis], history: torch.Tensor, i: int, K: int, lps: list[float],
                 beams: list[int], toks: list[int], eos_id: int, length: int, alpha: float, last_step: bool,
                 n_best: int, best_bound: float, constraint: Constraint | None = None,
                 source: int = 0) -> tuple[list[int], list[int], list[float], bool]:
    """Source i's 2K best extensions, in order: finished ones kept (if among the first K), the
    first K others as its new beams; those ``constraint`` refuses are skipped (``source``: the
    source's index in the batch, for the constraint). Returns (beam, token, log-probability) per
    new beam and whether the source is done."""
    new_beam, new_tok, new_logp = [0] * K, [0] * K, [float("-inf")] * K
    n_live = 0
    for rank, (lp, beam, tok) in enumerate(zip(lps, beams, toks)):
        if lp == float("-inf"):
            break
        if tok == eos_id or last_step:
            if rank < K:
                seq = history[i * K + beam].tolist() + ([] if tok == eos_id else [tok])
                parses = constraint is None or constraint.allows(source, seq, final=True)
                finished.append(Hypothesis(seq, lp / length_penalty(length, alpha), parses))
            continue
        if constraint is not None and n_live < K and constraint.checks(tok):
            if not constraint.allows(source, history[i * K + beam].tolist() + [tok], final=False):
                continue
        if n_live < K:
            new_beam[n_live], new_tok[n_live], new_logp[n_live] = beam, tok, lp
            n_live += 1
    # Lines that parse first, so those that do not are the first to go when more than K end; the
    # stopping test still looks at every ended line, so the search takes as long as unconstrained.
    finished.sort(key=lambda h: (not h.parses, -h.score))
    del finished[K:]
    done = False
    if len(finished) >= n_best:
        worst_kept = sorted(h.score for h in finished)[-n_best]
        done = last_step or max(new_logp) / best_bound <= worst_kept
    return new_beam, new_tok, new_logp, done or last_step or n_live == 0


def stay_in_place(beams: list[int], toks: list[int], logps: list[float]) -> tuple[list[int], list[int], list[float]]:
    """A source's new beams (parent beam, token, log-probability; best first) laid out so that as
    many as can stay in their parent's row: the best child of each parent takes the parent's slot,
    the other children the slots left, and a dead beam (-inf) its own slot, parent unchanged.

    The search does not depend on where a beam sits among its source's K rows, but the cache does:
    a beam whose row holds another parent's history must have it copied (:meth:`~nmt.model.KVCache.take_`).
    Laid out best first, six rows in ten changed at beam 8 (the ranks shuffle as scores cross);
    laid out this way only the second and later children of a parent do, the fewest possible.
    ``([1, 1, 0], [7, 8, 9], [-1, -2, -3]) -> ([0, 1, 1], [9, 7, 8], [-3, -1, -2])``.
    """
    K = len(beams)
    slot_of: list[int | None] = [None] * K  # the pick each slot holds
    others = []
    for pick, (beam, lp) in enumerate(zip(beams, logps)):
        if lp != float("-inf") and slot_of[beam] is None:
            slot_of[beam] = pick
        else:
            others.append(pick)
    free = iter(slot for slot in range(K) if slot_of[slot] is None)
    for pick in others:
        if logps[pick] != float("-inf"):  # dead picks hold no slot: the slots left over are dead
            slot_of[next(free)] = pick
    out_beams, out_toks, out_logps = [0] * K, [0] * K, [float("-inf")] * K
    for slot in range(K):
        pick = slot_of[slot]
        if pick is None:  # a dead beam: nothing to copy, the row keeps what it held
            out_beams[slot] = slot
        else:
            out_beams[slot], out_toks[slot], out_logps[slot] = beams[pick], toks[pick], logps[pick]
    return out_beams, out_toks, out_logps


def _advance(model: Transformer, state: _Beams, rows: list[tuple], done: list[bool], K: int, G: int) -> None:
    """Move ``state`` to the new beams, then drop the sources that are done. ``G``: the cache's rows
    per source this step (1 at the first step, then K)."""
    device, b = state.token.device, len(state.sources)
    if G == K:
        rows = [stay_in_place(*row[:3]) for row in rows]
    new_beam_t = torch.tensor([r[0] for r in rows], dtype=torch.long, device=device)  # (b, K)
    new_tok_t = torch.tensor([r[1] for r in rows], dtype=torch.long, device=device)  # (b, K)
    # Gather the surviving beams' rows: row i*K + beam of the old batch, a permutation within
    # each source's K rows.
    sources = torch.arange(b, device=device)[:, None]  # (b, 1)
    gather = (sources * K + new_beam_t).view(-1)  # (b*K,)
    state.history = torch.cat([state.history[gather], new_tok_t.view(-1, 1)], dim=1)
    state.token, state.logp = new_tok_t.view(-1), torch.tensor([r[2] for r in rows], device=device)
    if G == K:
        state.cache = model.reorder_hypotheses(state.cache, gather)  # the source's entries stay
    else:  # the first step's one row per source becomes its K beams' rows
        state.cache = model.select_cache(state.cache, (sources * G + new_beam_t).view(-1), sources.view(-1))
    if any(done):  # drop finished sources: every per-row tensor loses their K rows
        keep_src = torch.tensor(swap_remove_order(done), device=device)  # (b',): the batch's last fill the gaps
        keep_rows = (keep_src[:, None] * K + torch.arange(K, device=device)).view(-1)
        state.sources = [state.sources[i] for i in keep_src.tolist()]
        state.history, state.token, state.logp = state.history[keep_rows], state.token[keep_rows], state.logp[keep_src]
        state.memory, state.src_mask = state.memory[keep_src], state.src_mask[keep_src]
        state.cache = model.drop_sources(state.cache, keep_rows, keep_src)


def decode(model: Transformer, src: torch.Tensor, src_mask: torch.Tensor, bos_id: int, eos_id: int,
           settings: DecodeSettings, generator: torch.Generator | None = None,
           constraint: Constraint | None = None) -> list[list[Hypothesis]]:
    """Each source's hypotheses, best first, by the search ``settings`` name: sampling, greedy
    (``beam_size`` 1) or beam search (the whole beam when reranking will choose among it; with
    ``constraint`` vetting its extensions). The one place that choice is made: the translator and
    dev evaluation both decode here."""
    max_len = length_limit(src.size(1), settings.max_len_a, settings.max_len_b)
    args = (model, src, src_mask, bos_id, eos_id, max_len)
    if settings.sample:
        samples = sample(*args, temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
                         n_samples=settings.n_best, generator=generator)
        return [sorted(hyps, key=lambda h: -h.score) for hyps in samples]
    if settings.beam_size == 1:
        return [[h] for h in greedy(*args)]
    return beam_search(*args, beam_size=settings.beam_size, alpha=settings.length_penalty,
                       n_best=settings.decodes_n_best, constraint=constraint)
