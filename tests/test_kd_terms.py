"""One body for each loss (kdgrid.models.terms): a KD kind's `loss` composes its `loss_terms`, and the
word-level KD wrappers score the same terms with one pass of the output layer per step.

KD_KINDS (kdgrid.kd.specs, torch-free, read by the workflow's planning) is a fact about the model
classes: exactly the registered kinds with `loss_terms` (and their distilled_positions record)."""

from __future__ import annotations

import pytest
import torch
from conftest import model_config, toy_pairs

from kdgrid.batching import collate
from kdgrid.errors import KdgridError
from kdgrid.kd import KDSpec, OnlineKD, OnlineSpec, WordKD
from kdgrid.kd.specs import KD_KINDS
from kdgrid.kd.word import DISTILLED_POSITIONS, takes_kd
from kdgrid.models import MODELS, build

PAIRS = toy_pairs(8, seed=3)


def batch():
    return collate([s for s, _ in PAIRS], [t for _, t in PAIRS], 0, 2, 3)


def model(kind, seed, dropout=0.2):
    torch.manual_seed(seed)
    cfg = model_config(kind, d=16, layers=1, dropout=dropout)
    if kind == "moe":
        del cfg["mask"]
    return build(kind, cfg)


def test_kd_kinds_are_the_model_classes_with_loss_terms():
    with_terms = {kind for kind, cls in MODELS.items() if takes_kd(cls)}
    assert with_terms == set(KD_KINDS)
    for kind, cls in MODELS.items():  # the record's words come with the terms, and only with them
        assert isinstance(getattr(cls, "distilled_positions", None), str) == (kind in KD_KINDS), kind
    assert set(DISTILLED_POSITIONS) == set(KD_KINDS)


@pytest.mark.parametrize("kind", sorted(set(MODELS) - set(KD_KINDS)))
def test_kinds_without_loss_terms_are_refused_by_name(kind):
    with pytest.raises(KdgridError, match=f"'{kind}' has none.*no loss_terms"):
        WordKD(model(kind, 1), model("transformer", 2), KDSpec())


@pytest.mark.parametrize("kind", KD_KINDS)
def test_with_alpha_zero_the_wrapper_loss_is_the_models_exactly(kind):
    student = model(kind, 1).train()  # dropout on: the wrapper must draw what the model draws
    kd = WordKD(student, model("transformer", 2), KDSpec(alpha=0.0)).train()
    torch.manual_seed(7)
    own, own_logs = student.loss(batch(), label_smoothing=0.1)
    torch.manual_seed(7)
    wrapped, logs = kd.loss(batch(), label_smoothing=0.1)
    assert torch.equal(own, wrapped)
    for key in set(own_logs) - {"loss", "word_ins"}:  # the model's own logs, the same numbers
        assert torch.equal(torch.as_tensor(own_logs[key]), torch.as_tensor(logs[key])), key
    if "word_ins" in own_logs:
        assert torch.equal(own_logs["word_ins"], logs["word_ce"])


def count_output_layer(module, counts: dict, key: str):
    """Count the calls of the module's output layer (Embedding.logits), however reached."""
    logits = module.embed.logits

    def counted(h):
        counts[key] = counts.get(key, 0) + 1
        return logits(h)

    module.embed.logits = counted


@pytest.mark.parametrize("online", [False, True])
@pytest.mark.parametrize("kind", KD_KINDS)
def test_a_kd_step_runs_the_students_output_layer_once(kind, online):
    student, teacher = model(kind, 1), model("transformer", 2)
    spec = KDSpec(alpha=0.5, online=OnlineSpec(rank=2) if online else None)
    kd = (OnlineKD if online else WordKD)(student, teacher, spec).train()
    counts = {}
    count_output_layer(student, counts, "student")
    count_output_layer(teacher, counts, "teacher")
    loss, logs = kd.loss(batch(), label_smoothing=0.1)
    loss.backward()
    assert counts == {"student": 1, "teacher": 1}
    assert logs["kd"] > 0
    student.loss(batch(), label_smoothing=0.1)  # the plain loss: once too
    assert counts["student"] == 2
