"""Decoding over a :class:`~nmt.model.Transformer`: greedy and batched beam search.

Both decode incrementally with the model's KV cache, and both drop sequences (greedy) or sources
(beam) that are finished from the batch, so finished work stops costing compute.
Outputs are token ids without BOS/EOS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nmt.model import Transformer


@dataclass
class Hypothesis:
    tokens: list[int]
    score: float  # length-normalised log-probability (beam) or summed log-probability (greedy)


def _check_len(model: Transformer, max_len: int) -> int:
    # The first decoder input (BOS) takes position 0, so max_len outputs need max_len positions.
    return max(1, min(max_len, model.cfg.max_len))


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
    max_len = _check_len(model, max_len)
    B = src.size(0)
    memory = model.encode(src, src_mask)  # (B, S, D)
    cache = model.new_cache()
    tokens: list[list[int]] = [[] for _ in range(B)]
    scores = [0.0] * B
    rows = torch.arange(B, device=src.device)  # which original rows are still decoding
    token = torch.full((B,), bos_id, dtype=torch.long, device=src.device)
    for _ in range(max_len):
        logp = F.log_softmax(model.decode_step(token, memory, src_mask, cache).float(), dim=-1)  # (b, V)
        best_logp, token = logp.max(dim=-1)  # (b,)
        for row, tok, lp in zip(rows.tolist(), token.tolist(), best_logp.tolist()):
            scores[row] += lp
            if tok != eos_id:
                tokens[row].append(tok)
        alive = token != eos_id
        if not alive.all():
            keep = alive.nonzero().squeeze(1)  # (b',)
            if keep.numel() == 0:
                break
            rows, token = rows[keep], token[keep]
            memory, src_mask = memory[keep], src_mask[keep]
            cache = model.select_cache(cache, keep)
    return [Hypothesis(t, s) for t, s in zip(tokens, scores)]


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty (Wu et al. 2016): lp(Y) = ((5 + |Y|) / 6) ** alpha; score = log P(Y) / lp(Y)."""
    return ((5.0 + length) / 6.0) ** alpha


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
) -> list[list[Hypothesis]]:
    """Batched beam search; (B, S) sources -> for each, its ``n_best`` hypotheses, best first.

    All B x K live hypotheses form one batch. At each step the 2K best extensions of a source
    are scanned in order: one ending in EOS (among the first K) is set aside as finished, the
    first K others become the new beams. A source is done when it holds ``n_best`` finished
    hypotheses and none of its live beams can still beat the worst of them: a live beam's
    log-probability only falls as it grows, so its best possible final score is
    ``logp / lp(max_len)`` when ``alpha >= 0``.
    """
    if beam_size < 1 or n_best < 1 or n_best > beam_size:
        raise ValueError(f"need 1 <= n_best <= beam_size, got n_best={n_best}, beam_size={beam_size}")
    max_len = _check_len(model, max_len)
    B, K, device = src.size(0), beam_size, src.device
    memory = model.encode(src, src_mask).repeat_interleave(K, dim=0)  # (B*K, S, D)
    src_mask = src_mask.repeat_interleave(K, dim=0)  # (B*K, S)
    cache = model.new_cache()
    # Only beam 0 is live at the start, so the K beams do not all pick the same first token.
    beam_logp = torch.full((B, K), float("-inf"), device=device)
    beam_logp[:, 0] = 0.0
    history = torch.empty(B * K, 0, dtype=torch.long, device=device)  # (B*K, t)
    token = torch.full((B * K,), bos_id, dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    sources = list(range(B))  # original index of each source still in the batch
    best_bound = length_penalty(max_len, alpha) if alpha >= 0 else 1.0

    for step in range(max_len):
        b = len(sources)
        logp = F.log_softmax(model.decode_step(token, memory, src_mask, cache).float(), dim=-1)  # (b*K, V)
        V = logp.size(-1)
        cand = (beam_logp[:, :, None] + logp.view(b, K, V)).view(b, K * V)  # (b, K*V)
        top_logp, top_idx = cand.topk(2 * K, dim=1)  # (b, 2K)
        top_beam, top_tok = top_idx // V, top_idx % V
        length = step + 1
        last_step = step == max_len - 1

        new_beam = torch.zeros(b, K, dtype=torch.long, device=device)
        new_tok = torch.zeros(b, K, dtype=torch.long, device=device)
        new_logp = torch.full((b, K), float("-inf"), device=device)
        done = [False] * b
        for i, s in enumerate(sources):
            n_live = 0
            for rank, (lp, beam, tok) in enumerate(
                zip(top_logp[i].tolist(), top_beam[i].tolist(), top_tok[i].tolist())
            ):
                if lp == float("-inf"):
                    break
                if tok == eos_id or last_step:
                    if rank < K:
                        seq = history[i * K + beam].tolist() + ([] if tok == eos_id else [tok])
                        finished[s].append(Hypothesis(seq, lp / length_penalty(length, alpha)))
                    continue
                if n_live < K:
                    new_beam[i, n_live], new_tok[i, n_live], new_logp[i, n_live] = beam, tok, lp
                    n_live += 1
            finished[s].sort(key=lambda h: -h.score)
            del finished[s][K:]
            if len(finished[s]) >= n_best:
                worst_kept = finished[s][n_best - 1].score
                best_live = new_logp[i].max().item() / best_bound
                done[i] = last_step or best_live <= worst_kept
            done[i] = done[i] or last_step or n_live == 0

        if all(done):
            break
        # Gather the surviving beams' rows: row i*K + beam of the old batch.
        rows = (torch.arange(b, device=device)[:, None] * K + new_beam).view(-1)  # (b*K,)
        history = torch.cat([history[rows], new_tok.view(-1, 1)], dim=1)
        token, beam_logp = new_tok.view(-1), new_logp
        if any(done):
            keep_src = torch.tensor([i for i in range(b) if not done[i]], device=device)
            keep_rows = (keep_src[:, None] * K + torch.arange(K, device=device)).view(-1)
            sources = [sources[i] for i in keep_src.tolist()]
            rows, history, token = rows[keep_rows], history[keep_rows], token[keep_rows]
            beam_logp = beam_logp[keep_src]
        memory, src_mask = memory[rows], src_mask[rows]
        cache = model.select_cache(cache, rows)

    return [hyps[:n_best] for hyps in finished]
