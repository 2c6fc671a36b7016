"""LELP (Loo et al. 2024): pseudo-subclasses from the teacher's embeddings, for few-class KD.

With few classes, the teacher's class probabilities say little about how it generalizes. LELP
looks at what the teacher's head throws away: the embeddings are projected onto the null space
of the head's weight (the directions that do not move any logit), each class's projected
embeddings get a PCA, and the top-S principal directions, optionally rotated at random within
their span, split the class into S pseudo-subclasses by a tempered softmax over the example's
coordinates along them. The student learns the S*C soft targets

    t[x, c*S + s] = p(c|x) * softmax_s(coord_{c,s}(x) / temperature)

so the subclass targets of class c sum to the teacher's p(c|x) exactly, and the student's class
probability is the sum of its subclass probabilities.

Choices, all recorded in the returned info:
- group_by "teacher" (default): a class's PCA runs over the examples the teacher assigns to it
  (argmax of the head), the paper's choice as our brief reports it: the targets are then a
  function of the teacher alone, with no labels needed, and a mislabelled example does not
  tilt its label's directions.
  "label" uses the true labels instead.
- normalize (default on): a class's coordinates are divided by the root mean variance of its S
  directions, so `temperature` means the same thing for every teacher and embedding scale.
- Coordinates are taken from the class mean: the subclasses split a class around its centre.
- Principal directions have a fixed sign (largest coordinate positive), so the same embeddings
  give the same targets on any LAPACK.
- The rotation is a Haar-random orthogonal S x S matrix per class (seeded), as in the paper. Our
  reading of its purpose: the top principal direction holds most of the variance, and unrotated
  its subclass takes most examples; rotating spreads the variance over the S directions. Its
  cost, seen in test_filter_lelp: when a class splits along a single direction and S = 2, the
  rotated pair separates the two halves by a margin that shrinks with |cos t - sin t| (t the
  rotation angle), so an unlucky draw mixes them (sub-cluster purity 0.85-1.0 over 20 draws,
  1.0 unrotated). Hence `rotate` is an option worth comparing per task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kdgrid.errors import KdgridError
from kdgrid.filter.head import LinearHead

GROUP_BY = ("teacher", "label")


def as_double(x) -> torch.Tensor:
    """float64 without a float32 detour (head.as_tensor's), which would cap W P at ~1e-7."""
    return x.detach().double() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float64)


def null_space_projector(weight) -> torch.Tensor:
    """P = I - W^T (W W^T)^+ W for a C x D head weight: W P = 0, and P is the orthogonal
    projection onto the directions that change no logit. float64: the projector is applied to
    every embedding, and float32 leaves W P ~ 1e-7 instead of ~1e-15."""
    w = as_double(weight)
    return torch.eye(w.size(1), dtype=torch.float64) - w.T @ torch.linalg.pinv(w @ w.T) @ w


def row_space_projector(weight) -> torch.Tensor:
    """I - P: the part of an embedding the head's logits depend on."""
    w = as_double(weight)
    return torch.eye(w.size(1), dtype=torch.float64) - null_space_projector(w)


def random_rotation(size: int, gen: torch.Generator) -> torch.Tensor:
    """A Haar-random orthogonal matrix: QR of a Gaussian, with R's diagonal signs moved into Q
    (without that fix the distribution is not uniform)."""
    q, r = torch.linalg.qr(torch.randn(size, size, generator=gen, dtype=torch.float64))
    signs = torch.sign(torch.diagonal(r))
    return q * torch.where(signs == 0, 1.0, signs)


@dataclass
class Subclasses:
    """Per class c: the centre means[c] (D,), the S directions directions[c] (S, D) and the
    coordinate scale scales[c]; `projector` is applied to features first (None: no projection)."""

    means: torch.Tensor
    directions: torch.Tensor
    scales: torch.Tensor
    projector: torch.Tensor | None

    def coordinates(self, feats) -> torch.Tensor:
        """(N, C, S) coordinates of every example along every class's directions."""
        x = as_double(feats)
        if self.projector is not None:
            x = x @ self.projector  # P is symmetric: row vectors times P project them
        centred = x[:, None, :] - self.means[None]  # (N, C, D)
        return torch.einsum("ncd,csd->ncs", centred, self.directions) / self.scales[None, :, None]


