"""Word-level KD against numbers computed by hand: at alpha 1 the wrappers' loss is the KD term, which
must equal T^2 * KL, token-averaged, between the teacher's teacher-forced distributions and the
student's, sliced by hand at the positions each student kind scores:

  transformer  every target position, eos included: student row j <- teacher row j
  nat          every target token, no eos: student row j <- teacher row j (which predicts y_j)
  cmlm         only the positions its own (seeded) random_mask draw masked

Every model here runs one sentence at a time, without padding, so the hand side shares nothing with
the wrapper's batched slicing and masking. A shifted teacher row, a mask that lets pad, eos or
unmasked CMLM positions in, or a per-sentence mean instead of a per-token one, each changes the number.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import model_config, toy_pairs

from kdgrid.batching import collate
from kdgrid.checkpoint import save_model
from kdgrid.kd import KDSpec, OnlineKD, OnlineSpec, WordKD, cell_record, prepare
from kdgrid.kd.word import DISTILLED_POSITIONS, TEACHER_DISTRIBUTION
from kdgrid.models import build
from kdgrid.models.noise import random_mask

PAD, BOS, EOS, MASK = 0, 2, 3, 4  # conftest.model_config's ids
PAIRS = toy_pairs(6, seed=11)  # targets of 3 to 8 tokens: the batch is padded
T = 2.0  # a temperature other than 1, so a missing 1/T or T^2 shows
MASK_SEED = 5


def model(kind, seed):
    torch.manual_seed(seed)
    cfg = model_config(kind, d=16, layers=1, dropout=0.0)
    if kind != "transformer":
        cfg["length_loss_weight"] = 0.0  # at alpha 1 the total is then the KD term alone
    return build(kind, cfg)


def batch():
    return collate([s for s, _ in PAIRS], [t for _, t in PAIRS], PAD, BOS, EOS)


def one(ids) -> torch.Tensor:
    return torch.tensor([ids])


@torch.no_grad()
def teacher_rows(teacher, src, tgt) -> torch.Tensor:
    """The teacher's full logits on one sentence, teacher-forced on bos + tgt: (len(tgt) + 1, V),
    row j predicting tgt[j] (the last row: eos)."""
    teacher.eval()
    s = one(src + [EOS])
    return teacher.decode(one([BOS] + tgt), *teacher.encode(s))[0].double()


@torch.no_grad()
def student_rows(student, kind, src, tgt, noisy=None) -> torch.Tensor:
    """The student's full logits on one sentence: (len(tgt) + 1, V) for an AT, (len(tgt), V) else."""
    s = one(src + [EOS])
    memory, src_pad = student.encode(s)
    if kind == "transformer":
        return student.decode(one([BOS] + tgt), memory, src_pad)[0].double()
    tgt_pad = torch.zeros(1, len(tgt), dtype=torch.bool)
    if kind == "nat":
        return student.decode(student.first_input(s, src_pad, tgt_pad), tgt_pad, memory, src_pad)[0].double()
    return student.decode(one(noisy), tgt_pad, memory, src_pad)[0].double()


def divergence(student_row, teacher_row, loss, mix_weight):
    log_q = F.log_softmax(student_row / T, -1)
    log_p = F.log_softmax(teacher_row / T, -1)
    fkl = float((log_p.exp() * (log_p - log_q)).sum())  # KL(p_teacher || q_student)
    rkl = float((log_q.exp() * (log_q - log_p)).sum())  # KL(q_student || p_teacher)
    return {"fkl": fkl, "rkl": rkl, "mix": mix_weight * fkl + (1 - mix_weight) * rkl}[loss]


def scored(kind, tgt, masked_row) -> list[int]:
    """The positions (student row = teacher row) the kind's KD term covers, by hand."""
    if kind == "transformer":
        return list(range(len(tgt) + 1))  # y_0 .. y_{n-1} and eos
    if kind == "nat":
        return list(range(len(tgt)))
    return [j for j in range(len(tgt)) if masked_row[j]]


def hand_kd(student, teacher, kind, loss, mix_weight=0.3):
    """(T^2 * the token mean of the divergence over every scored position, number of positions)."""
    masked = noisy = None
    if kind == "cmlm":  # the wrapper's draw: the same seed, the same call on the same batch
        torch.manual_seed(MASK_SEED)
        noisy, masked = random_mask(batch()["tgt"], PAD, MASK)
    per_token = []
    for i, (src, tgt) in enumerate(PAIRS):
        t_rows = teacher_rows(teacher, src, tgt)
        s_rows = student_rows(student, kind, src, tgt, None if noisy is None else noisy[i, : len(tgt)].tolist())
        for j in scored(kind, tgt, None if masked is None else masked[i].tolist()):
            per_token.append(divergence(s_rows[j], t_rows[j], loss, mix_weight))
    return T**2 * sum(per_token) / len(per_token), len(per_token)


