"""Online KD (Rao et al.): the frozen teacher carries small trainable low-rank adapters, trained in
the same job as the student, so the distribution the student learns from adapts to the student.

Adapters (LoRA, Hu et al. 2021): every Linear projection of the teacher's attention (q, kv, out;
self- and cross-attention) and feed-forward blocks (fc1, fc2), encoder and decoder, gets
    out += up(down(x)) * scale,   down: d_in -> rank (small random), up: rank -> d_out (zeros),
with scale = 1 / rank (so the adapter's early learning speed does not grow with its rank). `up`
starts at zero, so at step 0 the adapted teacher is exactly the frozen one. The adapters are
attached with forward hooks, so the teacher module itself is unchanged, and they live in the
wrapper's registered ModuleDict `adapters`: they are in its state_dict, hence in the Trainer's
checkpoints, and a resumed run continues them.

Two losses, summed for one backward; each detaches the other side, so each gradient reaches its
own parameters only:
  student  (1 - alpha) * word CE + alpha * KD(adapted teacher, detached)   (as WordKD)
  adapter  CE of the adapted teacher on the student's training targets (label-smoothed as the
           student's): in a distilled column these are the teacher's own outputs
           + lambda * T^2 * KL(p_teacher || q_student), student detached, at the distilled positions.
The adapter's KL direction is a choice: KL(p_teacher || q_student) minimised over the teacher is
mode-seeking for the teacher, so it moves its mass onto the translations the student already
favours and drops modes the student does not cover: a student-friendly teacher, the point of
online KD for multi-modal targets; the CE term keeps the teacher on the data. (The other direction,
KL(q_student || p_teacher), would make the teacher cover every mode of the student instead.)

The adapters have their own optimizer (Adam, no weight decay: a decay would pull them back to the
frozen teacher at a rate set by the student's recipe), with their own peak lr on the student's
warmup/inverse-sqrt schedule: `extra_optimizers`, which the Trainer steps, clips and checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from kdgrid.kd.losses import token_kl
from kdgrid.kd.specs import KDSpec
from kdgrid.kd.word import WordKD, at_positions, teacher_logprobs
from kdgrid.models.layers import smoothed_nll
from kdgrid.models.terms import score

ADAPTED = ("q", "kv", "out", "fc1", "fc2")  # the Linear projections of Attention and FeedForward
# For the record (meta["wrapper"]["kd"], scores.json): what the adapter's CE term fits.
ADAPTER_TARGETS = ("the student's training targets (batch tgt_out, eos included): the real target in a "
                   "raw column, the teacher's own output in a distilled column; label-smoothed as the student's")


class LowRankAdapter(nn.Module):
    def __init__(self, d_in: int, d_out: int, rank: int):
        super().__init__()
        self.down = nn.Linear(d_in, rank, bias=False)  # torch's default (Kaiming-uniform) init
        self.up = nn.Linear(rank, d_out, bias=False)
        nn.init.zeros_(self.up.weight)
        self.scale = 1.0 / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x)) * self.scale


def adapted_linears(teacher: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The teacher's attention and feed-forward projections inside its encoder/decoder layers."""
    return [(name, m) for name, m in teacher.named_modules()
            if isinstance(m, nn.Linear) and name.startswith(("encoder.layers.", "decoder.layers."))
            and name.rsplit(".", 1)[-1] in ADAPTED]


class OnlineKD(WordKD):
    def __init__(self, student: nn.Module, teacher: nn.Module, spec: KDSpec):
        if spec.online is None:
            raise ValueError("OnlineKD needs spec.online")
        super().__init__(student, teacher, spec)
        device = next(student.parameters()).device
        self.adapters = nn.ModuleDict()
        self._hooks = []
        for name, linear in adapted_linears(self.teacher):
            adapter = LowRankAdapter(linear.in_features, linear.out_features, spec.online.rank).to(device)
            self.adapters[name.replace(".", "_")] = adapter
            self._hooks.append(linear.register_forward_hook(_add(adapter)))

    def loss(self, batch: dict, label_smoothing: float = 0.0):
        if not self.training:
            return self.student.loss(batch, label_smoothing=label_smoothing)
        student, adapter, logs = self.losses(batch, label_smoothing)
        return student + adapter, logs

    def losses(self, batch: dict, label_smoothing: float):
        """(student loss, adapter loss, logs); logs' "loss" is the student's, comparable to WordKD's."""
        terms = self.student.loss_terms(batch)
        scored = score(terms, label_smoothing)  # the student's one output-layer pass of the step
        adapted = teacher_logprobs(self.teacher, batch)  # with a gradient into the adapters only
        student, logs = self.student_loss(terms, scored, adapted)  # token_kl detaches the teacher side
        ce, _, _ = smoothed_nll(adapted, batch["tgt_out"], self.cfg.pad, label_smoothing)
        pull = token_kl(at_positions(adapted, scored.positions), scored.logits.detach(), None,
                        "rkl", self.spec.temperature)  # rkl with the roles swapped: KL(p_teacher || q_student)
        adapter = ce + self.spec.online.weight * pull
        ntokens = logs.pop("ntokens")
        logs.update({"adapter_ce": ce.detach(), "adapter_kl": pull.detach(), "ntokens": ntokens})
        return student, adapter, logs

    def extra_optimizers(self, cfg) -> dict:
        """{name: (optimizer, peak lr)}: the Trainer schedules the lr as the student's, scaled to
        this peak, and steps, clips and checkpoints it with the student's optimizer."""
        optim = torch.optim.Adam(self.adapters.parameters(), lr=cfg.warmup_init_lr, betas=cfg.adam_betas,
                                 eps=cfg.adam_eps)
        return {"adapter": (optim, self.spec.online.lr)}


def _add(adapter: LowRankAdapter):
    def hook(module, inputs, output):
        return output + adapter(inputs[0])

    return hook
