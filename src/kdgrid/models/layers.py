"""Shared Transformer parts: one attention, one feed-forward block, one layer stack for every model.

Attention goes through torch's scaled_dot_product_attention. A per-layer cache dict holds projected
keys/values, so autoregressive decoding projects each new token once (self-attention) and the
source memory once (cross-attention) instead of recomputing the whole prefix at every step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from kdgrid.models.configs import ModelConfig


def sinusoidal_positions(length: int, dim: int, start: int = 0) -> torch.Tensor:
    """Vaswani et al.'s fixed sin/cos position table, rows start..start+length-1."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / max(half - 1, 1)))
    pos = torch.arange(start, start + length, dtype=torch.float32)[:, None] * freq[None, :]
    table = torch.cat([torch.sin(pos), torch.cos(pos)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(length, 1)], dim=1)
    return table


def key_mask(key_pad: torch.Tensor) -> torch.Tensor:
    """(B, S) True-at-padding -> (B, 1, 1, S) True-where-attention-is-allowed."""
    return ~key_pad[:, None, None, :]


def causal_mask(length: int, device) -> torch.Tensor:
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()[None, None]


# A self-attention mask meaning "causal": scaled_dot_product_attention's is_causal, so no (T, T)
# mask is built, read and broadcast at every call; its flash kernel skips the blocks above the
# diagonal. Where queries follow a cached prefix, Attention builds the mask (is_causal would align
# the triangle at the top left).
CAUSAL = "causal"

# On a CPU, torch's fused (flash) attention kernel is slower than its plain matrix-product path for
# the short sentences of a training batch, forward and backward: 1.2-2x for 10-50 keys, 4 heads of
# 64 (bench: python bench/attention_kernels.py), and ~0.9x from ~100 keys on. CPU training steps
# with at most this many keys take the plain path; decoding (no autograd) and CUDA keep torch's choice.
CPU_PLAIN_ATTENTION_KEYS = 64


class Dropout(nn.Dropout):
    """nn.Dropout with a cheaper mask on CPU. torch's CPU dropout draws one Bernoulli number per
    element from its Mersenne twister (~30-50 ns each here, 16-28 ms for a (2040, 256) batch): the
    draws alone were ~5% of a 2+2-layer AT training step (torch.profiler, 1 thread). Here one
    64-bit draw of the same generator gives four 16-bit uniforms, each kept when it is at or above
    p rounded to 1/65536 (p 0.1 drops 6554/65536 = 0.100006), and the kept values are scaled by the
    exact 1/(1 - that): unbiased in fp32 (a bf16 mask rounds the scale, as torch's own bf16 dropout
    does), ~4x faster, and resumed runs replay it (torch's RNG state).
    CUDA (a fused kernel there) and torch.compile keep F.dropout; eval is the identity either way."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self._mask(x)
        return super().forward(x) if mask is None else x * mask

    def residual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x + self(y); on CPU one addcmul pass instead of a product and a sum (one (B, T, d)
        tensor less to write per residual branch)."""
        mask = self._mask(y)
        return x + super().forward(y) if mask is None else torch.addcmul(x, y, mask)

    def _mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """The 0 / 1/(1-p) mask for x, or None where F.dropout serves: eval and p 0 (the
        identity), p 1 (all zeros), CUDA and torch.compile."""
        if not self.training or not 0 < self.p < 1 or x.device.type != "cpu" or torch.compiler.is_compiling():
            return None
        n, drop = x.numel(), min(round(self.p * 65536), 65535)
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits
        bits = bits.view(torch.int16)[:n].view(x.shape)
        # a comparison written straight into a float tensor: 0/1 without a bool pass
        mask = torch.ge(bits, drop - 32768, out=torch.empty(x.shape, dtype=x.dtype))
        return mask.mul_(65536 / (65536 - drop))