@pytest.mark.parametrize("loss", ["fkl", "rkl", "mix"])
@pytest.mark.parametrize("kind", ["transformer", "nat", "cmlm"])
def test_at_alpha_one_the_loss_is_the_hand_sliced_kd_term(kind, loss):
    student, teacher = model(kind, 1), model("transformer", 2)
    kd = WordKD(student, teacher, KDSpec(loss=loss, alpha=1.0, temperature=T, mix_weight=0.3)).train()
    torch.manual_seed(MASK_SEED)
    got, logs = kd.loss(batch(), label_smoothing=0.1)
    want, n = hand_kd(student, teacher, kind, loss)
    assert logs["ntokens"] == n  # the word term covered the very positions KD did
    assert got.item() == pytest.approx(want, rel=1e-4)
    assert logs["kd"].item() == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("kind", ["transformer", "nat", "cmlm"])
def test_online_kd_at_step_zero_distils_and_pulls_at_the_same_hand_sliced_positions(kind):
    """The adapter's pull is T^2 * KL(p_teacher || q_student) at the student's scored positions; at
    step 0 the adapted teacher is the frozen one, so the student's KD term is the plain one too."""
    student = model(kind, 1)
    spec = KDSpec(loss="rkl", alpha=1.0, temperature=T, online=OnlineSpec(rank=2, weight=0.5))
    kd = OnlineKD(student, model("transformer", 2), spec).train()
    torch.manual_seed(MASK_SEED)
    student_loss, adapter_loss, logs = kd.losses(batch(), label_smoothing=0.1)
    frozen = model("transformer", 2)  # the same weights, without adapters
    assert student_loss.item() == pytest.approx(hand_kd(student, frozen, kind, "rkl")[0], rel=1e-4)
    assert logs["adapter_kl"].item() == pytest.approx(hand_kd(student, frozen, kind, "fkl")[0], rel=1e-4)
    assert adapter_loss.item() == pytest.approx(logs["adapter_ce"].item() + 0.5 * logs["adapter_kl"].item(),
                                                rel=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_online_kds_adapter_ce_fits_the_students_training_targets_eos_included(smoothing):
    """By hand: the teacher's label-smoothed CE on y + eos of each sentence the student trains on (in
    a distilled column, the teacher's own output), averaged over all those tokens."""
    kd = OnlineKD(model("nat", 1), model("transformer", 2), KDSpec(online=OnlineSpec())).train()
    _, _, logs = kd.losses(batch(), label_smoothing=smoothing)
    frozen, terms = model("transformer", 2), []
    for src, tgt in PAIRS:
        log_p = F.log_softmax(teacher_rows(frozen, src, tgt), -1)
        for j, gold in enumerate(tgt + [EOS]):
            terms.append((1 - smoothing) * -float(log_p[j, gold]) - smoothing * float(log_p[j].mean()))
    assert logs["adapter_ce"].item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


@pytest.mark.parametrize("kind", ["transformer", "nat", "cmlm"])
def test_the_record_says_which_teacher_distribution_and_positions_kd_used(kind, tmp_path):
    save_model(tmp_path / "teacher.pt", model("transformer", 2), {})
    wrap = {"init": {"layers": "even"}, "kd": {"teacher": "t", "online": {}}}
    _, record = prepare(model(kind, 1), wrap, tmp_path / "teacher.pt", tmp_path / "teacher.pt", "cpu")
    kd = record["kd"]
    assert kd["teacher_distribution"] == TEACHER_DISTRIBUTION == "AT teacher, teacher-forced on the gold target prefix"
    assert kd["distilled_positions"] == DISTILLED_POSITIONS[kind]
    assert "distilled column" in kd["gold_target"] and "training targets" in kd["adapter_targets"]
    _, plain = prepare(model(kind, 1), {"kd": {}}, None, tmp_path / "teacher.pt", "cpu")
    assert "adapter_targets" not in plain["kd"] and plain["kd"]["teacher_distribution"] == TEACHER_DISTRIBUTION
    # scores.json's copy: everything but init's long parameter lists
    cell = cell_record(record)
    assert cell["kd"] == kd and cell["init"]["layers"] == "even" and cell["init"]["map"]
    assert not {"copied", "kept"} & set(cell["init"]) and {"copied", "kept"} <= set(record["init"])
