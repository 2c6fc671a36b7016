"""Word-level KD divergences (kdgrid.kd.losses) on tiny hand-checked distributions."""

from __future__ import annotations

import math

import pytest
import torch

from kdgrid.kd.losses import token_kl

ONE = torch.tensor([True])


def logits(*probs) -> torch.Tensor:
    return torch.tensor([probs]).log()


@pytest.mark.parametrize("loss", ["fkl", "rkl", "mix"])
def test_equal_distributions_diverge_by_zero(loss):
    x = torch.randn(2, 3, 5)
    assert token_kl(x, x.clone(), torch.ones(2, 3, dtype=torch.bool), loss).item() == pytest.approx(0.0, abs=1e-6)


def test_three_way_example_hand_computed():
    p, q = (0.5, 0.25, 0.25), (0.2, 0.3, 0.5)  # teacher, student
    fkl = 0.5 * math.log(0.5 / 0.2) + 0.25 * math.log(0.25 / 0.3) + 0.25 * math.log(0.25 / 0.5)
    rkl = 0.2 * math.log(0.2 / 0.5) + 0.3 * math.log(0.3 / 0.25) + 0.5 * math.log(0.5 / 0.25)
    s, t = logits(*q), logits(*p)
    assert token_kl(s, t, ONE, "fkl").item() == pytest.approx(fkl, rel=1e-5)
    assert token_kl(s, t, ONE, "rkl").item() == pytest.approx(rkl, rel=1e-5)
    assert token_kl(s, t, ONE, "mix", mix_weight=0.3).item() == pytest.approx(0.3 * fkl + 0.7 * rkl, rel=1e-5)
    assert fkl != pytest.approx(rkl, rel=1e-2)  # the example tells the directions apart


def test_forward_kl_covers_modes_reverse_kl_seeks_one():
    teacher = torch.tensor([[4.0, -4.0, 4.0, -4.0]])  # two modes: words 0 and 2
    at_one_mode = torch.tensor([[4.0, -4.0, -4.0, -4.0]])
    spread = torch.tensor([[2.0, 2.0, 2.0, -4.0]])  # covers both modes and the gap between them
    grads = {}
    for loss in ("fkl", "rkl"):
        s = at_one_mode.clone().requires_grad_(True)
        token_kl(s, teacher, ONE, loss).backward()
        grads[loss] = s.grad[0]
    # fkl: a strong negative gradient on the second mode's logit, i.e. descent moves mass onto it
    assert grads["fkl"][2] < -0.4
    # rkl: a student sitting on one mode is (nearly) content: the pull towards mode 2 is ~200x weaker
    assert abs(grads["rkl"][2]) < 0.01 * abs(grads["fkl"][2])
    # and the preferences: fkl prefers covering everything, rkl prefers sitting on one mode
    assert token_kl(spread, teacher, ONE, "fkl") < token_kl(at_one_mode, teacher, ONE, "fkl")
    assert token_kl(at_one_mode, teacher, ONE, "rkl") < token_kl(spread, teacher, ONE, "rkl")


def test_temperature_softens_both_sides_and_scales_by_its_square():
    s, t = torch.tensor([[1.0, 2.0, 0.5]]), torch.tensor([[0.0, 3.0, 1.0]])
    for loss in ("fkl", "rkl"):
        # softening by T = dividing the logits by T, then the T^2 factor
        assert token_kl(s, t, ONE, loss, temperature=2.0).item() == pytest.approx(
            4.0 * token_kl(s / 2, t / 2, ONE, loss).item(), rel=1e-6)
    p, q = torch.softmax(t / 3, -1), torch.softmax(s / 3, -1)
    by_hand = 9.0 * float((p * (p.log() - q.log())).sum())
    assert token_kl(s, t, ONE, "fkl", temperature=3.0).item() == pytest.approx(by_hand, rel=1e-5)


def test_masked_positions_contribute_nothing_and_get_no_gradient():
    s = torch.randn(1, 3, 4, requires_grad=True)
    t = torch.randn(1, 3, 4)
    mask = torch.tensor([[True, False, True]])
    got = token_kl(s, t, mask, "mix")
    other = s.detach().clone()
    other[0, 1] = 100.0 * torch.randn(4)  # change the masked position only
    assert token_kl(other, t, mask, "mix").item() == pytest.approx(got.item(), rel=1e-6)
    only = token_kl(s[:, [0, 2]], t[:, [0, 2]], torch.ones(1, 2, dtype=torch.bool), "mix")
    assert got.item() == pytest.approx(only.item(), rel=1e-6)  # the mean runs over kept tokens
    got.backward()
    assert torch.equal(s.grad[0, 1], torch.zeros(4))
    assert token_kl(s, t, torch.zeros(1, 3, dtype=torch.bool)).item() == 0.0


def test_teacher_side_is_detached():
    s, t = torch.randn(1, 2, 3, requires_grad=True), torch.randn(1, 2, 3, requires_grad=True)
    token_kl(s, t, torch.ones(1, 2, dtype=torch.bool), "mix").backward()
    assert s.grad is not None and t.grad is None