class Attention(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.heads, self.head_dim, self.dropout = heads, d_model // heads, dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, source, mask=None, cache: dict | None = None, static: bool = False):
        """x: (B, T, d) queries; source: (B, S, d) what keys/values are projected from.

        cache: updated in place. static=True (cross-attention): keys/values are projected from
        `source` once and reused. static=False (self-attention): the new keys/values are appended.
        """
        q = self._split(self.q(x))
        if cache is not None and static and "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            k, v = (self._split(t) for t in self.kv(source).chunk(2, dim=-1))
            if cache is not None:
                if not static and "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        drop = self.dropout if self.training else 0.0
        causal = mask is CAUSAL  # never with a padding mask: targets are right-padded
        if causal and q.size(2) != k.size(2):
            mask, causal = torch.ones(q.size(2), k.size(2), dtype=torch.bool, device=q.device).tril(
                k.size(2) - q.size(2)), False
        y = _attention(q, k, v, None if causal else mask, drop, causal)
        b, h, t, d = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, h * d))


def _attention(q, k, v, mask, dropout: float, causal: bool) -> torch.Tensor:
    if (q.device.type == "cpu" and k.size(2) <= CPU_PLAIN_ATTENTION_KEYS and torch.is_grad_enabled()
            and not torch.compiler.is_compiling()):
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal)


