"""kdgrid.filter.lelp: the null-space projection, the subclass targets, and LELP on a problem built
so that the teacher's head cannot see the structure LELP is meant to find."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kdgrid.filter.head import LinearHead, fit_head
from kdgrid.filter.lelp import (
    class_probs_from_subclasses,
    fit_subclasses,
    lelp_targets,
    null_space_projector,
    row_space_projector,
)
from kdgrid.filter.student import kd_loss, soft_target_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_head(dim=16, classes=3, seed=0) -> LinearHead:
    gen = torch.Generator().manual_seed(seed)
    head = LinearHead(dim, classes)
    with torch.no_grad():
        head.linear.weight.copy_(torch.randn(classes, dim, generator=gen))
        head.linear.bias.copy_(torch.randn(classes, generator=gen))
    return head


def test_null_space_projection_changes_no_logit():
    head = random_head()
    w = head.weight.detach().double()
    p = null_space_projector(w)
    assert torch.allclose(w @ p, torch.zeros_like(w), atol=1e-12)
    assert torch.allclose(p, p.T, atol=1e-12) and torch.allclose(p @ p, p, atol=1e-12)
    assert torch.linalg.matrix_rank(p) == 16 - 3  # the head's 3 rows are the only lost directions
    e = torch.randn(50, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rows = e @ row_space_projector(w)  # the part of e the head reads
    b = head.linear.bias.detach().double()
    assert torch.allclose(e @ w.T + b, rows @ w.T + b, atol=1e-10)  # logits(e) == logits(row part)
    assert torch.allclose((e @ p) @ w.T, torch.zeros(50, 3, dtype=torch.float64), atol=1e-10)


def test_subclass_targets_of_a_class_sum_to_its_teacher_probability():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(120, 12)) * rng.uniform(0.5, 4, size=12) + 3.0
    labels = rng.integers(0, 3, size=120)
    emb[np.arange(120), labels] += 2.0
    head = fit_head(emb, labels, 3, steps=100, seed=1)
    teacher = head.probs(emb).double().numpy()
    for options in ({}, {"rotate": False}, {"null_space": False, "normalize": False},
                    {"group_by": "label", "labels": labels, "temperature": 0.2, "class_temperature": 3.0}):
        targets, info = lelp_targets(emb, head, S=4, seed=2, **options)
        assert targets.shape == (120, 12) and info["S"] == 4
        class_temperature = options.get("class_temperature", 1.0)
        want = head.probs(emb, class_temperature).double().numpy() if class_temperature != 1.0 else teacher
        np.testing.assert_allclose(class_probs_from_subclasses(targets, 3), want, atol=1e-6)
        np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-6)
    assert {"rotate", "null_space", "temperature", "class_temperature", "group_by", "seed"} <= set(info)


def test_rotation_keeps_the_span_of_the_directions():
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(90, 10)) * np.linspace(3, 0.5, 10)
    groups = np.repeat([0, 1, 2], 30)
    w = torch.as_tensor(rng.normal(size=(3, 10)))
    plain, _ = fit_subclasses(feats, groups, 3, S=3, weight=w, rotate=False)
    turned, _ = fit_subclasses(feats, groups, 3, S=3, weight=w, rotate=True, seed=7)
    for c in range(3):
        a, b = plain.directions[c], turned.directions[c]
        assert not torch.allclose(a, b, atol=1e-3)  # really rotated...
        assert torch.allclose(a.T @ a, b.T @ b, atol=1e-10)  # ...within the same subspace
        assert torch.allclose(b @ b.T, torch.eye(3, dtype=torch.float64), atol=1e-10)
        assert torch.allclose(b @ w.T, torch.zeros(3, 3, dtype=torch.float64), atol=1e-10)  # null space


# -- a problem with hidden sub-clusters ---------------------------------------------------------
CORNERS = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=float)  # XOR: class = row // 2


def hidden_subclusters(per_group: int, rng, classes=2, dim=16, student_dim=6, reach=1.0):
    """Classes made of two sub-clusters each (group g = 2c + k).

    Teacher embedding (dim 16): coordinate c is uniform in [1, reach] for class c (the only
    coordinates the head reads: how sure the teacher is; 1 by default), coordinate classes + c
    is +2 or -2 for sub-cluster k (a direction in the head's null space), plus N(0, 0.35) noise.
    Student input (6 numbers, two classes only): the XOR corner of the group in the first two,
    plus N(0, 0.45) noise on all six (so four are pure noise)."""
    groups = np.repeat(np.arange(2 * classes), per_group)
    c, k = groups // 2, groups % 2
    emb = np.zeros((len(groups), dim))
    emb[np.arange(len(groups)), c] = rng.uniform(1.0, reach, len(groups))
    emb[np.arange(len(groups)), classes + c] = np.where(k == 0, 2.0, -2.0)
    emb += rng.normal(0, 0.35, emb.shape)
    x = None
    if classes == 2:
        x = np.zeros((len(groups), student_dim))
        x[:, :2] = CORNERS[groups]
        x += rng.normal(0, 0.45, x.shape)
    return emb, x, c, k


def class_reading_head(classes=2, dim=16) -> LinearHead:
    """A teacher head that reads the class coordinates only (weight 3 on coordinate c)."""
    head = LinearHead(dim, classes)
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.zero_()
        head.linear.weight[torch.arange(classes), torch.arange(classes)] = 3.0
    return head


def subcluster_purity(targets, c, k, classes, S) -> float:
    """Per class, the share of its examples whose pseudo-subclass (argmax within the class)
    matches their true sub-cluster under the best matching of the two; averaged over classes."""
    pseudo = targets.reshape(len(targets), classes, S).argmax(-1)[np.arange(len(c)), c]
    out = []
    for cls in range(classes):
        a, b = pseudo[c == cls], k[c == cls]
        out.append(max(np.mean(a == b), np.mean(a != b)))
    return float(np.mean(out))


def test_lelp_pseudo_subclasses_recover_the_hidden_subclusters():
    """Three classes, two sub-clusters each, separated only along null-space directions: the
    head's probabilities carry no trace of them, LELP's pseudo-subclasses find them."""
    emb, _, c, k = hidden_subclusters(40, np.random.default_rng(11), classes=3)
    head = class_reading_head(3)
    assert (head(emb).argmax(-1).numpy() == c).mean() > 0.95
    targets, _ = lelp_targets(emb, head, S=2, temperature=0.3, rotate=False, seed=4)
    assert subcluster_purity(targets, c, k, 3, 2) == 1.0
    # A random rotation of the 2 directions separates the halves of a one-direction split by
    # ~|cos t - sin t|: most draws still recover them, an unlucky one mixes some (lelp.py's
    # docstring). Measured over 20 draws: 0.85 to 1.0, mean 0.95; checked here on 10.
    rotated = [subcluster_purity(lelp_targets(emb, head, S=2, temperature=0.3, rotate=True, seed=s)[0],
                                 c, k, 3, 2) for s in range(10)]
    assert np.mean(rotated) >= 0.9 and min(rotated) >= 0.8, rotated


def test_the_null_space_projection_keeps_the_split_off_the_teacher_confidence():
    """When the teacher's confidence varies more within a class than the sub-clusters do, the
    top principal direction of the raw embeddings is the confidence (which the head already
    passes on): projected onto the null space, the split is the sub-clusters again."""
    emb, _, c, k = hidden_subclusters(40, np.random.default_rng(11), classes=3, reach=11.0)
    head = class_reading_head(3)
    projected, _ = lelp_targets(emb, head, S=2, temperature=0.3, rotate=False, seed=4)
    raw, _ = lelp_targets(emb, head, S=2, temperature=0.3, rotate=False, null_space=False, seed=4)
    print(f"sub-cluster purity: null space {subcluster_purity(projected, c, k, 3, 2):.3f}, "
          f"raw {subcluster_purity(raw, c, k, 3, 2):.3f}")
    assert subcluster_purity(projected, c, k, 3, 2) >= 0.95
    assert subcluster_purity(raw, c, k, 3, 2) < 0.8


class SmallMLPs(nn.Module):
    """R independent inputs-8-outputs ReLU MLPs trained side by side (one draw of the problem
    each): replicate r starts from torch's default init under seed seeds[r], and as Adam is
    elementwise and the loss a sum over replicates, each trains as it would alone, R times faster."""

    def __init__(self, inputs: int, outputs: int, seeds):
        super().__init__()
        layers = []
        for seed in seeds:
            torch.manual_seed(seed)
            layers.append((nn.Linear(inputs, 8), nn.Linear(8, outputs)))
        self.w1 = nn.Parameter(torch.stack([a.weight.T for a, _ in layers]).detach())
        self.b1 = nn.Parameter(torch.stack([a.bias[None] for a, _ in layers]).detach())
        self.w2 = nn.Parameter(torch.stack([b.weight.T for _, b in layers]).detach())
        self.b2 = nn.Parameter(torch.stack([b.bias[None] for _, b in layers]).detach())

    def forward(self, x):  # (R, N, inputs) -> (R, N, outputs)
        return torch.relu(x @ self.w1 + self.b1) @ self.w2 + self.b2


def fit(model, x, loss_of, steps=300):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        out = model(x)
        loss = loss_of(out.reshape(-1, out.size(-1)))  # rows of all replicates: a mean over R means
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def held_out_accuracies(seeds, per_group: int, rotate: bool) -> np.ndarray:
    """(R, 2): vanilla KD and LELP held-out accuracy of the same small MLP, one draw per seed."""
    head = class_reading_head(2)
    xs, x_tests, c_tests, teacher_logits, targets = [], [], [], [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        emb, x, _, _ = hidden_subclusters(per_group, rng)
        _, x_test, c_test, _ = hidden_subclusters(300, rng)
        xs.append(x)
        x_tests.append(x_test)
        c_tests.append(c_test)
        teacher_logits.append(head(emb).detach())
        targets.append(lelp_targets(emb, head, S=2, temperature=0.3, rotate=rotate, seed=seed)[0])
    x = torch.as_tensor(np.stack(xs), dtype=torch.float32)
    x_test = torch.as_tensor(np.stack(x_tests), dtype=torch.float32)
    teacher_logits = torch.cat(teacher_logits)
    targets = torch.as_tensor(np.concatenate(targets), dtype=torch.float32)
    kd = fit(SmallMLPs(6, 2, seeds), x, lambda out: kd_loss(out, teacher_logits, temperature=2.0))
    lelp = fit(SmallMLPs(6, 4, seeds), x, lambda out: soft_target_loss(out, targets))
    with torch.no_grad():
        kd_pred = kd(x_test).argmax(-1).numpy()
        lelp_probs = torch.softmax(lelp(x_test), -1).reshape(len(seeds), -1, 2, 2).sum(-1)
        lelp_pred = lelp_probs.argmax(-1).numpy()
    gold = np.stack(c_tests)
    return np.stack([(kd_pred == gold).mean(1), (lelp_pred == gold).mean(1)], axis=1)


def test_lelp_student_beats_vanilla_kd_when_data_is_small():
    """The setup, and why it tests something.

    Each class is two Gaussian blobs on opposite corners of a square (XOR), so the class boundary
    in the student's input is non-linear; each blob alone is linearly separable from the rest.
    The teacher knows the blob (a null-space direction of its embedding) but its head, and so
    its probabilities, only the class. Vanilla KD (T = 2, teacher targets alone) hands the
    student p(c|x): it must discover the blobs itself from 40 examples among 4 noise inputs.
    LELP hands it the blob as a pseudo-subclass: each of its 4 outputs is a near-linear
    function, and the class, their sum, follows. Same student (a 6-8-k MLP, same init seed,
    300 Adam steps); only the targets and the output width differ.

    One draw is noisy (single seeds go either way by several points: with 24 training examples
    and 6 draws, an earlier version of this test saw the means flip when the data generator's
    random stream changed), so the claim is on the mean held-out accuracy over 30 draws (data
    and init seeds 0-29, 1200 test examples each), with and without LELP's random rotation.
    When written: vanilla KD 0.847; LELP unrotated 0.888 (+4.1 points, 28/30 draws won),
    rotated 0.872 (+2.5, 22/30), the rotation's occasionally mixed sub-clusters (see the
    recovery test) costing some of the gain. Standard error of the mean gain ~0.6-0.9 points."""
    for rotate in (False, True):
        acc = held_out_accuracies(list(range(30)), 10, rotate)
        kd, lelp = acc[:, 0], acc[:, 1]
        print(f"rotate={rotate}: vanilla KD {kd.mean():.3f}, LELP {lelp.mean():.3f} "
              f"(LELP better on {(lelp > kd).sum()}/30 draws)")
        assert lelp.mean() > kd.mean(), rotate
