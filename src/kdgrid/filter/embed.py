"""What the frozen AT teacher thinks of a sentence pair, as one vector.

The teacher reads the pair the way it was trained to: the encoder on source + eos, the decoder
teacher-forced on bos + target. The embedding is [mean of the encoder states over the source's
tokens ; mean of the decoder's final hidden states over bos + target] (N, 2d): the decoder
states are the output of its layer stack, before the tied output projection, i.e. what the
teacher's next-token logits are a linear function of. A pair whose target does not follow from
its source (misaligned, truncated, copied, shuffled) leaves its mark there.

Only the teacher's public face is used: `encode` and `states` (the teacher-forced decoder
states its own `decode` projects to logits), so the filter does not depend on how the model is
built inside: its layers may change without the filter changing.
"""

from __future__ import annotations

import numpy as np
import torch

from kdgrid.batching import Ids, collate, token_batches
from kdgrid.errors import KdgridError

PUBLIC = ("encode", "states")  # all it calls on the teacher, besides cfg and nn.Module's parameters/train/eval


def _seqs(ids) -> list:
    return [ids[i] for i in range(len(ids))] if isinstance(ids, Ids) else list(ids)


def _mean_over(states: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    keep = (~pad).unsqueeze(-1).to(states.dtype)
    return (states * keep).sum(1) / keep.sum(1).clamp(min=1)


def _check_teacher(teacher) -> None:
    missing = [name for name in PUBLIC if not callable(getattr(teacher, name, None))]
    if missing or not getattr(teacher, "autoregressive", False):
        raise KdgridError(f"the filter's teacher must be an autoregressive encoder-decoder (kind "
                          f"transformer); got kind {getattr(teacher, 'kind', type(teacher).__name__)!r}")


@torch.no_grad()
def pair_embeddings(teacher, src_ids, tgt_ids, max_tokens: int = 4096, device: str | None = None) -> np.ndarray:
    """(N, 2d) float32 embeddings of the pairs (src_ids[i], tgt_ids[i]), token ids without
    bos/eos. Batched by `max_tokens` (padded tokens of the longer side); the result does not
    depend on the batching (padding is masked out of attention and out of the means)."""
    _check_teacher(teacher)
    src, tgt = _seqs(src_ids), _seqs(tgt_ids)
    if len(src) != len(tgt):
        raise KdgridError(f"pair_embeddings: {len(src)} sources but {len(tgt)} targets")
    cfg = teacher.cfg
    device = device or next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()  # no dropout: the same pair always gives the same vector
    out = np.zeros((len(src), 2 * cfg.d_model), dtype=np.float32)
    try:
        for rows in token_batches([len(s) for s in src], [len(t) for t in tgt], max_tokens):
            batch = collate([src[i] for i in rows], [tgt[i] for i in rows], cfg.pad, cfg.bos, cfg.eos)
            src_t, prev = batch["src"].to(device), batch["tgt_in"].to(device)
            memory, src_pad = teacher.encode(src_t)
            # Right padding and the decoder's causal mask: no real position sees a pad, so padding
            # changes nothing but the pad rows, which the mean leaves out.
            hidden = teacher.states(prev, memory, src_pad)
            pooled = torch.cat([_mean_over(memory, src_pad), _mean_over(hidden, prev.eq(cfg.pad))], dim=-1)
            out[rows] = pooled.float().cpu().numpy()
    finally:
        teacher.train(was_training)
    return out