def _principal_directions(x: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Top-s principal directions (s, D) of the rows of x, their variances, and the share of the
    total variance they hold. Missing directions (fewer examples than s + 1) are zero rows."""
    centred = x - x.mean(0)
    _, sing, vh = torch.linalg.svd(centred, full_matrices=False)
    var = sing**2 / max(len(x) - 1, 1)
    k = min(s, vh.size(0))
    dirs = torch.zeros(s, x.size(1), dtype=torch.float64)
    dirs[:k] = vh[:k]
    signs = torch.sign(dirs[torch.arange(s), dirs.abs().argmax(1)])
    dirs *= torch.where(signs == 0, 1.0, signs)[:, None]  # a zero row (missing direction) stays zero
    top = torch.zeros(s, dtype=torch.float64)
    top[:k] = var[:k]
    total = float(var.sum())
    return dirs, top, float(top.sum()) / total if total > 0 else 0.0


def fit_subclasses(feats, groups, classes: int, S: int, weight=None, rotate: bool = True,
                   normalize: bool = True, seed: int = 1) -> tuple[Subclasses, dict]:
    """The subclass geometry of standardized features `feats` (N, D) split by `groups` (N,)
    class ids; `weight` given: in the null space of that head weight."""
    x = as_double(feats)
    groups = torch.as_tensor(np.asarray(groups), dtype=torch.long)
    if not 1 <= S <= x.size(1):
        raise KdgridError(f"LELP subclasses S must be between 1 and the embedding size {x.size(1)}, got {S}")
    projector = null_space_projector(weight) if weight is not None else None
    if projector is not None:
        x = x @ projector
    gen = torch.Generator().manual_seed(seed)
    means = torch.zeros(classes, x.size(1), dtype=torch.float64)
    directions = torch.zeros(classes, S, x.size(1), dtype=torch.float64)
    scales = torch.ones(classes, dtype=torch.float64)
    explained, sizes = [], []
    for c in range(classes):
        rotation = random_rotation(S, gen) if rotate else None  # drawn for every class: seeds line up
        members = x[groups == c]
        sizes.append(int(len(members)))
        if len(members) < 2:  # no spread to split: every subclass of c gets an equal share
            explained.append(0.0)
            continue
        dirs, var, share = _principal_directions(members, S)
        means[c] = members.mean(0)
        directions[c] = rotation @ dirs if rotation is not None else dirs
        if normalize and var.mean() > 0:
            scales[c] = var.mean().sqrt()
        explained.append(share)
    info = {"class_sizes": sizes, "explained_variance": explained}
    return Subclasses(means, directions, scales, projector), info


def lelp_targets(emb, head: LinearHead, S: int, temperature: float = 1.0, class_temperature: float = 1.0,
                 rotate: bool = True, null_space: bool = True, normalize: bool = True,
                 group_by: str = "teacher", labels=None, seed: int = 1) -> tuple[np.ndarray, dict]:
    """(N, C*S) soft targets for the student and a dict recording every option.

    emb: the teacher's pair embeddings (N, D), as the head reads them. p(c|x) is the head's
    softmax at `class_temperature`; the subclass split uses `temperature`. Column c*S + s is
    subclass s of class c."""
    if group_by not in GROUP_BY:
        raise KdgridError(f"LELP group_by must be one of {', '.join(GROUP_BY)}, got {group_by!r}")
    if temperature <= 0 or class_temperature <= 0:
        raise KdgridError("LELP temperatures must be positive")
    with torch.no_grad():
        feats = head.features(emb).double()
        logits = head.linear(feats.float()).double()
    probs = torch.softmax(logits / class_temperature, dim=-1)
    classes = probs.size(1)
    if group_by == "label":
        if labels is None:
            raise KdgridError("LELP group_by label needs the labels")
        groups = np.asarray(labels)
    else:
        groups = logits.argmax(-1).numpy()
    weight = head.weight.detach() if null_space else None
    sub, fitted = fit_subclasses(feats, groups, classes, S, weight, rotate, normalize, seed)
    split = torch.softmax(sub.coordinates(feats) / temperature, dim=-1)  # (N, C, S), rows sum to 1
    targets = (probs[:, :, None] * split).reshape(len(feats), classes * S)
    info = {"method": "lelp", "S": S, "temperature": temperature, "class_temperature": class_temperature,
            "rotate": rotate, "null_space": null_space, "normalize": normalize, "group_by": group_by,
            "seed": seed, "classes": classes, **fitted}
    return targets.numpy(), info


def class_probs_from_subclasses(probs, classes: int) -> np.ndarray:
    """(N, C*S) subclass probabilities -> (N, C): each class's subclasses summed."""
    p = np.asarray(probs)
    return p.reshape(len(p), classes, -1).sum(-1)
