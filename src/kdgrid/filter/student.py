"""The filter's student: a tiny pair classifier, trained on labels, vanilla KD or LELP targets.

Architecture (one encoder over both sides): token embeddings (sinusoidal positions, kdgrid's
`Embedding`) plus a segment embedding (0: source, 1: target), a small pre-norm Transformer
encoder (kdgrid's `Stack`) over `src <sep> tgt` (sep is eos), mean-pooled over the real tokens,
one linear layer to C*S outputs (S = 1 for labels and kd). One joint encoder, not two: every
noise kind is a relation between the sides (does the target follow from this source, all of
it, in this order), and self-attention across the separator sees the relation at every layer,
where two pooled encoders would meet only in the last layer.

Training, by method:
- labels: cross-entropy to the gold class.
- kd: vanilla KD (Hinton et al. 2015): T^2 * KL(softmax(teacher/T) || softmax(student/T)),
  mixed as kd_alpha * KD + (1 - kd_alpha) * CE(labels). Default kd_alpha 1.0, teacher targets
  alone: LELP trains on soft targets alone too (PAPER.md), so the two differ only in their
  targets; a Hinton mix is one option away.
- lelp: cross-entropy to the C*S soft targets alone, at temperature 1 (the targets are already
  tempered); a class's probability is the sum of its subclasses' probabilities.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdgrid.batching import Ids, pad_stack, token_batches
from kdgrid.checkpoint import read_payload
from kdgrid.errors import KdgridError, atomic_output
from kdgrid.models.layers import Embedding, Stack, init_linear, key_mask

FORMAT = "kdgrid-filter-student/1"
METHODS = ("labels", "kd", "lelp")


@dataclass(kw_only=True)
class StudentConfig:
    vocab_size: int
    pad: int
    sep: int  # the separator between source and target (kdgrid's eos)
    classes: list = field(default_factory=lambda: ["clean", "noisy"])
    subclasses: int = 1  # S: LELP's pseudo-subclasses per class; 1 for labels and kd
    d_model: int = 64
    ffn: int = 128
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    max_side: int = 128  # each side is cut to this many tokens: the filter needs no more

    def __post_init__(self):
        self.classes = list(self.classes)
        if len(self.classes) < 2:
            raise KdgridError(f"the filter student needs at least 2 classes, got {self.classes}")
        for name in ("vocab_size", "subclasses", "d_model", "ffn", "layers", "heads", "max_side"):
            if getattr(self, name) < 1:
                raise KdgridError(f"filter student {name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise KdgridError(f"filter student d_model {self.d_model} is not divisible by heads {self.heads}")

    @property
    def outputs(self) -> int:
        return len(self.classes) * self.subclasses


class PairClassifier(nn.Module):
    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = Embedding(cfg.vocab_size, cfg.d_model, cfg.pad, cfg.dropout)
        self.segment = nn.Embedding(2, cfg.d_model)
        self.encoder = Stack(cfg.layers, cfg.d_model, cfg.ffn, cfg.heads, cfg.dropout, 0.0,
                             pre_norm=True, cross=False)
        self.out = nn.Linear(cfg.d_model, cfg.outputs)
        init_linear(self.encoder)
        init_linear(self.out)
        nn.init.normal_(self.segment.weight, std=cfg.d_model**-0.5)

    def forward(self, tokens: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        """(B, C*S) logits of (B, L) tokens and their segment ids."""
        pad = tokens.eq(self.cfg.pad)
        x = self.embed.add_positions(self.embed.tokens(tokens) + self.segment(segments))
        h = self.encoder(x, key_mask(pad))
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        return self.out((h * keep).sum(1) / keep.sum(1).clamp(min=1))

    def class_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, C): softmax over all C*S outputs, each class's subclasses summed."""
        p = torch.softmax(logits.float(), dim=-1)
        return p.view(p.size(0), len(self.cfg.classes), self.cfg.subclasses).sum(-1)


def build_student(cfg: StudentConfig, seed: int) -> PairClassifier:
    """The same weights for the same seed, without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PairClassifier(cfg)


def _seqs(ids) -> list:
    return [ids[i] for i in range(len(ids))] if isinstance(ids, Ids) else list(ids)


def pair_batch(src_seqs, tgt_seqs, cfg: StudentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens `src <sep> tgt` (each side cut to max_side) and segment ids, right-padded."""
    joined, segs = [], []
    for s, t in zip(src_seqs, tgt_seqs):
        s, t = list(s[: cfg.max_side]), list(t[: cfg.max_side])
        joined.append(s + [cfg.sep] + t)
        segs.append([0] * (len(s) + 1) + [1] * len(t))
    return pad_stack(joined, cfg.pad), pad_stack(segs, 0)


def _batches(src, tgt, cfg: StudentConfig, max_tokens: int, seed: int | None):
    lens = [min(len(s), cfg.max_side) + min(len(t), cfg.max_side) for s, t in zip(src, tgt)]
    return token_batches(lens, np.zeros(len(lens), dtype=np.int64), max_tokens, seed)


# -- losses ------------------------------------------------------------------------------------
def kd_loss(logits, teacher_logits, temperature: float, labels=None, alpha: float = 1.0) -> torch.Tensor:
    """Hinton's vanilla KD: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels).
    The T^2 keeps the soft term's gradients on the scale of the hard term's as T changes."""
    t = temperature
    soft = F.kl_div(F.log_softmax(logits.float() / t, -1), F.log_softmax(teacher_logits.float() / t, -1),
                    log_target=True, reduction="batchmean") * t * t
    if alpha >= 1.0:
        return soft
    return alpha * soft + (1 - alpha) * F.cross_entropy(logits.float(), labels)