class FeedForward(nn.Module):
    """No dropout inside (fairseq's activation_dropout 0): the residual dropout regularizes, and
    masking the wide hidden layer costs ~10% of a CPU training step."""

    def __init__(self, d_model: int, ffn: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, ffn), nn.Linear(ffn, d_model)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class Block(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; pre- or post-norm residuals."""

    def __init__(self, d_model, ffn, heads, dropout, attention_dropout, pre_norm: bool, cross: bool):
        super().__init__()
        self.pre_norm = pre_norm
        self.self_attn = Attention(d_model, heads, attention_dropout)
        self.cross_attn = Attention(d_model, heads, attention_dropout) if cross else None
        self.ffn = FeedForward(d_model, ffn)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3 if cross else 2))
        self.dropout = Dropout(dropout)

    def _residual(self, x, norm, fn):
        if self.pre_norm:
            return self.dropout.residual(x, fn(norm(x)))
        return norm(self.dropout.residual(x, fn(x)))

    def forward(self, x, self_mask, memory=None, memory_mask=None, cache: dict | None = None):
        self_cache = None if cache is None else cache.setdefault("self", {})
        x = self._residual(x, self.norms[0], lambda h: self.self_attn(h, h, self_mask, self_cache))
        if self.cross_attn is not None:
            cross_cache = None if cache is None else cache.setdefault("cross", {})
            x = self._residual(
                x, self.norms[1],
                lambda h: self.cross_attn(h, memory, memory_mask, cross_cache, static=True),
            )
        return self._residual(x, self.norms[-1], self.ffn)


class Stack(nn.Module):
    """N blocks (+ a final LayerNorm when pre-norm). `cache` is a list with one dict per layer."""

    def __init__(self, layers, d_model, ffn, heads, dropout, attention_dropout, pre_norm, cross):
        super().__init__()
        self.layers = nn.ModuleList(
            Block(d_model, ffn, heads, dropout, attention_dropout, pre_norm, cross) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d_model) if pre_norm else nn.Identity()

    def forward(self, x, self_mask, memory=None, memory_mask=None, cache: list | None = None):
        if cache is not None and not cache:
            cache.extend({} for _ in self.layers)
        for i, layer in enumerate(self.layers):
            x = layer(x, self_mask, memory, memory_mask, None if cache is None else cache[i])
        return self.norm(x)


def reorder_cache(cache: list, rows: torch.Tensor) -> None:
    """Keep/duplicate cached rows (beam reordering, dropping finished sentences), in place."""
    for layer in cache:
        for part in layer.values():
            for key in ("k", "v"):
                if key in part:
                    part[key] = part[key].index_select(0, rows)


class Embedding(nn.Module):
    """Token embedding scaled by sqrt(d) plus fixed sinusoidal positions.

    One table serves encoder input, decoder input and the output projection (shared embeddings
    over a joint vocabulary)."""

    def __init__(self, vocab_size: int, d_model: int, pad: int, dropout: float, position_offset: int = 0):
        super().__init__()
        self.offset = position_offset  # the first token's row of the position table
        self.table = nn.Embedding(vocab_size, d_model, padding_idx=pad)
        nn.init.normal_(self.table.weight, mean=0.0, std=d_model**-0.5)
        with torch.no_grad():
            self.table.weight[pad].zero_()
        self.scale = math.sqrt(d_model)
        self.dropout = Dropout(dropout)
        self.register_buffer("positions", sinusoidal_positions(256, d_model), persistent=False)

    def tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids) * self.scale

    def add_positions(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        start += self.offset
        end = start + x.size(1)
        if end > self.positions.size(0):
            self.positions = sinusoidal_positions(2 * end, x.size(-1)).to(self.positions.device)
        return self.dropout(x + self.positions[start:end].to(x.dtype))

    def forward(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        return self.add_positions(self.tokens(ids), start)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.table.weight.t()


def init_linear(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def smoothed_nll(logits: torch.Tensor, target: torch.Tensor, pad: int, smoothing: float):
    """Token-mean label-smoothed cross-entropy over non-pad targets.

    Returns (loss, nll, ntokens); nll is the unsmoothed mean, the number to compare runs by.
    Pad positions are masked out, not indexed out: selecting rows of the (tokens, vocabulary)
    log-probabilities would copy them, and its backward scatter them back (~5% of a CPU step)."""
    lprobs = F.log_softmax(logits.float(), dim=-1)
    keep = target.ne(pad)
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    loss = (1.0 - smoothing) * nll - smoothing * lprobs.mean(-1) if smoothing else nll
    n = keep.sum()
    mean = lambda x: x.masked_fill(~keep, 0.0).sum() / n.clamp(min=1)  # noqa: E731
    return mean(loss), mean(nll).detach(), int(n)


def scored_logits(embed: Embedding, h: torch.Tensor, target: torch.Tensor, pad: int):
    """The output layer at the non-pad targets only: (positions (B, T) bool, their logits (N, V),
    their targets (N,)). Decoder states (B, T, d) at pad positions (and CMLM's unmasked ones, given
    as pad) never reach the vocabulary projection, the largest matrix product of a small model's step."""
    keep = target.ne(pad)
    return keep, embed.logits(h[keep]), target[keep]


def projected_nll(embed: Embedding, h: torch.Tensor, target: torch.Tensor, pad: int, smoothing: float):
    """smoothed_nll of the output layer at the non-pad targets only (scored_logits)."""
    _, logits, gold = scored_logits(embed, h, target, pad)
    return smoothed_nll(logits, gold, pad, smoothing)


class EncoderDecoder(nn.Module):
    """Shared embeddings, an encoder and a decoder stack with cross-attention; kinds add heads."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = Embedding(cfg.vocab_size, cfg.d_model, cfg.pad, cfg.dropout, getattr(cfg, "position_offset", 0))
        args = (cfg.d_model, cfg.ffn, cfg.heads, cfg.dropout, cfg.attention_dropout, cfg.pre_norm)
        self.encoder = Stack(cfg.encoder_layers, *args, cross=False)
        self.decoder = Stack(cfg.decoder_layers, *args, cross=True)

    def encode(self, src: torch.Tensor):
        """Encoder states (B, S, d) and the source padding mask (B, S), True at padding."""
        src_pad = src.eq(self.cfg.pad)
        return self.encoder(self.embed(src), key_mask(src_pad)), src_pad


class LengthHead(nn.Module):
    """Target length as a classifier over offsets from the source length (Gu et al. 2018):
    class = len(y) - len(x) + classes // 2, clamped; input is the mean-pooled encoder output."""

    def __init__(self, d_model: int, classes: int = 256):
        super().__init__()
        self.proj = nn.Linear(d_model, classes)
        self.classes, self.offset = classes, classes // 2

    def logits(self, memory, src_pad):
        keep = (~src_pad).unsqueeze(-1).to(memory.dtype)
        return self.proj((memory * keep).sum(1) / keep.sum(1).clamp(min=1)).float()

    def loss(self, memory, src_pad, tgt_len):
        target = (tgt_len - (~src_pad).sum(1) + self.offset).clamp(0, self.classes - 1)
        return torch.nn.functional.cross_entropy(self.logits(memory, src_pad), target)

    def predict(self, memory, src_pad, beam: int = 1) -> torch.Tensor:
        """(B, beam) candidate lengths: the argmax and its neighbours -b/2 .. b-1-b/2, at least 1."""
        best = self.logits(memory, src_pad).argmax(-1) - self.offset + (~src_pad).sum(1)
        shifts = torch.arange(beam, device=memory.device) - beam // 2
        return (best[:, None] + shifts[None]).clamp(min=1)
