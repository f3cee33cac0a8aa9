"""The encoder-decoder Transformer, readable top to bottom.

Pre-LayerNorm blocks (Xiong et al. 2020: stable without a long warmup), attention through
``F.scaled_dot_product_attention`` (fused kernels where the device has them), one embedding
table shared by source, target and the output projection (source and target share the
tokenizer's vocabulary), sinusoidal or learned positions.

Shapes: B batch, S source length, T target length, D d_model, nh heads, hs head size (D // nh),
V vocabulary.

Masks. ``src_mask`` is (B, S) bool, True for real tokens. Encoder self-attention and decoder
cross-attention mask padded *keys* only; a query at a padded position still sees the real
tokens, so no row is ever fully masked (a source always holds at least its EOS). Decoder
self-attention needs only the causal mask: targets are right-padded, so a real position never
sees a pad, and outputs at pad positions are ignored by the loss.

Incremental decoding keeps, per decoder layer, the self-attention keys/values of the tokens
decoded so far (appended each step) and the cross-attention keys/values of the source
(computed once). :meth:`Transformer.decode_step` consumes one new token per sequence.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from nmt.config import ModelConfig

LayerCache = dict[str, torch.Tensor]  # "k", "v" (self-attention, grows) and "ck", "cv" (cross, fixed)


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    B, L, D = x.shape
    return x.view(B, L, n_heads, D // n_heads).transpose(1, 2)  # (B, nh, L, hs)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    B, nh, L, hs = x.shape
    return x.transpose(1, 2).reshape(B, L, nh * hs)  # (B, L, D)


def key_padding_mask(src_mask: torch.Tensor) -> torch.Tensor:
    """(B, S) True-for-real -> (B, 1, 1, S), broadcast over heads and queries by SDPA."""
    return src_mask[:, None, None, :]


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
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
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)  # (B, nh, t+1, hs)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
            is_causal = False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, nh, L, hs)
        return self.proj(merge_heads(y))


class CrossAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)  # fused: keys and values of the memory
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(memory).chunk(2, dim=-1)  # 2 x (B, S, D)
        return split_heads(k, self.n_heads), split_heads(v, self.n_heads)  # (B, nh, S, hs)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        attn_mask: torch.Tensor,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        q = split_heads(self.q(x), self.n_heads)  # (B, nh, T, hs)
        if cache is None:
            k, v = self.memory_kv(memory)
        else:
            if "ck" not in cache:  # the source does not change while decoding: project it once
                cache["ck"], cache["cv"] = self.memory_kv(memory)
            k, v = cache["ck"], cache["cv"]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, nh, T, hs)
        return self.proj(merge_heads(y))


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(F.gelu(self.fc(x))))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.ln_ff = nn.LayerNorm(cfg.d_model)
        self.ff = FeedForward(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
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
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        x = x + self.dropout(self.self_attn(self.ln_self(x), is_causal=True, cache=cache))
        x = x + self.dropout(self.cross_attn(self.ln_cross(x), memory, memory_mask, cache=cache))
        return x + self.dropout(self.ff(self.ln_ff(x)))


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
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.enc_layers))
        self.ln_enc = nn.LayerNorm(cfg.d_model)
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.dec_layers))
        self.ln_dec = nn.LayerNorm(cfg.d_model)
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
        return F.linear(h, self.embed.weight)  # (B, T, V), tied to the embedding

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder: (B, T) target prefix ids -> logits (B, T, V)."""
        memory_mask = key_padding_mask(src_mask)
        x = self.embed_tokens(tgt_in)
        for layer in self.decoder:
            x = layer(x, memory, memory_mask)
        return self.logits(self.ln_dec(x))

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.decode(tgt_in, self.encode(src, src_mask), src_mask)

    # ------------------------------------------------------------------ incremental decoding
    def new_cache(self) -> list[LayerCache]:
        return [{} for _ in self.decoder]

    def decode_step(
        self,
        token: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor,
        cache: list[LayerCache],
    ) -> torch.Tensor:
        """One decoding step: (B,) newest token ids -> next-token logits (B, V); updates ``cache``."""
        step = cache[0]["k"].size(2) if "k" in cache[0] else 0
        memory_mask = key_padding_mask(src_mask)
        x = self.embed_tokens(token[:, None], offset=step)  # (B, 1, D)
        for layer, layer_cache in zip(self.decoder, cache):
            x = layer(x, memory, memory_mask, cache=layer_cache)
        return self.logits(self.ln_dec(x))[:, 0]  # (B, V)

    @staticmethod
    def select_cache(cache: list[LayerCache], index: torch.Tensor) -> list[LayerCache]:
        """Keep (and reorder) the batch rows ``index`` of every cached tensor (beam search, finished rows)."""
        return [{name: t.index_select(0, index) for name, t in layer.items()} for layer in cache]