def soft_target_loss(logits, targets) -> torch.Tensor:
    """Cross-entropy to soft targets (rows summing to 1): LELP's C*S subclass targets."""
    return -(targets.float() * F.log_softmax(logits.float(), -1)).sum(-1).mean()


@dataclass
class TrainOptions:
    method: str = "labels"
    steps: int = 300  # updates
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_tokens: int = 2048
    kd_temperature: float = 2.0
    kd_alpha: float = 1.0  # kd only: weight of the KD term; 1 - kd_alpha goes to the labels
    seed: int = 1

    def __post_init__(self):
        if self.method not in METHODS:
            raise KdgridError(f"filter student method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.steps < 1 or self.lr <= 0 or self.kd_temperature <= 0 or not 0 <= self.kd_alpha <= 1:
            raise KdgridError("filter student: steps >= 1, lr > 0, kd_temperature > 0 and "
                              "0 <= kd_alpha <= 1 are needed")


def train_student(model: PairClassifier, src_ids, tgt_ids, opts: TrainOptions, labels=None,
                  teacher_logits=None, soft_targets=None) -> dict:
    """Train in place for opts.steps updates over seeded token batches; returns what to record.

    labels (N,) class ids: for labels, and for kd when kd_alpha < 1. teacher_logits (N, C): kd.
    soft_targets (N, C*S): lelp."""
    src, tgt = _seqs(src_ids), _seqs(tgt_ids)
    need = {"labels": labels, "kd": teacher_logits, "lelp": soft_targets}[opts.method]
    if need is None or (opts.method == "kd" and opts.kd_alpha < 1 and labels is None):
        raise KdgridError(f"filter student method {opts.method}: its targets were not given")
    width = len(model.cfg.classes) * (model.cfg.subclasses if opts.method == "lelp" else 1)
    if model.cfg.outputs != width or (opts.method != "lelp" and model.cfg.subclasses != 1):
        raise KdgridError(f"filter student method {opts.method} needs {width} outputs, the model has "
                          f"{model.cfg.outputs} (subclasses {model.cfg.subclasses})")
    y = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long)
    teacher = None if teacher_logits is None else torch.as_tensor(np.asarray(teacher_logits), dtype=torch.float32)
    soft = None if soft_targets is None else torch.as_tensor(np.asarray(soft_targets), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    model.train()
    step, epoch, last = 0, 0, float("nan")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)  # dropout masks: seeded, apart from the caller's stream
        while step < opts.steps:
            for rows in _batches(src, tgt, model.cfg, opts.max_tokens, opts.seed + epoch):
                tokens, segments = pair_batch([src[i] for i in rows], [tgt[i] for i in rows], model.cfg)
                logits = model(tokens, segments)
                idx = torch.as_tensor(rows)
                if opts.method == "labels":
                    loss = F.cross_entropy(logits.float(), y[idx])
                elif opts.method == "kd":
                    loss = kd_loss(logits, teacher[idx], opts.kd_temperature,
                                   None if y is None else y[idx], opts.kd_alpha)
                else:
                    loss = soft_target_loss(logits, soft[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                step, last = step + 1, float(loss.detach())
                if step >= opts.steps:
                    break
            epoch += 1
    model.eval()
    return {"training": dataclasses.asdict(opts), "final_loss": last, "epochs": epoch}


@torch.no_grad()
def predict_probs(model: PairClassifier, src_ids, tgt_ids, max_tokens: int = 4096) -> np.ndarray:
    """(N, C) class probabilities (subclasses summed), in input order."""
    src, tgt = _seqs(src_ids), _seqs(tgt_ids)
    was = model.training
    model.eval()
    out = np.zeros((len(src), len(model.cfg.classes)), dtype=np.float32)
    for rows in _batches(src, tgt, model.cfg, max_tokens, None):
        tokens, segments = pair_batch([src[i] for i in rows], [tgt[i] for i in rows], model.cfg)
        out[rows] = model.class_probs(model(tokens, segments)).numpy()
    model.train(was)
    return out


# -- files -------------------------------------------------------------------------------------
def save_student(path, model: PairClassifier, meta: dict) -> None:
    """A self-describing file: config (classes and S included), weights, and `meta`, which must
    say the method and should carry vocab_sha256, the training options, the LELP info, the
    teacher's accuracy and the student's scores."""
    if meta.get("method") not in METHODS:
        raise KdgridError(f"save_student: meta must name the method ({', '.join(METHODS)})")
    payload = {"format": FORMAT, "config": dataclasses.asdict(model.cfg),
               "state_dict": model.state_dict(), "meta": meta}
    with atomic_output(path, "path") as tmp:
        torch.save(payload, tmp)


def load_student(path, vocab_sha256: str | None = None) -> tuple[PairClassifier, dict]:
    """(model, meta); with vocab_sha256, the model must have been trained with that vocabulary."""
    payload = read_payload(path, FORMAT, "filter model file")
    try:
        model = PairClassifier(StudentConfig(**payload["config"]))
        model.load_state_dict(payload["state_dict"])
        meta = payload["meta"]
    except (KeyError, TypeError, RuntimeError) as e:
        first = (str(e).splitlines() or [""])[0]
        raise KdgridError(f"{path}: damaged filter model ({type(e).__name__}: {first}); retrain it") from None
    if vocab_sha256 is not None and meta.get("vocab_sha256") != vocab_sha256:
        raise KdgridError(f"{path} was trained with a different vocabulary; rerun its training rule")
    return model.eval(), meta
