"""The encoder-decoder Transformer, readable top to bottom.

Pre-LayerNorm blocks (Xiong et al. 2020: stable without a long warmup), attention through
``F.scaled_dot_product_attention`` (fused kernels where the device has them), one embedding
table shared by source, target and the output projection (source and target share the
tokenizer's vocabulary), sinusoidal or learned positions, and optionally (``model.copy``) a
pointer-generator that copies source tokens into the output.

Shapes: B batch, S source length, T target length, D d_model, nh heads, hs head size (D // nh),
V vocabulary.

Masks. ``src_mask`` is (B, S) bool, True for real tokens. Encoder self-attention and decoder
cross-attention mask padded *keys* only; a query at a padded position still sees the real
tokens, so no row is ever fully masked (a source always holds at least its EOS). Decoder
self-attention needs only the causal mask: targets are right-padded, so a real position never
sees a pad, and outputs at pad positions are ignored by the loss.

Outputs. The decoder returns next-token *scores* (B, T, V): logits for the plain model, and
log-probabilities for the copy model (``model.copy``, :class:`PointerGenerator`). ``log_softmax``
maps both to the same log-probabilities (it is idempotent on log-probabilities), so the loss and
every decoder treat the two alike.

Incremental decoding keeps, per decoder layer, the self-attention keys/values of the tokens
decoded so far (appended each step) and the cross-attention keys/values of the source
(computed once); the copy model adds one more entry with the source ids and the copy keys.
:meth:`Transformer.decode_step` consumes one new token per sequence. Beam search decodes the K
hypotheses of a source as K consecutive rows over one copy of that source: everything that reads
the source (cross-attention, the pointer) takes the K rows as K queries of one source row, so the
source's memory, keys and values are neither repeated K times nor read K times per step.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from nmt.config import ModelConfig


class KVCache:
    """Self-attention's keys and values of the tokens decoded so far, one row per hypothesis.

    Stored time-major, (capacity, N, nh, hs) each, so that a step's new key is written in place
    (``append``) and the attention reads a (N, nh, t, hs) view of the filled part, where a
    ``torch.cat`` per step would copy the whole history into a new tensor; beam search's reorder
    (``select``) copies the filled part once, into a new buffer. Capacity doubles when full.
    """

    INITIAL_CAPACITY = 16

    def __init__(self, k: torch.Tensor | None = None, v: torch.Tensor | None = None, length: int = 0):
        self.k, self.v, self.length = k, v, length  # (capacity, N, nh, hs) each, or None before the first step

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add one step's (N, nh, 1, hs) key and value; return every step's, (N, nh, t+1, hs) views."""
        if k.requires_grad:  # written in place, so no autograd history could survive the next step
            raise RuntimeError("decode_step's cache is for inference: call it under torch.no_grad(), as greedy, "
                               "beam_search and sample do; for gradients through the decoder use Transformer.decode")
        if self.k is None:
            N, nh, _, hs = k.shape
            self.k, self.v = (k.new_empty(self.INITIAL_CAPACITY, N, nh, hs) for _ in range(2))
        elif self.length == self.k.size(0):
            self.k, self.v = (self._grown(t) for t in (self.k, self.v))
        self.k[self.length].copy_(k[:, :, 0])  # (N, nh, hs)
        self.v[self.length].copy_(v[:, :, 0])
        self.length += 1
        return self.k[: self.length].permute(1, 2, 0, 3), self.v[: self.length].permute(1, 2, 0, 3)  # (N, nh, t, hs)

    def _grown(self, t: torch.Tensor) -> torch.Tensor:
        bigger = t.new_empty(2 * t.size(0), *t.shape[1:])
        bigger[: self.length].copy_(t[: self.length])
        return bigger

    def select(self, index: torch.Tensor) -> KVCache:
        """The hypothesis rows ``index``, in that order, as a new cache (this one is left as it was)."""
        if self.k is None:
            return KVCache()
        out = []
        for t in (self.k, self.v):
            picked = t.new_empty(t.size(0), index.numel(), *t.shape[2:])  # (capacity, N', nh, hs)
            torch.index_select(t[: self.length], 1, index, out=picked[: self.length])
            out.append(picked)
        return KVCache(*out, self.length)

    def take_(self, index: torch.Tensor) -> None:
        """Make row i hold what row ``index[i]`` held, in place, keeping ``index.numel()`` rows.

        Beam search's two moves, without :meth:`select`'s copy of every row's history into a
        fresh buffer (memory-bound on a CPU: 13-18 % of a beam search; with sources leaving the
        batch at beam 8, a quarter of the default model's decode):

        - the reorder (as many rows as before): from one step to the next most hypotheses extend
          their own beam (about 9 rows in 10 past the first steps, benchmarks.vs_ctranslate2's
          beam 4), so only the rows that change are copied;
        - dropping finished sources (fewer rows): the search fills their rows with the batch's
          last live ones (:func:`nmt.decoding.search.swap_remove_order`), so only those move, and
          the buffer is narrowed to the rows kept (a view).

        When most rows change, copying them all once is cheaper than gathering then scattering.
        """
        if self.k is None:
            return
        if index.numel() > self.k.size(1):
            raise ValueError(f"take_ keeps at most the cache's {self.k.size(1)} rows; got an index of "
                             f"{index.numel()}: use select")
        n = index.numel()
        changed = (index != torch.arange(n, device=index.device)).nonzero().squeeze(1)  # (c,)
        if 2 * changed.numel() > n:
            moved = self.select(index)
            self.k, self.v = moved.k, moved.v
            return
        if changed.numel():
            sources = index[changed]  # (c,)
            for t in (self.k, self.v):
                filled = t[: self.length]  # (t, N, nh, hs)
                # The right side gathers the moved rows out first, so a row both read and overwritten
                # is read intact. Indexing, not index_select + index_copy_: once the buffer has been
                # narrowed to fewer rows it is no longer contiguous, where those two take a path
                # 2-3x slower.
                filled[:, changed] = filled[:, sources]
        self.k, self.v = self.k[:, :n], self.v[:, :n]  # (capacity, n, nh, hs) views: the rows past n leave


