"""Glancing training (GLAT, kdgrid.kd.glance): the schedule, which positions are glanced, the best
CTC path it glances at (against brute force), and that it trains the kinds it takes."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import model_config, toy_pairs

from kdgrid.batching import collate
from kdgrid.errors import KdgridError
from kdgrid.kd.glance import Glancing, glanced_positions, ratio
from kdgrid.kd.specs import GLANCE_KINDS, GlanceSpec
from kdgrid.models import MODELS, build
from kdgrid.models.ctc import best_alignment, collapse

BLANK = 4


def test_the_ratio_falls_linearly_then_stays():
    spec = GlanceSpec(p_start=0.5, p_end=0.3, anneal_updates=100)
    assert [ratio(spec, u, 10**6) for u in (0, 50, 100, 400)] == pytest.approx([0.5, 0.4, 0.3, 0.3])
    assert ratio(GlanceSpec(), 250, 1000) == pytest.approx(0.45)  # anneal_updates 0: over max_updates
    with pytest.raises(KdgridError, match="anneal_updates"):
        ratio(GlanceSpec(), 10, 0)


def test_count_sampling_glances_floor_wrong_times_p_of_the_real_positions():
    uniform = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.05], [0.2, 0.4, 0.6, 0.8, 0.1]])
    real = torch.tensor([[True, True, True, True, False], [True, True, True, False, False]])
    wrong = torch.tensor([3, 1])
    mask = glanced_positions("count", uniform, wrong, real, 0.7)  # floor(2.1) = 2, floor(0.7) = 0
    assert mask.tolist() == [[False, True, False, True, False], [False] * 5]  # the 2 smallest real draws
    everything = glanced_positions("count", uniform, torch.tensor([4, 3]), real, 1.0)
    assert torch.equal(everything, real)


def test_bernoulli_sampling_glances_with_probability_wrong_over_positions_times_p():
    uniform = torch.tensor([[0.10, 0.60, 0.20, 0.05], [0.0, 0.0, 0.0, 0.0]])
    real = torch.tensor([[True, True, True, False], [True, True, False, False]])
    mask = glanced_positions("bernoulli", uniform, torch.tensor([3, 0]), real, 0.5)  # 3/3 * 0.5, 0
    assert mask.tolist() == [[True, False, True, False], [False] * 4]


def brute_best_path(log_probs: torch.Tensor, target: list[int]):
    positions, symbols = log_probs.shape
    paths = [p for p in itertools.product(range(symbols), repeat=positions) if collapse(list(p), BLANK) == target]
    if not paths:
        return None
    return list(max(paths, key=lambda p: log_probs[range(positions), list(p)].sum().item()))


def test_the_best_ctc_path_equals_brute_force():
    torch.manual_seed(3)
    log_probs = torch.log_softmax(torch.randn(4, 6, 7), -1)  # 4 sentences, up to 6 positions, 7 symbols
    lengths = torch.tensor([6, 5, 4, 6])
    out_pad = torch.arange(6)[None] >= lengths[:, None]
    targets = [[5, 6, 5], [6, 6], [5, 5, 5], [6]]  # the third needs 5 positions of 4: no path
    tgt = torch.tensor([t + [0] * (3 - len(t)) for t in targets])
    labels, found = best_alignment(log_probs, out_pad, tgt, pad=0, blank=BLANK)
    for i, target in enumerate(targets):
        n = int(lengths[i])
        expected = brute_best_path(log_probs[i, :n], target)
        assert bool(found[i]) == (expected is not None)
        if expected is not None:
            assert labels[i, :n].tolist() == expected and collapse(expected, BLANK) == target
        assert (labels[i, n:] == BLANK).all()


def test_the_glanceable_kinds_are_the_spec_s():
    assert sorted(k for k, cls in MODELS.items() if getattr(cls, "glance_sampling", None)) == sorted(GLANCE_KINDS)
    with pytest.raises(KdgridError, match="cannot glance"):
        Glancing(build("cmlm", model_config("cmlm")), GlanceSpec())


def batch_and_model(kind: str, pairs: int = 6, **extra):
    """A batch of toy pairs and an untrained d32 student of `kind` (seed 0)."""
    toy = toy_pairs(pairs)
    torch.manual_seed(0)
    return collate([s for s, _ in toy], [t for _, t in toy], 0, 2, 3), build(kind, model_config(kind, d=32, **extra))


@pytest.mark.parametrize("kind", ["nat", "ctc", "dat"])
def test_at_p_zero_glancing_is_the_plain_loss_and_at_p_one_it_glances(kind):
    b, model = batch_and_model(kind)
    never = Glancing(model, GlanceSpec(p_start=0.0, p_end=0.0))
    never.set_update(0, 10)
    loss, logs = never.loss(b, 0.0)
    assert loss.item() == pytest.approx(model.loss(b, 0.0)[0].item(), rel=1e-6) and logs["glanced"] == 0
    always = Glancing(model, GlanceSpec(p_start=1.0, p_end=1.0))
    always.set_update(0, 10)
    _, logs = always.loss(b, 0.0)
    assert logs["glance_p"] == 1.0 and 0 < logs["glanced"] <= 1 - logs["glance_accuracy"] + 1e-6
    if kind == "nat":  # every wrong position glanced: the loss is on the right ones only
        assert logs["glanced"] == pytest.approx(1 - logs["glance_accuracy"].item())
    always.eval()
    assert always.loss(b, 0.0)[0].item() == pytest.approx(model.loss(b, 0.0)[0].item())  # validation: plain


@pytest.mark.parametrize("kind", ["nat", "ctc", "dat"])
def test_a_glancing_student_learns(kind):
    b, model = batch_and_model(kind, pairs=8)
    glancing = Glancing(model, GlanceSpec(anneal_updates=60))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    accuracy = []
    for update in range(60):
        glancing.set_update(update, 60)
        loss, logs = glancing.loss(b, 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        accuracy.append(float(logs["glance_accuracy"]))
    assert sum(accuracy[-5:]) > sum(accuracy[:5]) + 1.0, accuracy  # the first pass gets more right


@pytest.mark.parametrize("kind", ["nat", "ctc", "dat"])
def test_both_passes_draw_the_same_dropout_masks(kind):
    """At p = 0 nothing is glanced, so the second decoder pass has the first one's inputs: with the
    random generator rewound between them, its dropout masks and so its states are the first's."""
    b, model = batch_and_model(kind, dropout=0.3, attention_dropout=0.2)
    states = []
    model.decoder.register_forward_hook(lambda module, args, out: states.append(out.detach()))
    glancing = Glancing(model, GlanceSpec(p_start=0.0, p_end=0.0))
    glancing.set_update(0, 10)
    glancing.loss(b, 0.0)
    assert len(states) == 2 and torch.equal(states[0], states[1])
    states.clear()
    model.loss(b, 0.0)
    model.loss(b, 0.0)
    assert not torch.equal(states[0], states[1])  # without the rewind two passes differ
