"""Glancing training (GLAT; Qian et al. 2021) around a one-pass student (the vanilla NAT, CTC).

Each training step decodes twice from one encoder pass. The first decoder pass (no gradient) is
compared with an oracle per position: the target itself (NAT) or each position's token on the gold
target's best path (CTC: kdgrid.models.ctc.best_alignment; DAT: the graph's, kdgrid.models.dag.
best_path). Some positions then take the oracle token's embedding as decoder input, and the second
pass is trained:
  - NAT (`glance_sampling = "count"`, the paper): N = floor(wrong x p) positions chosen at random,
    the loss on the other positions;
  - CTC (`"bernoulli"`, the GLAT reference's rule as the CTC recipes use it): each position with
    probability (wrong / positions) x p, the CTC loss on the whole target;
  - DAT (`"count_rounded"`, the DA-Transformer scripts' "number-random"): N = floor(wrong x p + 0.5)
    of the best path's vertices, the loss over every path of the whole target.
p falls linearly from p_start to p_end over anneal_updates (GlanceSpec; the reference: 0.5 -> 0.3
over the whole run). Both decoder passes draw the same dropout masks (the RNG is rewound between
them); the random choice of positions is drawn before the first pass, so a step's draws are those
of the plain model's step plus one uniform number per position. Validation (eval mode) scores the
plain model's loss. The wrapper knows no model kind: a kind offers glance_start, glance_first
(the first pass's argmax, the oracle and the positions that may be glanced), glance_sampling
(None: it cannot glance) and a loss that takes `glance` (kdgrid.models.terms.Glance).
"""

from __future__ import annotations

import torch
from torch import nn

from kdgrid.errors import KdgridError
from kdgrid.kd.specs import GLANCE_KINDS, GlanceSpec, as_dict
from kdgrid.models.terms import Glance

RULES = {"count": "N = floor(wrong x p) positions chosen at random; loss on the other positions",
         "bernoulli": "each position with probability (wrong / positions) x p; loss on the whole target",
         "count_rounded": "N = floor(wrong x p + 0.5) of the best path's vertices chosen at random; "
                          "loss on the whole target"}


def ratio(spec: GlanceSpec, update: int, max_updates: int) -> float:
    """The glancing ratio p after `update` updates: linear from p_start to p_end, then flat."""
    span = spec.anneal_updates or max_updates
    if span <= 0:
        raise KdgridError("--wrap glance.anneal_updates: the run has no max_updates (it stops by epochs); "
                          "give the updates over which p anneals")
    return spec.p_start + (spec.p_end - spec.p_start) * min(1.0, update / span)


def glanced_positions(sampling: str, uniform: torch.Tensor, wrong: torch.Tensor, real: torch.Tensor,
                      p: float) -> torch.Tensor:
    """(B, L) bool: the glanced positions, from one uniform number per position. wrong: (B,) the
    first pass's wrong positions among `real` (B, L), the positions that may be glanced."""
    if sampling in ("count", "count_rounded"):
        n = torch.floor(wrong.double() * p + (0.5 if sampling == "count_rounded" else 0.0)).long()
        rank = uniform.masked_fill(~real, 2.0).argsort(1).argsort(1)  # a random order of the real positions
        return rank < n[:, None]
    if sampling == "bernoulli":
        prob = wrong.double() / real.sum(1).clamp(min=1) * p
        return (uniform.double() < prob[:, None]) & real
    raise KdgridError(f"unknown glance sampling {sampling!r}; known: {', '.join(RULES)}")


class Glancing(nn.Module):
    """The Trainer's model: `loss` as GLAT trains; the Trainer sees the student's `kind` and `cfg`,
    and optimizes and saves `student`."""

    def __init__(self, student: nn.Module, spec: GlanceSpec):
        super().__init__()
        if student.kind not in GLANCE_KINDS or getattr(student, "glance_sampling", None) is None:
            raise KdgridError(f"--wrap glance: model kind {student.kind!r} cannot glance (one parallel pass whose "
                              f"decoder inputs take gold embeddings); glance is for kinds {', '.join(GLANCE_KINDS)}")
        self.student, self.spec, self.kind, self.cfg = student, spec, student.kind, student.cfg
        self.update, self.max_updates = 0, 0

    def set_update(self, update: int, max_updates: int) -> None:
        """The Trainer's updates so far (checkpointed, so a resumed run anneals on)."""
        self.update, self.max_updates = update, max_updates

    def record(self) -> dict:
        return {**as_dict(self.spec), "sampling": RULES[self.student.glance_sampling],
                "schedule": "p = p_start + (p_end - p_start) * min(1, update / anneal_updates)",
                "first_pass": "no gradient, the same dropout masks as the second"}

    def loss(self, batch: dict, label_smoothing: float = 0.0):
        model = self.student
        if not self.training:
            return model.loss(batch, label_smoothing)
        p = ratio(self.spec, self.update, self.max_updates)
        start = model.glance_start(batch)
        uniform = torch.rand(start.out_pad.shape, device=start.out_pad.device)
        device = start.out_pad.device
        rng = torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        with torch.no_grad():
            predicted, oracle, real = model.glance_first(start, batch)
        torch.set_rng_state(rng[0])  # the second pass draws the first pass's dropout masks
        if rng[1] is not None:
            torch.cuda.set_rng_state(rng[1], device)
        wrong = (predicted.ne(oracle) & real).sum(1)  # a pair without a path (CTC, DAT) has no real position
        mask = glanced_positions(model.glance_sampling, uniform, wrong, real, p)
        total, logs = model.loss(batch, label_smoothing, glance=Glance(start, mask, oracle, real))
        positions = real.sum().clamp(min=1)
        logs.update(glance_accuracy=(1 - wrong.sum() / positions).detach(), glance_p=torch.tensor(p),
                    glanced=(mask.sum() / positions).detach())
        return total, logs
