"""Word-level KD (Kim & Rush 2016's word-level, Hinton's soft targets): the student learns from the
teacher's distribution at every target position as well as from the reference words.

    loss = (1 - alpha) * word CE (label-smoothed as the student's own) + alpha * KD
           + the student's other terms unchanged (an NAT's or CMLM's length loss with its weight)

KD is kdgrid.kd.losses.token_kl (fkl | rkl | mix, temperature T, times T^2).

The teacher's distribution at target position t is its teacher-forced p(y_t | y_<t, x) on the very
target sentence the student trains on (batch tgt_in -> tgt_out). A student kind takes word-level KD
when its positions align 1:1 with the target tokens: its model class has `loss_terms(batch)`
(kdgrid.models.terms.LossTerms: decoder states, the target ids it scores with pad elsewhere, its
other weighted terms) and says in `distilled_positions` which teacher positions its scored ones are:
  transformer  decode(tgt_in) predicts tgt_out: every position, eos included, as the teacher's;
  nat          in training the NAT decoder runs at the gold target length, so its position t is
               target token t (lengths never differ in training; at inference there is no KD);
  cmlm         the positions masked by the same random_mask draw as its own loss (the ones its
               loss covers): the distilled positions are exactly the predicted ones.
kdgrid.kd.specs.KD_KINDS lists these kinds for planning (torch-free); a test checks it against the
model classes that have loss_terms. The others have none: iNAT's word loss spans several unrolled
passes, LevT's and InsT's losses are over edit operations and slots, FlowSeq's is an ELBO over a
latent sequence.
An MoE teacher gives its mixture's exact teacher-forced next-token distribution,
p(y_t | y_<t, x) = sum_k p(k | x, y_<t) p(y_t | y_<t, x, k), with p(k | x, y_<t) proportional to
p(k | x) p(y_<t | x, k): the distribution of the model the MoE is, not of one expert.

The student's own terms come from its `loss_terms`, the very call its `loss` composes
(kdgrid.models.terms.compose), so the student runs once per batch, draws the same random numbers
and keeps its extra terms (the length loss) with their weights: with alpha 0 the wrapper's loss is
the model's loss exactly (a test guards this). The output layer runs once per step, on the scored
positions only (kdgrid.models.terms.score): the word CE and the KD term read the same logits,
against the teacher's log-probabilities gathered at the same positions.

In eval mode (the Trainer's validation) the wrapper returns the student's own `model.loss`, so the
best checkpoint is chosen on the student's own valid loss, as for a plain student.

The teacher is frozen (eval mode, requires_grad False) and kept out of the module tree (held in a
tuple), so it is never in parameters(), state_dict(), a checkpoint or the output model file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdgrid.errors import KdgridError
from kdgrid.kd.losses import token_kl
from kdgrid.kd.specs import KD_KINDS, KDSpec
from kdgrid.models.moe import MoE
from kdgrid.models.registry import MODELS
from kdgrid.models.terms import LossTerms, Scored, logs, score, with_extras
from kdgrid.models.transformer import Transformer


def takes_kd(model) -> bool:
    """Whether a model (or model class) has target positions aligned with an AT teacher's: `loss_terms`."""
    return callable(getattr(model, "loss_terms", None))


# What the KD term compares, for the record (meta["wrapper"]["kd"], scores.json): the teacher side is
# its teacher-forced distribution on the student's own target, not its free-running output, and
# for a NAT/CMLM student that is a decision the papers leave open, so the record says it in words.
TEACHER_DISTRIBUTION = "AT teacher, teacher-forced on the gold target prefix"
MOE_TEACHER_DISTRIBUTION = ("MoE teacher's mixture p(y_t | y_<t, x) (experts weighted by their posterior "
                            "given the prefix), teacher-forced on the gold target prefix")
GOLD = ("the target the student trains on (batch tgt_out): the real target in a raw column, the "
        "teacher's own output in a distilled column")
# each KD kind's own words (the model class's distilled_positions), gathered for the record's readers
DISTILLED_POSITIONS = {kind: cls.distilled_positions for kind, cls in MODELS.items() if takes_kd(cls)}


def choices(student_kind: str, teacher_kind: str) -> dict:
    """The record of what word-level KD compares for this student and teacher."""
    return {"teacher_distribution": MOE_TEACHER_DISTRIBUTION if teacher_kind == "moe" else TEACHER_DISTRIBUTION,
            "gold_target": GOLD, "distilled_positions": DISTILLED_POSITIONS[student_kind]}


def at_positions(teacher_lp: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The teacher's rows (N, V) at the student's scored positions (B, L), row-major as the student's
    scored logits: its first L positions (an NAT/CMLM has no eos position)."""
    return teacher_lp[:, : positions.size(1)][positions]


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


class WordKD(nn.Module):
    """A student with word-level KD from a frozen AT teacher. The Trainer sees the student's `kind`
    and `cfg`; it optimizes and saves `student`."""

    def __init__(self, student: nn.Module, teacher: nn.Module, spec: KDSpec):
        super().__init__()
        if not takes_kd(student):
            raise KdgridError(f"word-level KD needs target positions aligned with the teacher's: student "
                              f"kind {student.kind!r} has none (its model has no loss_terms); use one of "
                              f"{', '.join(KD_KINDS)}")
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
        terms = self.student.loss_terms(batch)  # the student first: its random draws as in its loss
        scored = score(terms, label_smoothing)
        with torch.no_grad():
            target = teacher_logprobs(self.teacher, batch)
        return self.student_loss(terms, scored, target)

    # -- pieces -----------------------------------------------------------------------------
    def student_loss(self, terms: LossTerms, scored: Scored, teacher_lp: torch.Tensor):
        """(1 - alpha) * word CE + alpha * KD (+ the student's weighted extras), and the logs."""
        spec = self.spec
        kd = token_kl(scored.logits, at_positions(teacher_lp, scored.positions), None, spec.loss,
                      spec.temperature, spec.mix_weight)
        total = with_extras((1.0 - spec.alpha) * scored.word + spec.alpha * kd, terms)
        word_logs = {"nll": scored.nll, "word_ce": scored.word.detach(), "kd": kd.detach()}
        return total, logs(total, terms, word_logs, scored.ntokens)
