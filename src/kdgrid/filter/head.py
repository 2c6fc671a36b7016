"""The teacher's classifier: a linear head on frozen pair embeddings, its file (load_head), and
the scores of any classifier.

The head standardizes its input with the training embeddings' mean and spread (kept as buffers,
so it is part of the head): the teacher's pooled states have coordinates of very different
scales, and Adam on raw ones would need a learning rate per teacher. Everything LELP does with
the head (its weight's null space, PCA) happens in these standardized features.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdgrid.errors import KdgridError

HEAD_FORMAT = "kdgrid-filter-head/1"  # the head file's format tag


def as_tensor(x) -> torch.Tensor:
    return x.float() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float32)


class LinearHead(nn.Module):
    """logits = W ((e - mean) / scale) + b."""

    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(dim, classes)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    def features(self, emb) -> torch.Tensor:
        return (as_tensor(emb) - self.mean) / self.scale

    def forward(self, emb) -> torch.Tensor:
        return self.linear(self.features(emb))

    @torch.no_grad()
    def probs(self, emb, temperature: float = 1.0) -> torch.Tensor:
        return torch.softmax(self(emb) / temperature, dim=-1)

    def state(self) -> dict:
        """Plain tensors, to store beside the options that made the head."""
        return {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}

    @classmethod
    def from_state(cls, state: dict) -> LinearHead:
        classes, dim = state["linear.weight"].shape
        head = cls(dim, classes)
        head.load_state_dict(state)
        return head.eval()


def fit_head(emb, labels, classes: int, steps: int = 300, lr: float = 0.05, weight_decay: float = 1e-4,
             batch_size: int = 0, standardize: bool = True, seed: int = 1) -> LinearHead:
    """Cross-entropy with Adam for `steps` updates; batch_size 0 is full batch (the usual case:
    a few thousand embeddings), otherwise seeded minibatches."""
    x = as_tensor(emb)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    head = LinearHead(x.size(1), classes)
    with torch.no_grad():  # seeded init: the head is the same for the same seed, whatever ran before
        bound = x.size(1) ** -0.5
        head.linear.weight.copy_(torch.rand(head.linear.weight.shape, generator=gen) * 2 * bound - bound)
        head.linear.bias.zero_()
        if standardize:
            head.mean.copy_(x.mean(0))
            head.scale.copy_(x.std(0).clamp(min=1e-6))  # a constant coordinate stays 0, not NaN
    feats = head.features(x)
    opt = torch.optim.Adam(head.linear.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        rows = torch.randperm(len(y), generator=gen)[:batch_size] if batch_size else slice(None)
        loss = F.cross_entropy(head.linear(feats[rows]), y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


def load_head(path, label_set: str, vocab_sha256: str):
    """(LinearHead, payload) of a head file (filter_teacher writes it: HEAD_FORMAT, the label set,
    classes, state, options, vocab_sha256, teacher, scores), checked against the label set and
    vocabulary the student is trained with."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise KdgridError(f"--head {path}: file not found") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise KdgridError(f"--head {path}: not readable ({type(e).__name__}); rerun filter_teacher") from None
    if not isinstance(payload, dict) or payload.get("format") != HEAD_FORMAT:
        raise KdgridError(f"--head {path}: not a filter head ({HEAD_FORMAT} expected)")
    if payload["labels"] != label_set:
        raise KdgridError(f"--head {path} is the {payload['labels']} head but --labels is {label_set}")
    if payload["vocab_sha256"] != vocab_sha256:
        raise KdgridError(f"--head {path} was made with another vocabulary; rerun filter_teacher")
    return LinearHead.from_state(payload["state"]), payload


# -- scores ------------------------------------------------------------------------------------
def accuracy(pred, gold) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean()) if len(gold) else 0.0


def macro_f1(pred, gold, classes: int) -> float:
    """Mean over the classes of F1 (a class absent from both gold and predictions counts as
    1.0: nothing to find and nothing wrongly found)."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    scores = []
    for c in range(classes):
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        scores.append(1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def scores(probs, gold, classes: int) -> dict:
    """Accuracy and macro F1 of class probabilities (N, C) against gold class ids."""
    pred = np.asarray(probs).argmax(-1)
    return {"accuracy": accuracy(pred, gold), "macro_f1": macro_f1(pred, gold, classes), "n": int(len(gold))}
