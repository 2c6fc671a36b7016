"""Token-level divergences between a teacher's and a student's distributions (word-level KD).

Both sides arrive as logits (B, T, V) (log-probabilities are logits too) and are softened by the
temperature T: p = softmax(teacher / T), q = softmax(student / T). Per target position:
  fkl  KL(p || q) = sum_v p (log p - log q)   forward KL: mode-covering (q must cover all of p)
  rkl  KL(q || p) = sum_v q (log q - log p)   reverse KL: mode-seeking (q may sit on one mode of p)
  mix  mix_weight * fkl + (1 - mix_weight) * rkl
averaged over the positions in `mask` (token mean, as the word cross-entropy; without a mask, over
every row given: the word-level KD wrappers pass the scored rows (N, V) they already selected, the
ones the word loss reads), then multiplied by
T^2 (Hinton et al. 2015): the gradient of a softened KL shrinks as 1/T^2, so the factor keeps the
KD term's weight against the cross-entropy the same whatever the temperature.

The teacher side is always detached here: a KD loss never trains the teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdgrid.kd.specs import KD_LOSSES


def token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None,
             loss: str = "fkl", temperature: float = 1.0, mix_weight: float = 0.5) -> torch.Tensor:
    """The token-mean divergence `loss` over the positions where `mask` is True (a scalar), or over
    every position without a mask. student_logits and teacher_logits: (..., V) of the same shape;
    mask: their leading shape."""
    if loss not in KD_LOSSES:
        raise ValueError(f"KD loss must be one of {', '.join(KD_LOSSES)}, got {loss!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} do not align")
    teacher_logits = teacher_logits.detach()
    if mask is not None:  # select first: the softmaxes run over the covered positions only
        student_logits, teacher_logits = student_logits[mask], teacher_logits[mask]
    if student_logits.numel() == 0:  # no position to distil (keeps the graph: a zero with a gradient)
        return student_logits.sum() * 0.0
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_token = 0.0
    if loss in ("fkl", "mix"):
        fkl = F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)  # KL(p || q)
        per_token = fkl if loss == "fkl" else mix_weight * fkl
    if loss in ("rkl", "mix"):
        rkl = (log_q.exp() * (log_q - log_p)).sum(-1)  # KL(q || p)
        per_token = rkl if loss == "rkl" else per_token + (1.0 - mix_weight) * rkl
    return per_token.mean() * temperature**2
