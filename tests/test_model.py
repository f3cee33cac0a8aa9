"""The Transformer's masks, its KV cache, and decoding: greedy, beam search, overfitting."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from nmt.batching import collate, token_budget_batches
from nmt.config import ModelConfig
from nmt.decoding.search import beam_search, greedy, length_penalty, stay_in_place, swap_remove_order
from nmt.model import KVCache, Transformer

V, PAD, BOS, EOS = 40, 0, 1, 2


def tiny(positions: str = "sinusoidal", dropout: float = 0.0, seed: int = 0, copy: bool = False) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=32, n_heads=4, enc_layers=2, dec_layers=2, d_ff=64, dropout=dropout,
                      positions=positions, max_len=64, copy=copy)
    return Transformer(cfg, V, PAD).eval()


def random_batch(seed: int = 1, n: int = 5):
    g = torch.Generator().manual_seed(seed)
    srcs = [torch.randint(3, V, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g).tolist() for _ in range(n)]
    tgts = [torch.randint(3, V, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist() for _ in range(n)]
    return srcs, tgts, collate(srcs, tgts, PAD, BOS, EOS, 64)


def test_word_dropout_zeroes_whole_token_embeddings_at_its_rate_in_training_only():
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_heads=4, enc_layers=1, dec_layers=1, d_ff=64, dropout=0.0, max_len=64,
                      word_dropout=0.3)
    model = Transformer(cfg, V, PAD)
    ids = torch.randint(3, V, (64, 48))
    positions = model.pos_table[:48]  # (L, D): what is left of a dropped token
    reference = model.eval().embed_tokens(ids)
    dropped = model.train().embed_tokens(ids)
    is_dropped = torch.isclose(dropped, positions.expand_as(dropped)).all(-1)  # (B, L)
    kept = ~is_dropped
    assert torch.equal(dropped[kept], reference[kept])  # kept tokens are not rescaled
    assert abs(is_dropped.float().mean().item() - 0.3) < 0.03  # seeded; 3,072 draws, sd 0.008
    assert not torch.equal(is_dropped, torch.isclose(model.embed_tokens(ids), positions).all(-1))  # redrawn

    plain = Transformer(dataclasses.replace(cfg, word_dropout=0.0), V, PAD)
    plain.load_state_dict(model.state_dict())
    _, _, batch = random_batch()
    model.eval()
    plain.eval()
    assert torch.equal(model(batch.src, batch.src_mask, batch.tgt_in), plain(batch.src, batch.src_mask, batch.tgt_in))


@pytest.mark.parametrize("copy", [False, True])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_decoder_output_at_t_ignores_later_target_tokens(positions, copy):
    model = tiny(positions, copy=copy)
    _, _, b = random_batch()
    t = 3
    changed = b.tgt_in.clone()
    changed[:, t + 1 :] = torch.randint(3, V, changed[:, t + 1 :].shape)
    with torch.no_grad():
        a = model(b.src, b.src_mask, b.tgt_in)[:, : t + 1]
        c = model(b.src, b.src_mask, changed)[:, : t + 1]
        later = model(b.src, b.src_mask, changed)[:, t + 1 :]
    torch.testing.assert_close(a, c)
    assert not torch.allclose(later, model(b.src, b.src_mask, b.tgt_in)[:, t + 1 :])  # the test can see a change


@pytest.mark.parametrize("copy", [False, True])
def test_outputs_ignore_what_sits_in_padded_source_positions(copy):
    model = tiny(copy=copy)
    _, _, b = random_batch()
    assert (~b.src_mask).any(), "the batch must contain padding for this test to mean anything"
    garbage = b.src.masked_fill(~b.src_mask, 7)  # real ids where the mask says padding
    with torch.no_grad():
        torch.testing.assert_close(model(b.src, b.src_mask, b.tgt_in), model(garbage, b.src_mask, b.tgt_in))
        unmasked = model(garbage, garbage != PAD, b.tgt_in)
    assert not torch.allclose(unmasked, model(b.src, b.src_mask, b.tgt_in))


@pytest.mark.parametrize("copy", [False, True])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_incremental_decoding_matches_full_decoder(positions, copy):
    model = tiny(positions, copy=copy)
    _, _, b = random_batch()
    with torch.no_grad():
        memory = model.encode(b.src, b.src_mask)
        full = model.decode(b.tgt_in, memory, b.src_mask, b.src)  # (B, T, V)
        cache = model.new_cache(b.src)
        steps = torch.stack([model.decode_step(b.tgt_in[:, t], memory, b.src_mask, cache)
                             for t in range(b.tgt_in.size(1))], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("copy", [False, True])
def test_decoding_g_hypotheses_over_one_copy_of_a_source_equals_decoding_over_g_copies(copy):
    """Beam search's layout: the G rows of a source share its memory and source entries (grouped
    cross-attention and pointer); the scores must be those of G repeated copies, reorders included."""
    model, G = tiny(copy=copy, seed=2), 3
    model.restrict_to_source([5, 6, 7])
    _, _, b = random_batch(seed=4)
    n = b.src.size(0)
    steps = torch.randint(3, V, (4, n * G), generator=torch.Generator().manual_seed(0))  # (steps, n*G)
    order = (torch.arange(n)[:, None] * G + torch.tensor([2, 0, 0])).view(-1)  # within each source's rows
    with torch.no_grad():
        memory = model.encode(b.src, b.src_mask)  # (n, S, D)
        grouped = model.new_cache(b.src)
        repeated = model.new_cache(b.src.repeat_interleave(G, dim=0))
        wide = memory.repeat_interleave(G, dim=0), b.src_mask.repeat_interleave(G, dim=0)  # (n*G, S, D), (n*G, S)
        for t, token in enumerate(steps):
            got = model.decode_step(token, memory, b.src_mask, grouped)  # (n*G, V)
            want = model.decode_step(token, *wide, repeated)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)  # -inf where the restriction bans
            grouped = model.reorder_hypotheses(grouped, order)
            repeated = model.select_cache(repeated, order)
        # dropping source 1 (its G rows) as beam search does, the last source filling its place:
        # hypothesis rows move in place, source rows are selected
        keep_src = torch.tensor(swap_remove_order([False, True, False, False, False]))
        assert keep_src.tolist() == [0, 4, 2, 3]
        keep_rows = (keep_src[:, None] * G + torch.arange(G)).view(-1)
        grouped = model.drop_sources(grouped, keep_rows, keep_src)
        repeated = model.select_cache(repeated, keep_rows)
        token = steps[0][keep_rows]
        got = model.decode_step(token, memory[keep_src], b.src_mask[keep_src], grouped)
        want = model.decode_step(token, wide[0][keep_rows], wide[1][keep_rows], repeated)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert all(t.size(0) == len(keep_src) for layer in grouped for t in layer.values() if not isinstance(t, KVCache))
    assert all(layer["self"].k.size(1) == len(keep_rows) for layer in grouped[: len(model.decoder)])


def test_decode_step_refuses_rows_that_do_not_split_evenly_among_the_sources():
    model = tiny()
    _, _, b = random_batch(n=2)
    memory = model.encode(b.src, b.src_mask)
    with pytest.raises(ValueError, match="3 tokens for 2 sources"):
        model.decode_step(torch.full((3,), BOS), memory, b.src_mask, model.new_cache(b.src))


def uncached_greedy(model: Transformer, src, src_mask, max_len: int) -> list[list[int]]:
    """Reference decoder: recompute the whole prefix at every step."""
    out = []
    for i in range(src.size(0)):
        s, m = src[i : i + 1], src_mask[i : i + 1]
        memory = model.encode(s, m)
        ys = [BOS]
        for _ in range(max_len):
            nxt = int(model.decode(torch.tensor([ys]), memory, m, s)[0, -1].argmax())
            if nxt == EOS:
                break
            ys.append(nxt)
        out.append(ys[1:])
    return out


@pytest.mark.parametrize("copy", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cached_greedy_equals_uncached_greedy_on_random_weights(seed, copy):
    model = tiny(seed=seed, copy=copy)
    _, _, b = random_batch(seed)
    with torch.no_grad():
        cached = [h.tokens for h in greedy(model, b.src, b.src_mask, BOS, EOS, 12)]
        assert cached == uncached_greedy(model, b.src, b.src_mask, 12)


def train_on(pairs, steps: int = 300, seed: int = 0) -> Transformer:
    model = tiny(seed=seed).train()
    b = collate([s for s, _ in pairs], [t for _, t in pairs], PAD, BOS, EOS, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        logits = model(b.src, b.src_mask, b.tgt_in)
        loss = F.cross_entropy(logits.reshape(-1, V), b.tgt_out.reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_tiny_model_overfits_a_handful_of_pairs_and_decodes_them_exactly():
    srcs, _, _ = random_batch(seed=3, n=8)
    pairs = [(s, list(reversed(s)) + [s[0]]) for s in srcs]  # reverse, then repeat the first token
    model = train_on(pairs)
    b = collate([s for s, _ in pairs], [t for _, t in pairs], PAD, BOS, EOS, 64)
    greedy_out = [h.tokens for h in greedy(model, b.src, b.src_mask, BOS, EOS, 20)]
    assert greedy_out == [t for _, t in pairs]
    beam_out = beam_search(model, b.src, b.src_mask, BOS, EOS, 20, beam_size=4, n_best=2)
    assert [h[0].tokens for h in beam_out] == [t for _, t in pairs]
    assert all(len(h) == 2 and h[0].score >= h[1].score for h in beam_out)
    # beam 1 is greedy on trained weights too (outputs that differ from row to row)
    beam1 = beam_search(model, b.src, b.src_mask, BOS, EOS, 20, beam_size=1, alpha=0.0)
    assert [h[0].tokens for h in beam1] == greedy_out
    # ... and the trained weights still decode the same with and without the cache
    assert greedy_out == uncached_greedy(model, b.src, b.src_mask, 20)


@pytest.mark.parametrize("copy", [False, True])
def test_beam_of_one_equals_greedy_token_for_token(copy):
    model = tiny(seed=5, copy=copy)
    _, _, b = random_batch(seed=5, n=7)
    g = greedy(model, b.src, b.src_mask, BOS, EOS, 15)
    bs = beam_search(model, b.src, b.src_mask, BOS, EOS, 15, beam_size=1, alpha=0.0)
    assert [h[0].tokens for h in bs] == [h.tokens for h in g]


class MarkovModel:
    """A 'model' whose next-token log-probabilities depend only on the previous token: known scores."""

    def __init__(self, table: torch.Tensor, max_len: int = 64):
        self.table = table  # (V, V) log-probabilities of the next token given the previous one
        self.cfg = ModelConfig(max_len=max_len, copy=False)

    def encode(self, src, src_mask):
        return torch.zeros(src.size(0), 1, 1)

    def new_cache(self, src=None):
        return [{}]

    def decode_step(self, token, memory, src_mask, cache):
        return self.table[token]

    select_cache = staticmethod(Transformer.select_cache)
    reorder_hypotheses = staticmethod(Transformer.reorder_hypotheses)
    drop_sources = staticmethod(Transformer.drop_sources)


def best_by_enumeration(table: torch.Tensor, max_len: int, alpha: float) -> tuple[list[int], float]:
    """Every sequence that ends in EOS within max_len steps, or is cut at max_len tokens."""
    best, best_score = None, -math.inf
    vocab = range(3, table.size(0))
    for n in range(0, max_len + 1):
        for seq in itertools.product(vocab, repeat=n):
            tokens, prev, logp = list(seq), BOS, 0.0
            for tok in tokens + ([EOS] if n < max_len else []):
                logp += float(table[prev, tok])
                prev = tok
            score = logp / length_penalty(min(n + 1, max_len), alpha)
            if score > best_score:
                best, best_score = tokens, score
    return best, best_score


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("seed", range(4))
def test_beam_search_finds_the_known_best_sequence(alpha, seed):
    g = torch.Generator().manual_seed(seed)
    table = F.log_softmax(torch.randn(6, 6, generator=g) * 2, dim=-1)
    table[:, PAD] = table[:, BOS] = -1e9  # never produced
    table = F.log_softmax(table, dim=-1)
    max_len = 4
    expected, expected_score = best_by_enumeration(table, max_len, alpha)
    model = MarkovModel(table)
    src = torch.ones(1, 1, dtype=torch.long)
    hyps = beam_search(model, src, src > 0, BOS, EOS, max_len, beam_size=12, alpha=alpha)  # type: ignore[arg-type]
    assert hyps[0][0].tokens == expected
    assert hyps[0][0].score == pytest.approx(expected_score, abs=1e-5)


def test_beam_search_decodes_one_row_per_source_at_the_first_step_then_one_per_beam():
    """The K beams of a source all start from BOS, so the first step decodes each source once."""
    g = torch.Generator().manual_seed(0)
    model = MarkovModel(F.log_softmax(torch.randn(8, 8, generator=g), dim=-1))
    rows = []
    step = model.decode_step
    model.decode_step = lambda token, *rest: rows.append(token.numel()) or step(token, *rest)  # type: ignore[method-assign]
    src = torch.ones(3, 1, dtype=torch.long)
    beam_search(model, src, src > 0, BOS, 99, 4, beam_size=5)  # type: ignore[arg-type]  (EOS 99: never emitted)
    assert rows == [3, 15, 15, 15]


def test_beam_search_beats_greedy_where_greedy_is_led_astray():
    # From BOS, token 3 looks best (0.6) but every continuation after it is poor;
    # token 4 (0.4) leads to EOS with certainty. Greedy takes 3, beam search finds 4.
    probs = torch.full((6, 6), 1e-9)
    probs[BOS, 3], probs[BOS, 4] = 0.6, 0.4
    probs[3, 3], probs[3, 4], probs[3, 5], probs[3, EOS] = 0.25, 0.25, 0.25, 0.25
    probs[4, EOS] = 1.0
    probs[5, EOS] = 1.0
    table = torch.log(probs / probs.sum(-1, keepdim=True))
    model = MarkovModel(table)
    src = torch.ones(1, 1, dtype=torch.long)
    assert greedy(model, src, src > 0, BOS, EOS, 5)[0].tokens[0] == 3  # type: ignore[arg-type]
    assert beam_search(model, src, src > 0, BOS, EOS, 5, beam_size=2, alpha=0.0)[0][0].tokens == [4]  # type: ignore[arg-type]


def test_token_budget_batches_respect_the_budget_and_cover_every_example():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(1, 40, (200,)).tolist()
    tgt = torch.randint(1, 60, (200,)).tolist()
    batches = token_budget_batches(src, tgt, 512, g)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for b in batches:
        padded = len(b) * (max(src[i] for i in b) + 1 + max(tgt[i] for i in b) + 1)
        assert padded <= 512 or len(b) == 1


@pytest.mark.parametrize("order", [[1, 0, 2, 3, 4, 5],  # a swap: rows read and overwritten in one reorder
                                   [0, 1, 1, 3, 4, 2],  # a row copied twice, one dropped
                                   [0, 1, 2, 3, 4, 5],  # nothing moves
                                   [5, 4, 3, 2, 1, 0],  # most rows move: the select path
                                   [0, 5, 2, 3],  # rows 1 and 4 leave, the last row fills 1's place
                                   [0, 1, 2],  # the last rows leave, nothing moves
                                   [4, 5]])  # most of the rows kept move: the select path
def test_the_kv_cache_taken_in_place_holds_what_select_gives(order):
    cache, N = KVCache(), 6
    for _ in range(KVCache.INITIAL_CAPACITY + 2):  # past a growth, so the buffer has unfilled steps
        k = torch.randn(N, 2, 1, 4)
        cache.append(k, 2 * k)
    index = torch.tensor(order)
    want = cache.select(index)
    cache.take_(index)
    assert cache.length == want.length and cache.k.size(1) == len(order)
    torch.testing.assert_close(cache.k[: cache.length], want.k[: want.length], rtol=0, atol=0)
    torch.testing.assert_close(cache.v[: cache.length], want.v[: want.length], rtol=0, atol=0)
    # the narrowed cache keeps growing: the next steps append to the rows kept, past another doubling
    steps = [torch.randn(len(order), 2, 1, 4) for _ in range(KVCache.INITIAL_CAPACITY + 1)]
    for k in steps:
        got = cache.append(k, 2 * k)
        expected = want.append(k, 2 * k)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match=f"at most the cache's {len(order)} rows; got an index of 7: use select"):
        cache.take_(torch.arange(7))


@given(st.lists(st.booleans(), min_size=1, max_size=40))
def test_swap_remove_keeps_every_row_that_did_not_end_and_moves_only_the_ones_it_must(ended):
    order = swap_remove_order(ended)
    assert sorted(order) == [i for i, e in enumerate(ended) if not e]
    moved = [i for position, i in enumerate(order) if position != i]
    assert all(ended[position] for position, i in enumerate(order) if position != i)  # only ended slots refill
    assert len(moved) == sum(ended[: len(order)])  # one move per ended row among the rows kept


@st.composite
def ranked_beams(draw):
    """A source's new beams as the scan gives them: best first, a parent each, dead ones (-inf) last."""
    K = draw(st.integers(1, 8))
    live = draw(st.integers(0, K))
    parents = draw(st.lists(st.integers(0, K - 1), min_size=live, max_size=live))
    logps = sorted(draw(st.lists(st.floats(-50, 0), min_size=live, max_size=live, unique=True)), reverse=True)
    return parents + [0] * (K - live), list(range(3, 3 + K)), logps + [-math.inf] * (K - live)


