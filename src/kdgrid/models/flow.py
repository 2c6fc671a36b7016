"""FlowSeq's prior flow: Glow-style layers over per-position latents, arranged in several scales.

Density direction (z -> eps, the direction the ELBO evaluates), for steps per level [K_0, ..., K_L]:

    level i < L: K_i steps at the current resolution (actnorm, invertible linear map over channels,
                 affine coupling attending to the source), then a *split prior*, then the split:
                 the second half of the channels leaves the flow, the first half is squeezed (time
                 steps 2j and 2j+1 become one position with twice the channels) and enters level i+1;
    level L:     K_L steps, no split.

This is FlowSeq's order (steps, split, squeeze), so every level has the same number of channels
(`latent`). The split prior is FlowSeq's: the leaving half h2 is scored by a Gaussian whose mean
and scale are functions of the kept half h1 and the source, written as one more affine coupling
(h2' = (h2 + shift(h1, x)) * exp(log_scale(h1, x)), h2' ~ N(0, I)), zero-initialized so that it
starts as a standard normal.

Padding (targets are right-padded). A squeezed position is real only when both of its time steps
are real; an odd-length sentence's last position (or a real step paired with padding, at any
level) is not squeezed: its kept half leaves the flow at that level and is scored by the standard
normal. So at every level the flow is an exact bijection over the real positions' channels, padded
positions never reach a real one (attention masks them, the other layers act per position), and
each log-determinant counts only the positions real at its level. Pairing starts at position 0 of
every sentence, so a sentence's latents do not depend on the batch it is padded into.

The outputs of all levels are put back in place (unsqueezed, then joined to the channels split off
there), so the base variable eps has the shape of z, (B, T, latent); noise for sampling is drawn
per position, as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdgrid.models.layers import Stack, key_mask


def attention_mask(mask: torch.Tensor) -> torch.Tensor:
    """Keys a coupling may attend to: the real positions; every position of a row with none (a
    deep level of a short sentence, where nothing real is left and the values are unused), so that
    no softmax is taken over nothing."""
    pad = mask.eq(0)
    return key_mask(pad & ~pad.all(1, keepdim=True))


class ActNorm(nn.Module):
    """Per-channel affine map. Data-dependent initialization (Kingma & Dhariwal 2018): on its first
    training batch, bias and log_scale are set so that the real positions come out with zero mean
    and unit variance per channel. `initialized` is a buffer, so a checkpoint remembers it and a
    resumed or loaded model is not re-initialized."""

    def __init__(self, c):
        super().__init__()
        self.log_scale, self.bias = nn.Parameter(torch.zeros(c)), nn.Parameter(torch.zeros(c))
        self.register_buffer("initialized", torch.tensor(False))
        self._ready = False  # Python-side copy of `initialized`: no device sync per forward

    @torch.no_grad()
    def _data_init(self, z, mask) -> None:
        w, x = mask.float()[..., None], z.detach().float()
        n = w.sum()
        if n < 1:  # no real position at this level in this batch: wait for one that has some
            return
        mean = (x * w).sum((0, 1)) / n
        std = (((x - mean) ** 2 * w).sum((0, 1)) / n + 1e-6).sqrt()
        self.bias.copy_(-mean)
        self.log_scale.copy_(-std.log())
        self.initialized.fill_(True)
        self._ready = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # files written before data-dependent init have no flag: their actnorms are trained
        state_dict.setdefault(prefix + "initialized", torch.tensor(True))
        self._ready = False  # re-read the flag from the loaded buffer
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, z, mask, memory, src_pad):  # density direction z -> eps
        if self.training and not self._ready:
            if bool(self.initialized):
                self._ready = True
            else:
                self._data_init(z, mask)
        return (z + self.bias) * self.log_scale.exp(), self.log_scale.sum() * mask.sum(1)

    def reverse(self, e, mask, memory, src_pad):
        return e * (-self.log_scale).exp() - self.bias


class InvertibleLinear(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(c, c))[0])

    def forward(self, z, mask, memory, src_pad):
        return z @ self.weight, torch.linalg.slogdet(self.weight)[1] * mask.sum(1)

    def reverse(self, e, mask, memory, src_pad):
        return e @ torch.linalg.inv(self.weight)


class Coupling(nn.Module):
    """Affine coupling: the second half of the channels is scaled and shifted by a network of the
    first half that attends to the source; zero-initialized, so it starts as the identity."""

    def __init__(self, c, d_model, ffn, heads, pre_norm):
        super().__init__()
        self.inp = nn.Linear(c // 2, d_model)
        self.net = Stack(1, d_model, ffn, heads, 0.0, 0.0, pre_norm, cross=True)
        self.out = nn.Linear(d_model, c)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def params(self, za, mask, memory, src_pad):
        h = self.net(self.inp(za), attention_mask(mask), memory, key_mask(src_pad))
        log_scale, shift = self.out(h).chunk(2, -1)
        return torch.tanh(log_scale), shift  # bounded scales keep the flow stable

    def forward(self, z, mask, memory, src_pad):
        za, zb = z.chunk(2, -1)
        log_scale, shift = self.params(za, mask, memory, src_pad)
        out = torch.cat([za, (zb + shift) * log_scale.exp()], -1)
        return out, (log_scale * mask[..., None]).sum((1, 2))

    def reverse(self, e, mask, memory, src_pad):
        ea, eb = e.chunk(2, -1)
        log_scale, shift = self.params(ea, mask, memory, src_pad)
        return torch.cat([ea, eb * (-log_scale).exp() - shift], -1)


# -- squeezing along time ---------------------------------------------------------------------
def squeeze(x: torch.Tensor, mask: torch.Tensor):
    """(B, T, c) -> (B, ceil(T/2), 2c): steps 2j and 2j+1 side by side; the new mask is real where
    both were. Also returns `lone`, (B, T): real steps whose pair is not real (they stay here)."""
    b, t, c = x.shape
    even = t + t % 2
    x = F.pad(x, (0, 0, 0, even - t)).reshape(b, even // 2, 2 * c)
    real = mask.bool()
    pairs = F.pad(real, (0, even - t)).view(b, even // 2, 2).all(-1)
    lone = real & ~pairs.repeat_interleave(2, 1)[:, :t]
    return x, pairs.to(mask.dtype), lone


def unsqueeze(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T2, 2c) -> (B, length, c), the inverse of squeeze's reshaping."""
    b, t2, c2 = x.shape
    return x.reshape(b, 2 * t2, c2 // 2)[:, :length]


# -- the multi-scale flow ---------------------------------------------------------------------
def build_flow(levels, c, d_model, ffn, heads, pre_norm):
    """(steps, splits): one flat list of every level's step layers (3 per step, level by level:
    the layout of single-scale kdgrid files, which keep loading), and one split prior per level
    but the last."""
    steps = nn.ModuleList(
        layer for _ in range(sum(levels))
        for layer in (ActNorm(c), InvertibleLinear(c), Coupling(c, d_model, ffn, heads, pre_norm))
    )
    splits = nn.ModuleList(Coupling(c, d_model, ffn, heads, pre_norm) for _ in levels[1:])
    return steps, splits


def _level_layers(steps, levels, i):
    start = 3 * sum(levels[:i])
    return steps[start : start + 3 * levels[i]]


def flow_forward(steps, splits, levels, z, mask, memory, src_pad, i=0):
    """Density direction: z (B, T, c) -> (eps of the same shape, log|det d eps / dz| per row)."""
    logdet = torch.zeros(len(z), device=z.device)
    for layer in _level_layers(steps, levels, i):
        z, ld = layer(z, mask, memory, src_pad)
        logdet = logdet + ld
    if i == len(levels) - 1:
        return z, logdet
    z, ld = splits[i](z, mask, memory, src_pad)
    keep, leave = z.chunk(2, -1)
    squeezed, inner_mask, lone = squeeze(keep, mask)
    inner, inner_ld = flow_forward(steps, splits, levels, squeezed, inner_mask, memory, src_pad, i + 1)
    keep = torch.where(lone[..., None], keep, unsqueeze(inner, z.size(1)))
    return torch.cat([keep, leave], -1), logdet + ld + inner_ld


def flow_reverse(steps, splits, levels, eps, mask, memory, src_pad, i=0):
    """Generative direction: eps (B, T, c) -> z, the inverse of flow_forward."""
    if i < len(levels) - 1:
        keep, leave = eps.chunk(2, -1)
        squeezed, inner_mask, lone = squeeze(keep, mask)
        inner = flow_reverse(steps, splits, levels, squeezed, inner_mask, memory, src_pad, i + 1)
        keep = torch.where(lone[..., None], keep, unsqueeze(inner, eps.size(1)))
        eps = splits[i].reverse(torch.cat([keep, leave], -1), mask, memory, src_pad)
    for layer in reversed(_level_layers(steps, levels, i)):
        eps = layer.reverse(eps, mask, memory, src_pad)
    return eps
