"""Word-level KD (Kim & Rush 2016's word-level, Hinton's soft targets): the student learns from the
teacher's distribution at every target position as well as from the reference words.

    loss = (1 - alpha) * word CE (label-smoothed as the student's own) + alpha * KD
           + the student's other terms unchanged (an NAT's or CMLM's length loss with its weight)

KD is kdgrid.kd.losses.token_kl (fkl | rkl | mix, temperature T, times T^2).

The teacher's distribution at target position t is its teacher-forced p(y_t | y_<t, x) on the very
target sentence the student trains on (batch tgt_in -> tgt_out). The student's positions align
1:1 with the target tokens:
  transformer  decode(tgt_in) predicts tgt_out: every position, eos included, as the teacher's;
  nat          in training the NAT decoder runs at the gold target length, so its position t is
               target token t (lengths never differ in training; at inference there is no KD);
  cmlm         the positions masked by the same random_mask draw as its own loss (the ones its
               loss covers): the distilled positions are exactly the predicted ones.
An MoE teacher gives its mixture's exact teacher-forced next-token distribution,
p(y_t | y_<t, x) = sum_k p(k | x, y_<t) p(y_t | y_<t, x, k), with p(k | x, y_<t) proportional to
p(k | x) p(y_<t | x, k): the distribution of the model the MoE is, not of one expert.

The student's own terms are computed here from the model's public pieces (encode, states,
first_input, random_mask, projected_nll, LengthHead.loss) in the order its `loss` uses them, so the
student runs once per batch and draws the same random numbers: with alpha 0 the wrapper's loss is
the model's loss exactly (a test guards this).

In eval mode (the Trainer's validation) the wrapper returns the student's own `model.loss`, so the
best checkpoint is chosen on the student's own valid loss, as for a plain student.

The teacher is frozen (eval mode, requires_grad False) and kept out of the module tree (held in a
tuple), so it is never in parameters(), state_dict(), a checkpoint or the output model file.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from kdgrid.errors import KdgridError
from kdgrid.kd.losses import token_kl
from kdgrid.kd.specs import KD_KINDS, KDSpec
from kdgrid.models.layers import projected_nll
from kdgrid.models.moe import MoE
from kdgrid.models.noise import random_mask
from kdgrid.models.transformer import Transformer

# What the KD term compares, for the record (meta["wrapper"]["kd"], scores.json): the teacher side is
# its teacher-forced distribution on the student's own target, not its free-running output, and
# for a NAT/CMLM student that is a decision the papers leave open, so the record says it in words.
TEACHER_DISTRIBUTION = "AT teacher, teacher-forced on the gold target prefix"
MOE_TEACHER_DISTRIBUTION = ("MoE teacher's mixture p(y_t | y_<t, x) (experts weighted by their posterior "
                            "given the prefix), teacher-forced on the gold target prefix")
GOLD = ("the target the student trains on (batch tgt_out): the real target in a raw column, the "
        "teacher's own output in a distilled column")
DISTILLED_POSITIONS = {"transformer": "every target position, eos included",
                       "nat": "every target token (no eos): student position t <- teacher position t",
                       "cmlm": "the target tokens masked by the CMLM's own random_mask draw (its scored ones)"}


def choices(student_kind: str, teacher_kind: str) -> dict:
    """The record of what word-level KD compares for this student and teacher."""
    return {"teacher_distribution": MOE_TEACHER_DISTRIBUTION if teacher_kind == "moe" else TEACHER_DISTRIBUTION,
            "gold_target": GOLD, "distilled_positions": DISTILLED_POSITIONS[student_kind]}


def teacher_logprobs(teacher: Transformer, batch: dict) -> torch.Tensor:
    """Teacher-forced log p(y_t | y_<t, x), float32 (B, T+1, V), at every position of tgt_out."""
    memory, src_pad = teacher.encode(batch["src"])
    prev, gold = batch["tgt_in"], batch["tgt_out"]
    if not isinstance(teacher, MoE):
        return F.log_softmax(teacher.decode(prev, memory, src_pad).float(), dim=-1)
    experts = teacher.cfg.experts
    per_expert = torch.stack([F.log_softmax(teacher.decode(teacher.with_start(prev, k), memory, src_pad).float(), -1)
                              for k in range(experts)])  # (K, B, T, V)
    token = per_expert.gather(-1, gold.expand(experts, *gold.shape).unsqueeze(-1)).squeeze(-1)
    token = token.masked_fill(gold.eq(teacher.cfg.pad), 0.0)
    prefix = torch.cat([torch.zeros_like(token[..., :1]), token[..., :-1]], -1).cumsum(-1)  # log p(y_<t|x,k)
    prior = teacher.prior_logprobs(memory, src_pad).t()[:, :, None]  # (K, B, 1)
    posterior = F.log_softmax(prior + prefix, dim=0)  # log p(k | x, y_<t)
    return torch.logsumexp(posterior.unsqueeze(-1) + per_expert, dim=0)


class StudentTerms(NamedTuple):
    logits: torch.Tensor  # (B, L, V) at the student's target positions
    positions: torch.Tensor  # (B, L) bool: the positions its word loss covers (and KD distils)
    word: torch.Tensor  # label-smoothed word CE (token mean)
    nll: torch.Tensor
    ntokens: int
    length: torch.Tensor | None  # NAT/CMLM length loss, unweighted


class WordKD(nn.Module):
    """A student with word-level KD from a frozen AT teacher. The Trainer sees the student's `kind`
    and `cfg`; it optimizes and saves `student`."""

    def __init__(self, student: nn.Module, teacher: nn.Module, spec: KDSpec):
        super().__init__()
        if student.kind not in KD_KINDS:
            raise KdgridError(f"word-level KD needs target positions aligned with the teacher's: student "
                              f"kind {student.kind!r} has none; use one of {', '.join(KD_KINDS)}")
        if not isinstance(teacher, Transformer):
            raise KdgridError(f"word-level KD: the teacher must be an autoregressive model (transformer "
                              f"or moe), got kind {teacher.kind!r}")
        for name in ("vocab_size", "pad", "bos", "eos"):
            if getattr(teacher.cfg, name) != getattr(student.cfg, name):
                raise KdgridError(f"word-level KD: {name} is {getattr(student.cfg, name)} in the student but "
                                  f"{getattr(teacher.cfg, name)} in the teacher; train both with the same "
                                  "vocabulary")
        self.student, self.spec = student, spec
        self.kind, self.cfg = student.kind, student.cfg
        teacher = teacher.to(next(student.parameters()).device).eval()
        teacher.requires_grad_(False)
        self._teacher = (teacher,)  # a tuple: nn.Module registers neither it nor its weights

    @property
    def teacher(self) -> Transformer:
        return self._teacher[0]

    # -- the Trainer's interface ------------------------------------------------------------
    def loss(self, batch: dict, label_smoothing: float = 0.0):
        if not self.training:
            return self.student.loss(batch, label_smoothing=label_smoothing)
        terms = self.student_terms(batch, label_smoothing)
        with torch.no_grad():
            target = teacher_logprobs(self.teacher, batch)
        return self.student_loss(terms, target)

    # -- pieces -----------------------------------------------------------------------------
    def student_terms(self, batch: dict, label_smoothing: float) -> StudentTerms:
        """The student's own loss pieces, computed as its `loss` computes them (same order, same
        random draws)."""
        s, pad = self.student, self.cfg.pad
        memory, src_pad = s.encode(batch["src"])
        length = None
        if self.kind == "transformer":
            h = s.states(batch["tgt_in"], memory, src_pad)
            target = batch["tgt_out"]
        else:
            tgt = batch["tgt"]
            tgt_pad = tgt.eq(pad)
            if self.kind == "nat":
                h = s.states(s.first_input(batch["src"], src_pad, tgt_pad), tgt_pad, memory, src_pad)
                target = tgt
            else:  # cmlm
                noisy, masked = random_mask(tgt, pad, self.cfg.mask)
                h = s.states(noisy, tgt_pad, memory, src_pad)
                target = tgt.masked_fill(~masked, pad)
        # the word term exactly as the model's loss computes it (the output layer on the scored
        # positions only), the full logits for the KD term
        word, nll, n = projected_nll(s.embed, h, target, pad, label_smoothing)
        logits = s.embed.logits(h)
        if self.kind != "transformer":
            length = s.length.loss(memory, src_pad, (~tgt_pad).sum(1))
        return StudentTerms(logits, target.ne(pad), word, nll, n, length)

    def student_loss(self, terms: StudentTerms, teacher_lp: torch.Tensor):
        """(1 - alpha) * word CE + alpha * KD (+ weighted length loss), and the logs."""
        spec = self.spec
        aligned = teacher_lp[:, : terms.logits.size(1)]  # NAT/CMLM: no eos position
        kd = token_kl(terms.logits, aligned, terms.positions, spec.loss, spec.temperature, spec.mix_weight)
        total = (1.0 - spec.alpha) * terms.word + spec.alpha * kd
        logs = {"nll": terms.nll, "word_ce": terms.word.detach(), "kd": kd.detach()}
        if terms.length is not None:
            total = total + self.cfg.length_loss_weight * terms.length
            logs["length"] = terms.length.detach()
        return total, {"loss": total.detach(), **logs, "ntokens": terms.ntokens}
