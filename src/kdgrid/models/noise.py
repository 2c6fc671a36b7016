"""Noise that builds a non-autoregressive decoder's training input from the target.

All functions take content tokens (no bos/eos), right-padded with `pad`, and draw from torch's
global RNG (seeded and checkpointed by the Trainer)."""

from __future__ import annotations

import torch


def random_mask(tgt: torch.Tensor, pad: int, mask: int):
    """Mask floor(L*u)+1 random tokens of each sentence (u ~ U(0,1); CMLM). Returns
    (input with <mask>, bool positions that were masked)."""
    real = tgt.ne(pad)
    lengths = real.sum(1)
    n_mask = (lengths.float() * torch.rand(len(tgt), device=tgt.device)).long() + 1
    n_mask = torch.minimum(n_mask, lengths)
    score = torch.rand(tgt.shape, device=tgt.device).masked_fill(~real, 2.0)
    rank = score.argsort(1).argsort(1)  # rank of each position among the sentence's own
    masked = (rank < n_mask[:, None]) & real
    return tgt.masked_fill(masked, mask), masked


def random_delete(tgt: torch.Tensor, pad: int):
    """Keep k ~ U{0..L} of a sentence's L tokens, in order (LevT, InsT). As in Stern et al., k = L
    is included (fairseq's random_delete never keeps all): seeing complete targets is how the
    insertion heads learn when to stop. Returns (kept tokens right-padded, bool (B, T) which
    positions of `tgt` were kept)."""
    real = tgt.ne(pad)
    lengths = real.sum(1)
    n_keep = ((lengths + 1).float() * torch.rand(len(tgt), device=tgt.device)).long().clamp(max=lengths)
    score = torch.rand(tgt.shape, device=tgt.device).masked_fill(~real, 2.0)
    rank = score.argsort(1).argsort(1)
    kept = (rank < n_keep[:, None]) & real
    width = max(int(n_keep.max()), 1)
    order = (~kept).float().argsort(dim=1, stable=True)[:, :width]  # kept positions first, in order
    inside = torch.arange(width, device=tgt.device)[None] < n_keep[:, None]
    return torch.where(inside, tgt.gather(1, order), pad), kept


def corrupt(tgt: torch.Tensor, pad: int, low: int, vocab_size: int, p: float = 0.11):
    """iNAT's denoising input: each real token is replaced by a random word, repeated from its
    left neighbour, or swapped with its right neighbour, each with probability p."""
    real = tgt.ne(pad)
    out = tgt.clone()
    u = torch.rand(tgt.shape, device=tgt.device)
    replace = real & (u < p)
    out[replace] = torch.randint(low, vocab_size, (int(replace.sum()),), device=tgt.device)
    repeat = real & (u >= p) & (u < 2 * p)
    repeat[:, 0] = False
    prev = torch.cat([out[:, :1], out[:, :-1]], 1)
    out = torch.where(repeat, prev, out)
    swap = real & (u >= 2 * p) & (u < 3 * p)
    swap[:, -1] = False
    swap &= torch.cat([real[:, 1:], torch.zeros_like(real[:, :1])], 1)  # right neighbour is real
    swap &= ~torch.cat([torch.zeros_like(swap[:, :1]), swap[:, :-1]], 1)  # no overlapping swaps
    right = torch.cat([out[:, 1:], out[:, -1:]], 1)
    left = torch.cat([out[:, :1], out[:, :-1]], 1)
    swapped_from_left = torch.cat([torch.zeros_like(swap[:, :1]), swap[:, :-1]], 1)
    out = torch.where(swap, right, torch.where(swapped_from_left, left, out))
    return out
