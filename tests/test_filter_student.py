"""kdgrid.filter: the teacher's pair embeddings, the tiny student (labels, vanilla KD, LELP),
its model file, and keep_mask; on a tiny random teacher and a handful of pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdgrid.batching import Ids
from kdgrid.errors import KdgridError
from kdgrid.filter.apply import keep_mask, keep_pairs
from kdgrid.filter.embed import pair_embeddings
from kdgrid.filter.head import fit_head, scores
from kdgrid.filter.lelp import lelp_targets
from kdgrid.filter.student import (
    StudentConfig,
    TrainOptions,
    build_student,
    load_student,
    predict_probs,
    save_student,
    train_student,
)
from kdgrid.models import build

VOCAB, PAD, BOS, EOS = 30, 0, 2, 3
CLASSES = ["clean", "copy", "shuffled"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_teacher():
    torch.manual_seed(0)
    return build("transformer", {"vocab_size": VOCAB, "pad": PAD, "bos": BOS, "eos": EOS, "d_model": 16,
                                 "ffn": 32, "encoder_layers": 1, "decoder_layers": 1, "heads": 2,
                                 "dropout": 0.1}).eval()


def random_pairs(n, seed, low=2, high=9):
    rng = np.random.default_rng(seed)
    src = [rng.integers(5, VOCAB, size=rng.integers(low, high)).tolist() for _ in range(n)]
    tgt = [rng.integers(5, VOCAB, size=rng.integers(low, high)).tolist() for _ in range(n)]
    return src, tgt


def test_pair_embeddings_do_not_depend_on_the_batch():
    teacher = tiny_teacher().train()  # training mode on purpose: embeddings must not use dropout
    src, tgt = random_pairs(7, seed=1)
    src[0], tgt[0] = [7, 8], [9]  # the shortest pair: most padding when batched with the others
    together = pair_embeddings(teacher, src, tgt, max_tokens=1000)
    assert together.shape == (7, 32) and together.dtype == np.float32
    for i in range(7):
        alone = pair_embeddings(teacher, [src[i]], [tgt[i]])
        np.testing.assert_allclose(alone[0], together[i], atol=1e-5)
    np.testing.assert_allclose(pair_embeddings(teacher, Ids.from_lists(src), Ids.from_lists(tgt), max_tokens=12),
                               together, atol=1e-5)  # many small batches, Ids input, same rows
    assert teacher.training  # its mode is given back
    with pytest.raises(KdgridError, match="2 sources but 1 targets"):
        pair_embeddings(teacher, src[:2], tgt[:1])


class PublicFace(torch.nn.Module):
    """The teacher seen only through what the design lets the filter read: cfg, encode and states."""

    autoregressive = True

    def __init__(self, teacher):
        super().__init__()
        self._teacher, self.cfg = teacher, teacher.cfg

    def encode(self, src):
        return self._teacher.encode(src)

    def states(self, prev, memory, src_pad):
        return self._teacher.states(prev, memory, src_pad)


def test_pair_embeddings_read_the_teacher_through_encode_and_states_only():
    """The same numbers, bit for bit, as the decoder stack called directly (how they were made
    before the filter read only the teacher's public face), and from a face with nothing else."""
    from kdgrid.batching import collate
    from kdgrid.models.layers import causal_mask, key_mask

    teacher = tiny_teacher()
    src, tgt = random_pairs(5, seed=2)
    got = pair_embeddings(teacher, src, tgt, max_tokens=1000)
    batch = collate(src, tgt, PAD, BOS, EOS)
    with torch.no_grad():
        memory, src_pad = teacher.encode(batch["src"])
        prev = batch["tgt_in"]
        hidden = teacher.decoder(teacher.embed_target(prev), causal_mask(prev.size(1), prev.device), memory,
                                 key_mask(src_pad))
        mean = lambda x, pad: (x * (~pad).unsqueeze(-1)).sum(1) / (~pad).sum(1, keepdim=True).clamp(min=1)
        before = torch.cat([mean(memory, src_pad), mean(hidden, prev.eq(PAD))], -1).numpy()
    assert np.array_equal(got, before)
    assert np.array_equal(pair_embeddings(PublicFace(teacher), src, tgt, max_tokens=1000), got)
    face = PublicFace(teacher)
    face.states = None  # a model without the public call is refused, not read through its insides
    with pytest.raises(KdgridError, match="must be an autoregressive encoder-decoder"):
        pair_embeddings(face, src, tgt)


def labelled_pairs():
    """Nine pairs, three per class: clean (a target of its own), copy, and shuffled."""
    src, tgt = random_pairs(9, seed=4, low=3)
    labels = np.array([0, 1, 2] * 3)
    for i, label in enumerate(labels):
        if label == 1:
            tgt[i] = list(src[i])
        elif label == 2:
            tgt[i] = tgt[i][::-1] if tgt[i] != tgt[i][::-1] else tgt[i][1:] + tgt[i][:1]
    return src, tgt, labels


def teacher_side(src, tgt, labels):
    """The teacher's classifier on the pairs (a linear head on its embeddings) and its outputs."""
    emb = pair_embeddings(tiny_teacher(), src, tgt)
    head = fit_head(emb, labels, len(CLASSES), steps=200, seed=1)
    assert scores(head.probs(emb).numpy(), labels, 3)["accuracy"] == 1.0  # nine points in 32-d
    return emb, head


def train(method, src, tgt, labels, emb, head, subclasses=1, steps=80):
    cfg = StudentConfig(vocab_size=VOCAB, pad=PAD, sep=EOS, classes=CLASSES, subclasses=subclasses,
                        d_model=32, ffn=64, layers=1, heads=2, dropout=0.0)
    student = build_student(cfg, seed=3)
    opts = TrainOptions(method=method, steps=steps, lr=3e-3, max_tokens=64, seed=5)
    extra = {}
    if method == "labels":
        extra["labels"] = labels
    elif method == "kd":
        extra["teacher_logits"] = head(emb).detach().numpy()
    else:
        extra["soft_targets"], extra["lelp"] = lelp_targets(emb, head, S=subclasses, temperature=0.5, seed=2)
    record = train_student(student, src, tgt, opts, labels=extra.get("labels"),
                           teacher_logits=extra.get("teacher_logits"), soft_targets=extra.get("soft_targets"))
    return student, {**record, "lelp": extra.get("lelp")}


@pytest.mark.parametrize("method,subclasses", [("labels", 1), ("kd", 1), ("lelp", 2)])
def test_student_overfits_a_handful_of_pairs(method, subclasses):
    src, tgt, labels = labelled_pairs()
    emb, head = teacher_side(src, tgt, labels)
    student, record = train(method, src, tgt, labels, emb, head, subclasses)
    probs = predict_probs(student, src, tgt)
    assert probs.shape == (9, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == labels).all(), (method, probs.round(2), record["final_loss"])


def test_training_is_seeded():
    src, tgt, labels = labelled_pairs()
    emb, head = teacher_side(src, tgt, labels)
    a, _ = train("kd", src, tgt, labels, emb, head, steps=10)
    b, _ = train("kd", src, tgt, labels, emb, head, steps=10)
    np.testing.assert_array_equal(predict_probs(a, src, tgt), predict_probs(b, src, tgt))


def test_targets_must_fit_the_method():
    src, tgt, labels = labelled_pairs()
    cfg = StudentConfig(vocab_size=VOCAB, pad=PAD, sep=EOS, classes=CLASSES, subclasses=2)
    with pytest.raises(KdgridError, match="method kd needs 3 outputs, the model has 6"):
        train_student(build_student(cfg, 1), src, tgt, TrainOptions(method="kd"), teacher_logits=np.zeros((9, 3)))
    with pytest.raises(KdgridError, match="method lelp: its targets were not given"):
        train_student(build_student(cfg, 1), src, tgt, TrainOptions(method="lelp"), labels=labels)
    with pytest.raises(KdgridError, match="one of labels, kd, lelp"):
        TrainOptions(method="lelp2")


def test_model_file_round_trip(tmp_path):
    src, tgt, labels = labelled_pairs()
    emb, head = teacher_side(src, tgt, labels)
    student, record = train("lelp", src, tgt, labels, emb, head, subclasses=2, steps=20)
    meta = {"method": "lelp", "vocab_sha256": "abc", **record}
    path = tmp_path / "filter.pt"
    save_student(path, student, meta)
    again, meta2 = load_student(path, vocab_sha256="abc")
    np.testing.assert_array_equal(predict_probs(again, src, tgt), predict_probs(student, src, tgt))
    assert again.cfg.classes == CLASSES and again.cfg.subclasses == 2
    assert meta2["lelp"]["S"] == 2 and meta2["lelp"]["rotate"] is True and meta2["training"]["method"] == "lelp"
    with pytest.raises(KdgridError, match="different vocabulary"):
        load_student(path, vocab_sha256="other")
    keep, counts = keep_pairs(path, src, tgt, 0.5, vocab_sha256="abc")
    np.testing.assert_array_equal(keep, keep_mask(student, src, tgt, 0.5)[0])
    assert counts["method"] == "lelp" and counts["kept"] + counts["dropped"] == 9
    with pytest.raises(KdgridError, match="rerun filter_student, or set filter.prior: none"):
        keep_pairs(path, src, tgt, 0.5, vocab_sha256="abc", prior="em")  # no training prior in the file
    save_student(path, student, {**meta, "train_prior": {c: 1 / 3 for c in CLASSES}, "holdout": ["misaligned"]})
    keep, counts = keep_pairs(path, src, tgt, 0.5, vocab_sha256="abc", prior="em")
    assert counts["prior"]["mode"] == "em" and counts["holdout"] == ["misaligned"]
    assert counts["kept_uncorrected"] == int(keep_mask(student, src, tgt, 0.5)[0].sum())
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(KdgridError, match="junk.pt: not a readable filter model"):
        load_student(tmp_path / "junk.pt")
    with pytest.raises(KdgridError, match="must name the method"):
        save_student(tmp_path / "x.pt", student, {"vocab_sha256": "abc"})


def test_keep_mask_thresholds():
    src, tgt, labels = labelled_pairs()
    emb, head = teacher_side(src, tgt, labels)
    student, _ = train("labels", src, tgt, labels, emb, head, steps=40)
    p_clean = predict_probs(student, src, tgt)[:, 0]
    keep, counts = keep_mask(student, src, tgt, 0.0)
    assert keep.all() and counts["kept"] == 9 and counts["dropped"] == 0
    assert counts["predicted"] == {"clean": 3, "copy": 3, "shuffled": 3}
    middle = float(np.median(p_clean))
    keep, counts = keep_mask(student, src, tgt, middle)
    np.testing.assert_array_equal(keep, p_clean >= middle)
    assert counts["kept"] == 5 and counts["kept"] + counts["dropped"] == 9
    strict, _ = keep_mask(student, src, tgt, 0.5)
    np.testing.assert_array_equal(strict, labels == 0)  # a trained filter keeps the clean pairs
    assert (keep_mask(student, src, tgt, 1.0)[0] <= strict).all()  # a higher bar keeps a subset
    with pytest.raises(KdgridError, match=r"threshold must be a number in \[0, 1\]"):
        keep_mask(student, src, tgt, 1.5)
    assert keep_mask(student, [], [], 0.5)[1]["kept"] == 0