@given(ranked_beams())
def test_beams_stay_in_their_parents_rows_so_the_cache_copies_the_fewest_rows(picks):
    beams, toks, logps = picks
    out_beams, out_toks, out_logps = stay_in_place(beams, toks, logps)
    live = [(b, t, lp) for b, t, lp in zip(beams, toks, logps) if lp != -math.inf]
    assert sorted(x for x in zip(out_beams, out_toks, out_logps) if x[2] != -math.inf) == sorted(live)
    moved = sum(b != slot for slot, b in enumerate(out_beams))
    assert moved == len(live) - len({b for b, _, _ in live})  # only a parent's second and later children move
    for slot, (b, lp) in enumerate(zip(out_beams, out_logps)):
        if lp == -math.inf:
            assert b == slot  # a dead row copies nothing


def test_decode_step_refuses_to_cache_keys_that_need_gradients():
    model = tiny()
    _, _, b = random_batch()
    memory = model.encode(b.src, b.src_mask)  # with gradients
    with pytest.raises(RuntimeError, match=r"under torch.no_grad\(\).*use Transformer.decode"):
        model.decode_step(torch.full((b.src.size(0),), BOS), memory, b.src_mask, model.new_cache(b.src))


def test_the_kv_cache_grows_past_its_capacity_and_reorders_only_its_filled_steps():
    cache, N, nh, hs = KVCache(), 3, 2, 4
    steps = [torch.randn(N, nh, 1, hs) for _ in range(KVCache.INITIAL_CAPACITY + 3)]
    for t, k in enumerate(steps, start=1):
        keys, values = cache.append(k, -k)
        assert keys.shape == (N, nh, t, hs) and cache.length == t
    assert cache.k.size(0) == 2 * KVCache.INITIAL_CAPACITY  # doubled once
    torch.testing.assert_close(keys, torch.cat(steps, dim=2), rtol=0, atol=0)
    torch.testing.assert_close(values, -torch.cat(steps, dim=2), rtol=0, atol=0)
    order = torch.tensor([2, 2, 0, 1])
    picked = cache.select(order)
    assert picked.length == cache.length and picked.k.shape[1] == 4
    keys, _ = picked.append(steps[0][order], steps[0][order])
    torch.testing.assert_close(keys, torch.cat([*steps, steps[0]], dim=2)[order], rtol=0, atol=0)
    torch.testing.assert_close(cache.k[: cache.length], torch.cat(steps, dim=2).permute(2, 0, 1, 3))  # unchanged