LayerCache = dict[str, "torch.Tensor | KVCache"]  # "self" (self-attention, grows) and "ck", "cv" (cross, fixed)
# One LayerCache per decoder layer; the copy model appends one for the pointer: "src" (the source
# ids, given to new_cache) and "copy_k" (the copy keys, computed at the first step). A model
# restricted to its source (restrict_to_source) appends a last one: "banned" (B, V), the ids each
# source may not emit. "self" holds one row per hypothesis (decoded sequence); every other entry
# one row per source, shared by that source's hypotheses (select_cache moves the two kinds).
Cache = list[LayerCache]


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    B, L, D = x.shape
    return x.view(B, L, n_heads, D // n_heads).transpose(1, 2)  # (B, nh, L, hs)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    B, nh, L, hs = x.shape
    return x.transpose(1, 2).reshape(B, L, nh * hs)  # (B, L, D)


def key_padding_mask(src_mask: torch.Tensor) -> torch.Tensor | None:
    """(B, S) True-for-real -> (B, 1, 1, S), broadcast over heads and queries by SDPA.

    None when no source is padded: SDPA then takes its mask-free kernel, and adds no mask. Under
    ``torch.compile`` the mask is always passed: the test reads a value off the device, which would
    break the graph every step.
    """
    if torch.compiler.is_compiling():
        return src_mask[:, None, None, :]
    return None if bool(src_mask.all()) else src_mask[:, None, None, :]


class Dropout(nn.Module):
    """Inverted dropout, as ``nn.Dropout``, drawn as ``uniform >= p`` instead of ``bernoulli_``.

    Same distribution, but PyTorch's CPU ``bernoulli_`` costs about twice a uniform draw and a
    compare: dropout was 15 % of a CPU training step in torch.profiler (the README's Benchmarks
    section), and this form makes its forward + backward ~40 % cheaper.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        scale = 1.0 / (1.0 - self.p)
        uniform = torch.rand_like(x)  # (same shape as x)
        if x.dtype == torch.float32:
            # The mask, 0 or 1/(1-p), made in the draw's own buffer: a bool mask, then its scaled
            # float copy, cost two more tensors of x's size (forward + backward ~22 % slower on the
            # attention weights at length 128). The values are those of the line below.
            return x * uniform.ge_(self.p).mul_(scale)
        # Below float32 the mask stays float32 (bool * float): a bf16 mask would round the scale.
        return x * ((uniform >= self.p) * scale)


CPU_MATH_MAX_KEYS = 64  # attend(): up to this many keys, the CPU computes attention without SDPA


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    dropout: Dropout,
) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(hs)) v, with dropout on the weights: (B, nh, Lq, hs), (B, nh, Lk, hs) x 2 -> (B, nh, Lq, hs).

    SDPA everywhere except on the CPU in two cases, which take the plain math path below:

    - training with dropout: there SDPA leaves its fused kernel for a math path that draws the
      weights' dropout with ``bernoulli_``; this is that same path with :class:`Dropout`'s cheaper
      draw (GPU kernels fuse dropout, so SDPA keeps them);
    - keys no longer than ``CPU_MATH_MAX_KEYS``: SDPA's fused CPU kernel costs 2-4x these three
      operators on short sequences, and most on decoding's shapes (2 threads: one query against 24
      keys for 256 rows 0.27 ms against 0.15; a source's 4 beam hypotheses as 4 queries over its
      memory 0.43 ms against 0.10); it is ahead from about 128 keys.
    """
    math_path = q.device.type == "cpu" and ((dropout.training and dropout.p > 0.0) or k.size(-2) <= CPU_MATH_MAX_KEYS)
    if not math_path:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                              dropout_p=dropout.p if dropout.training else 0.0)
    scores = (q @ k.transpose(-2, -1)) * q.size(-1) ** -0.5  # (B, nh, Lq, Lk)
    if is_causal:
        Lq, Lk = scores.shape[-2:]
        future = torch.ones(Lq, Lk, dtype=torch.bool, device=q.device).triu(1)  # (Lq, Lk)
        scores = scores.masked_fill(future, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return dropout(scores.softmax(dim=-1)) @ v  # (B, nh, Lq, hs)


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.attn_dropout = Dropout(cfg.dropout)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)  # one fused projection for q, k and v
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (B, L, D)
        q, k, v = (split_heads(t, self.n_heads) for t in (q, k, v))  # (B, nh, L, hs)
        if cache is not None:
            # Incremental decoding: the new token attends to every earlier one, so no causal
            # mask is needed for a single query.
            k, v = cache.setdefault("self", KVCache()).append(k, v)  # (B, nh, t+1, hs)
            is_causal = False
        y = attend(q, k, v, attn_mask, is_causal, self.attn_dropout)  # (B, nh, L, hs)
        return self.proj(merge_heads(y))


class CrossAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.attn_dropout = Dropout(cfg.dropout)
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)  # fused: keys and values of the memory
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(memory).chunk(2, dim=-1)  # 2 x (B, S, D)
        return split_heads(k, self.n_heads), split_heads(v, self.n_heads)  # (B, nh, S, hs)

    def cached_memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`memory_kv` made contiguous, for decoding's cache: every step's ``q kᵀ`` and ``w v``
        then read them in place, where the split-heads views made each step's matmuls copy them
        (3 % of a CPU beam search)."""
        k, v = self.memory_kv(memory)
        return k.contiguous(), v.contiguous()  # (B, nh, S, hs)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        attn_mask: torch.Tensor | None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """(B, T, D) queries over the (B, S, D) memory; while decoding (``cache``), x is (n*G, 1, D):
        the G hypotheses of each of the n memory rows, which query it together as (n, G, D)."""
        rows = x.size(0)
        if cache is not None:
            x = x.view(memory.size(0), -1, x.size(-1))  # (n, G, D): one query per hypothesis of a source
        q = split_heads(self.q(x), self.n_heads)  # (B, nh, T, hs)
        if cache is None:
            k, v = self.memory_kv(memory)
        else:
            if "ck" not in cache:  # the source does not change while decoding: project it once
                cache["ck"], cache["cv"] = self.cached_memory_kv(memory)
            k, v = cache["ck"], cache["cv"]
        y = attend(q, k, v, attn_mask, False, self.attn_dropout)  # (B, nh, T, hs)
        return self.proj(merge_heads(y)).view(rows, -1, x.size(-1))  # (B, T, D); decoding: (n*G, 1, D)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(F.gelu(self.fc(x))))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.ln_ff = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.ln_attn(x), attn_mask=attn_mask))
        return x + self.dropout(self.ff(self.ln_ff(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_self = nn.LayerNorm(cfg.d_model)
        self.self_attn = SelfAttention(cfg)
        self.ln_cross = nn.LayerNorm(cfg.d_model)
        self.cross_attn = CrossAttention(cfg)
        self.ln_ff = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg)
        self.dropout = Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        x = x + self.dropout(self.self_attn(self.ln_self(x), is_causal=True, cache=cache))
        x = x + self.dropout(self.cross_attn(self.ln_cross(x), memory, memory_mask, cache=cache))
        return x + self.dropout(self.ff(self.ln_ff(x)))


class PointerGenerator(nn.Module):
    """Copy source tokens into the output: the pointer-generator of See et al. (2017).

    From the final decoder state h_t (after ``ln_dec``) and the encoder memory m_s::

        a_t      = softmax_s( q(h_t) . k(m_s) / sqrt(D) )       single head, padded s masked out
        c_t      = sum_s a_ts m_s                                 the copy context
        p_gen    = sigmoid( w . [h_t; c_t] + b )                  generate (1) or copy (0)
        p_t(w)   = p_gen * softmax(logits_t)(w) + (1 - p_gen) * sum_{s: src_s = w} a_ts

    Source and target share one vocabulary, so a source position points straight at a vocabulary
    id: a word of the description (a variable name, a string) can be emitted even when the
    generator gives it little probability. Returns log p_t, float32, (B, T, V).
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.gate = nn.Linear(2 * d_model, 1)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        return self.k(memory)  # (B, S, D): fixed while decoding, so cached once per source

    def attention(self, h: torch.Tensor, keys: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """Copy attention a: (B, T, D) states, (B, S, D) keys, (B, S) mask -> (B, T, S), float32."""
        # The mixture is done in float32: probabilities near 0 and 1 lose everything in half precision.
        scores = (self.q(h) @ keys.transpose(1, 2)).float() / math.sqrt(h.size(-1))  # (B, T, S)
        scores = scores.masked_fill(~src_mask[:, None, :], float("-inf"))  # pads: weight exactly 0
        return scores.softmax(dim=-1)  # a source always holds its EOS, so no row is all -inf

    def gate_logit(self, h: torch.Tensor, attn: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """The logit of p_gen: (B, T, D) states, (B, T, S) attention, (B, S, D) memory -> (B, T, 1)."""
        context = attn.to(memory.dtype) @ memory  # (B, T, D)
        return self.gate(torch.cat([h, context], dim=-1)).float()

    def forward(
        self,
        h: torch.Tensor,
        logits: torch.Tensor,
        memory: torch.Tensor,
        keys: torch.Tensor,
        src: torch.Tensor,
        src_mask: torch.Tensor,
    ) -> torch.Tensor:
        """(B, T, D) states, (B, T, V) logits, (B, S, D) memory and keys, (B, S) ids and mask -> (B, T, V).

        Computed in log space, and over the (B, T, V) tensor only log_softmax, one add and the
        copy made by scatter_add: a dense mixture (in probability space, or logaddexp over all V)
        costs several more passes over the largest tensor of the step, and log(0) for the many
        tokens that are neither generated nor copied would need clamping. With
        g(w) = log(p_gen softmax(logits)(w)) and, for a source id w, c(w) = log((1 - p_gen) * copy
        mass of w):

            log p(w) = logaddexp(g(w), c(w)) = g(w) + softplus(c(w) - g(w))   for w in the source
            log p(w) = g(w)                                                     for the others

        so the copy adds softplus(c - g) at the S source ids, once per distinct id. Where copying
        dominates a token the generator all but rules out (c - g large) the sum rounds like its
        larger term: about 1e-5 absolute error in log p when g ~ -80.
        """
        B, T, _ = logits.shape  # (B, T, V)
        S = src.size(1)
        attn = self.attention(h, keys, src_mask)  # (B, T, S)
        gate = self.gate_logit(h, attn, memory)  # (B, T, 1)
        generated = F.logsigmoid(gate) + F.log_softmax(logits.float(), dim=-1)  # (B, T, V)

        # An id can stand at several source positions: its copy mass sums their attention, and
        # only its first real position may add it to the output (scatter_add would add it again
        # for every repeat). Padded positions hold no mass and add nothing whatever id they hold.
        same = src[:, :, None] == src[:, None, :]  # (B, S, S), symmetric: positions s, s' hold one id
        mass = attn @ same.to(attn.dtype)  # (B, T, S): mass[b, t, s] = sum of a_ts' over s' with src_s' = src_s
        before = torch.ones(S, S, dtype=torch.bool, device=src.device).tril(-1)  # (S, S): s' < s
        repeat = (same & before & src_mask[:, None, :]).any(dim=-1)  # (B, S): a real s' < s holds src_s
        first = src_mask & ~repeat  # (B, S)

        ids = src[:, None, :].expand(B, T, S)  # (B, T, S)
        # The clamp keeps log finite where mass is 0 (padding): masked_fill then sends those
        # positions a zero gradient, and 0 * d/dx log(x) at x = 0 would be NaN.
        copied = F.logsigmoid(-gate) + mass.clamp_min(torch.finfo(mass.dtype).tiny).log()  # (B, T, S)
        boost = F.softplus(copied - generated.gather(2, ids))  # (B, T, S)
        boost = boost.masked_fill(~first[:, None, :], 0.0)
        return generated.scatter_add(2, ids, boost)  # (B, T, V); adding 0 leaves repeats and pads exact


def sinusoidal_table(max_len: int, d_model: int) -> torch.Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/D)), PE[p, 2i+1] = cos(p / 10000^(2i/D))  (Vaswani et al.)."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]  # (max_len, 1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: d_model // 2])
    return table  # (max_len, D)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, pad_id: int = 0):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, cfg.d_model, padding_idx=pad_id)
        if cfg.positions == "learned":
            self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        else:
            # Derived from the config, so not saved in the state dict.
            self.register_buffer("pos_table", sinusoidal_table(cfg.max_len, cfg.d_model), persistent=False)
        self.embed_dropout = Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.enc_layers))
        self.ln_enc = nn.LayerNorm(cfg.d_model)
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.dec_layers))
        self.ln_dec = nn.LayerNorm(cfg.d_model)
        self.pointer = PointerGenerator(cfg.d_model) if cfg.copy else None
        # Ids a decoder may emit only where the source holds them (restrict_to_source). Not saved:
        # the tokenizer says which ids those are.
        self.register_buffer("source_only", torch.zeros(vocab_size, dtype=torch.bool), persistent=False)
        # None: the output projection is the embedding table (tied). Int8 decoding sets a quantized
        # copy of the table here (nmt.decoding.quantize), so the lookup and the projection part ways.
        self.output_projection: nn.Module | None = None
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # The table doubles as the output projection: N(0, 1/D) keeps the initial logits O(1)
        # while embed() scales rows back up by sqrt(D) to the size of the positions.
        nn.init.normal_(self.embed.weight, std=self.cfg.d_model**-0.5)
        if self.cfg.positions == "learned":
            nn.init.normal_(self.pos.weight, std=0.02)
        with torch.no_grad():
            self.embed.weight[self.pad_id].zero_()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ pieces
    def embed_tokens(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """(B, L) ids -> (B, L, D), positions counted from ``offset``."""
        L = ids.size(1)
        if offset + L > self.cfg.max_len:
            raise ValueError(f"sequence of {offset + L} tokens exceeds model.max_len={self.cfg.max_len}")
        x = self.embed(ids) * math.sqrt(self.cfg.d_model)
        if self.training and self.cfg.word_dropout > 0.0:
            # Whole tokens, not units: the model learns to read a line with words missing, as a new
            # description's unseen word is. No rescaling: a kept token looks as it does at inference.
            keep = torch.rand(ids.shape, device=ids.device) >= self.cfg.word_dropout  # (B, L)
            x = x * keep.unsqueeze(-1)  # (B, L, D)
        if self.cfg.positions == "learned":
            x = x + self.pos(torch.arange(offset, offset + L, device=ids.device))
        else:
            x = x + self.pos_table[offset : offset + L]
        return self.embed_dropout(x)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """(B, S) ids, (B, S) mask -> memory (B, S, D)."""
        attn_mask = key_padding_mask(src_mask)
        x = self.embed_tokens(src)
        for layer in self.encoder:
            x = layer(x, attn_mask)
        return self.ln_enc(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        if self.output_projection is not None:
            return self.output_projection(h)  # (B, T, V): an int8 copy of the table
        return F.linear(h, self.embed.weight)  # (B, T, V), tied to the embedding

    def scores(
        self,
        h: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor,
        src: torch.Tensor | None,
        copy_keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final decoder states (B, T, D) -> next-token scores (B, T, V): logits, or the copy
        model's log-probabilities (which need the source ids ``src``)."""
        logits = self.logits(h)
        if self.pointer is None:
            return logits
        if src is None:
            raise ValueError("a model with model.copy needs the source ids (src) to score its outputs")
        keys = self.pointer.keys(memory) if copy_keys is None else copy_keys
        return self.pointer(h, logits, memory, keys, src, src_mask)

    def decode(
        self,
        tgt_in: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor,
        src: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced decoder: (B, T) target prefix ids -> scores (B, T, V); ``src`` for model.copy."""
        memory_mask = key_padding_mask(src_mask)
        x = self.embed_tokens(tgt_in)
        for layer in self.decoder:
            x = layer(x, memory, memory_mask)
        return self.scores(self.ln_dec(x), memory, src_mask, src)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.decode(tgt_in, self.encode(src, src_mask), src_mask, src)

    # ------------------------------------------------------------------ incremental decoding
    def restrict_to_source(self, ids: list[int]) -> None:
        """Let decoding emit each of ``ids`` only for a source that holds it (placeholder tokens).

        A placeholder stands for a literal of its own description: ``_ID:3_`` in the output of a
        description with three placeholders would restore to nothing. Decoding only: the
        teacher-forced loss keeps the full distribution, since a source cut at
        ``data.max_nl_tokens`` can lose a placeholder its code still uses.
        """
        self.source_only.zero_()
        self.source_only[torch.as_tensor(ids, dtype=torch.long, device=self.source_only.device)] = True

    def new_cache(self, src: torch.Tensor | None = None) -> Cache:
        """An empty cache for decoding the (B, S) sources ``src``, one row each however many
        hypotheses each decodes (required by model.copy and by a model restricted to its source,
        else unused)."""
        cache: Cache = [{} for _ in self.decoder]
        restricted = bool(self.source_only.any())
        if (self.pointer is not None or restricted) and src is None:
            raise ValueError("a model with model.copy or restrict_to_source needs the source ids: new_cache(src)")
        if self.pointer is not None:
            cache.append({"src": src})  # (B, S); row i must be the source of memory's row i
        if restricted:
            present = torch.zeros(src.size(0), self.vocab_size, dtype=torch.bool, device=src.device)
            present.scatter_(1, src, True)  # (B, V): the ids of each source (pads are never source-only)
            cache.append({"banned": self.source_only[None, :] & ~present})  # (B, V)
        return cache

    def decode_step(
        self,
        token: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor,
        cache: Cache,
    ) -> torch.Tensor:
        """One decoding step: (N,) newest token ids -> next-token scores (N, V); updates ``cache``.

        ``memory`` (n, S, D) and ``src_mask`` (n, S) hold each source once; N = n * G, rows
        i*G ... i*G + G-1 being the G hypotheses of source i (G = 1 for greedy decoding, the beam
        size for beam search).
        """
        n, N = memory.size(0), token.size(0)
        if N % n:
            raise ValueError(f"decode_step: {N} tokens for {n} sources; each source needs the same number of rows")
        step = cache[0]["self"].length if "self" in cache[0] else 0
        memory_mask = key_padding_mask(src_mask)
        x = self.embed_tokens(token[:, None], offset=step)  # (N, 1, D)
        for layer, layer_cache in zip(self.decoder, cache):
            x = layer(x, memory, memory_mask, cache=layer_cache)
        src = copy_keys = None
        extra = cache[len(self.decoder):]  # the pointer's entry, then the restriction's
        if self.pointer is not None:
            pointer_cache = extra[0]
            if "copy_k" not in pointer_cache:  # like the cross-attention keys: projected once per source
                pointer_cache["copy_k"] = self.pointer.keys(memory)  # (n, S, D)
            src, copy_keys = pointer_cache["src"], pointer_cache["copy_k"]
        h = self.ln_dec(x).view(n, N // n, -1)  # (n, G, D): a source's hypotheses as its G queries
        scores = self.scores(h, memory, src_mask, src, copy_keys)  # (n, G, V)
        if extra and "banned" in extra[-1]:
            scores = scores.masked_fill(extra[-1]["banned"][:, None, :], float("-inf"))
        return scores.reshape(N, -1)  # (N, V)

    @staticmethod
    def select_cache(cache: Cache, index: torch.Tensor, sources: torch.Tensor | None = None) -> Cache:
        """Keep (and reorder) the hypothesis rows ``index`` of the cache and its source rows
        ``sources`` (by default ``index``: one hypothesis per source), to drop finished rows."""
        sources = index if sources is None else sources
        return [{name: t.select(index) if isinstance(t, KVCache) else t.index_select(0, sources)
                 for name, t in layer.items()} for layer in cache]

    @staticmethod
    def reorder_hypotheses(cache: Cache, index: torch.Tensor) -> Cache:
        """Like :meth:`select_cache` for an ``index`` that only moves rows among the hypotheses of
        each source (beam search's surviving beams), but in place: only the hypotheses' entries
        move (:meth:`KVCache.take_`), the source's (cross-attention keys/values, ids, copy keys)
        stay. Returns ``cache``, reordered."""
        for layer in cache:
            for t in layer.values():
                if isinstance(t, KVCache):
                    t.take_(index)
        return cache

    @staticmethod
    def drop_sources(cache: Cache, index: torch.Tensor, sources: torch.Tensor) -> Cache:
        """:meth:`select_cache` for rows leaving the batch, with the hypotheses' entries moved in
        place (:meth:`KVCache.take_`: cheap when ``index`` leaves most rows where they were, as a
        swap-remove does); the source's entries, a row per source, are selected anew."""
        out = []
        for layer in cache:
            kept: LayerCache = {}
            for name, t in layer.items():
                if isinstance(t, KVCache):
                    t.take_(index)
                    kept[name] = t
                else:
                    kept[name] = t.index_select(0, sources)
            out.append(kept)
        return out


# --------------------------------------------------------------------------- teacher-forced scoring
def target_nll(model: nn.Module, pad_id: int, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor,
               tgt_out: torch.Tensor, label_smoothing: float = 0.0, per_sequence: bool = False) -> torch.Tensor:
    """Teacher-forced negative log-likelihood of ``tgt_out`` given the source and ``tgt_in``.

    The one scoring of known targets: training's loss and the dev loss take the sum over every
    real target token of the batch (a scalar; summed, not averaged, so accumulation can divide by
    the step's tokens), the reverse model's reconstruction score one sum per sequence ((B,), in
    float32). ``model`` may be a wrapper (DDP, torch.compile), hence ``pad_id`` given apart.
    """
    scores = model(src, src_mask, tgt_in)  # (B, T, V): logits, or log-probabilities (copy); cross_entropy's log_softmax takes either
    if per_sequence:
        B, T, V = scores.shape
        nll = F.cross_entropy(scores.float().reshape(-1, V), tgt_out.reshape(-1), ignore_index=pad_id,
                              reduction="none")  # (B*T,), 0 at padding
        return nll.view(B, T).sum(-1)  # (B,)
    return F.cross_entropy(
        scores.reshape(-1, scores.size(-1)),  # (B*T, V)
        tgt_out.reshape(-1),  # (B*T,)
        ignore_index=pad_id,
        label_smoothing=label_smoothing,
        reduction="sum",
    )
