"""kdgrid.filter.noise: each noise kind does what its name says, in the shares asked for."""

from __future__ import annotations

import pytest

from kdgrid.errors import KdgridError
from kdgrid.filter.noise import binary, class_names, label_ids, make_labelled, share_counts

SRC = [f"quelle {i} satz nummer {i} hier" for i in range(40)]
TGT = [f"source {i} sentence number {i} here" for i in range(40)]


def one_kind(kind, src=SRC, tgt=TGT, **kw):
    return make_labelled(src, tgt, {kind: 1.0}, seed=3, **kw)


def test_clean_leaves_every_pair():
    s, t, labels = one_kind("clean")
    assert (s, t) == (SRC, TGT) and set(labels) == {"clean"}


def test_misaligned_takes_another_sentence_target():
    s, t, _ = one_kind("misaligned")
    assert s == SRC
    for i, target in enumerate(t):
        assert target in TGT and target != TGT[i]


def test_truncated_is_a_shorter_prefix():
    s, t, _ = one_kind("truncated")
    for full, cut in zip(TGT, t):
        words, kept = full.split(), cut.split()
        assert 1 <= len(kept) < len(words) and kept == words[: len(kept)]
        assert round(0.2 * len(words)) <= len(kept) <= round(0.6 * len(words))


def test_copy_puts_the_source_on_the_target_side():
    s, t, _ = one_kind("copy")
    assert s == SRC and t == SRC


def test_shuffled_has_the_same_words_in_another_order():
    s, t, _ = one_kind("shuffled")
    for full, mixed in zip(TGT, t):
        assert sorted(mixed.split()) == sorted(full.split()) and mixed != full
    _, t2, _ = make_labelled(["a b"] * 30, ["x y"] * 30, {"shuffled": 1.0}, seed=0)
    assert set(t2) == {"y x"}  # two words: the only other order, every time


def test_wrong_language_takes_the_same_source_in_another_language():
    src = ["ein hund", "eine katze"] * 2
    tgt = ["a dog", "a cat", "un chien", "un chat"]
    langs = ["en", "en", "fr", "fr"]
    s, t, labels = make_labelled(src, tgt, {"wrong_language": 1.0}, seed=1, langs=langs)
    assert s == src and t == ["un chien", "un chat", "a dog", "a cat"] and set(labels) == {"wrong_language"}
    with pytest.raises(KdgridError, match="multi-way"):
        make_labelled(src, tgt, {"clean": 0.5, "wrong_language": 0.5}, seed=1)


def test_shares_give_exact_counts():
    kinds = {"clean": 0.5, "misaligned": 0.2, "truncated": 0.1, "copy": 0.1, "shuffled": 0.1}
    _, _, labels = make_labelled(SRC, TGT, kinds, seed=5)
    assert {k: labels.count(k) for k in kinds} == {"clean": 20, "misaligned": 8, "truncated": 4,
                                                  "copy": 4, "shuffled": 4}
    # 7 rows at 1/3 each: 2.33 -> 2, 2, 2 and the leftover row to the first largest remainder
    assert share_counts({"clean": 1 / 3, "copy": 1 / 3, "shuffled": 1 / 3}, 7) == {"clean": 3, "copy": 2, "shuffled": 2}


def test_rows_keep_their_place_and_noise_applies_only_where_labelled():
    kinds = {"clean": 0.5, "copy": 0.25, "truncated": 0.25}
    s, t, labels = make_labelled(SRC, TGT, kinds, seed=2)
    for i, label in enumerate(labels):
        assert s[i] == SRC[i]
        assert (t[i] == TGT[i]) == (label == "clean")


def test_same_seed_same_set_other_seed_other_set():
    kinds = {"clean": 0.4, "misaligned": 0.3, "shuffled": 0.3}
    assert make_labelled(SRC, TGT, kinds, seed=9) == make_labelled(SRC, TGT, kinds, seed=9)
    assert make_labelled(SRC, TGT, kinds, seed=9) != make_labelled(SRC, TGT, kinds, seed=10)


def test_bad_shares_name_the_kinds():
    with pytest.raises(KdgridError, match=r"sum to 1, got 0.9 \(clean 0.5, copy 0.4\)"):
        make_labelled(SRC, TGT, {"clean": 0.5, "copy": 0.4}, seed=1)
    with pytest.raises(KdgridError, match="unknown kind.*typo"):
        make_labelled(SRC, TGT, {"clean": 0.5, "typo": 0.5}, seed=1)
    with pytest.raises(KdgridError, match="share of copy"):
        make_labelled(SRC, TGT, {"clean": 1.5, "copy": -0.5}, seed=1)


def test_a_kind_that_cannot_fit_says_so():
    src, tgt = [f"w{i}" for i in range(10)], [f"v{i}" for i in range(10)]  # one word each
    with pytest.raises(KdgridError, match="truncated: 5 pairs wanted but only 0"):
        make_labelled(src, tgt, {"clean": 0.5, "truncated": 0.5}, seed=1)


def test_class_names_binary_and_ids():
    kinds = {"shuffled": 0.2, "clean": 0.6, "copy": 0.2, "truncated": 0.0}
    classes = class_names(kinds)
    assert classes == ["clean", "copy", "shuffled"]
    labels = ["copy", "clean", "shuffled"]
    assert binary(labels) == ["noisy", "clean", "noisy"]
    assert label_ids(labels, classes).tolist() == [1, 0, 2]
