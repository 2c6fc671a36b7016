"""A filter classifier on the labelled valid set: accuracy and macro F1 on the kinds it was trained
on, and every valid pair's P(clean) by its gold kind, from which the table computes the noisy
class's precision and recall at a corpus prior, with and without the prior correction, and the
recall on the kinds held out of training (filter.holdout_kind).

A held-out kind has no class of its own in the few-class label set (the classifier never saw
it), so its pairs count in binary terms only: a held-out pair is caught when the filter drops it,
whatever noisy class the classifier gives it. Accuracy and macro F1 leave those pairs out.
"""

from __future__ import annotations

import numpy as np

from kdgrid.errors import KdgridError
from kdgrid.filter.noise import CLEAN, NOISY, binary
from kdgrid.filter.noise import label_ids as _ids
from kdgrid.filter.prior import corrected_clean, noisy_precision

LABEL_SETS = ("few", "binary")


def label_classes(label_set: str, info: dict) -> list[str]:
    """The classes of a label set: few = the labelled set's training kinds, binary = clean and noisy."""
    if label_set not in LABEL_SETS:
        raise KdgridError(f"label set must be one of {', '.join(LABEL_SETS)}, got {label_set!r}")
    return list(info["classes"]) if label_set == "few" else [CLEAN, NOISY]


def label_ids(labels: list[str], label_set: str, classes: list[str]) -> np.ndarray:
    return _ids(binary(labels) if label_set == "binary" else labels, classes)


def train_prior(y, classes: list[str]) -> dict[str, float]:
    """The class shares of the training labels: the prior the classifier's posterior assumes."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(classes))
    if counts.sum() == 0 or np.any(counts == 0):
        empty = [c for c, n in zip(classes, counts) if n == 0]
        raise KdgridError(f"the labelled training set has no pair of class(es) {empty}; raise filter.train_pairs")
    return {c: float(n / counts.sum()) for c, n in zip(classes, counts)}


def valid_scores(probs, kinds: list[str], label_set: str, classes: list[str], trained: list[str]) -> dict:
    """probs (N, C) on the valid pairs, whose gold kinds are `kinds` (held-out kinds included);
    `trained`: the kinds the classifier was trained on. Accuracy and macro F1 on the trained
    kinds' pairs (n of them), and valid_p_clean: {kind: [P(clean) of each of its pairs]}."""
    from kdgrid.filter.head import scores  # here: the table reads these scores without torch

    probs = np.asarray(probs)
    seen = np.array([k in trained for k in kinds], dtype=bool)
    y = label_ids([k for k, s in zip(kinds, seen) if s], label_set, classes)
    out = scores(probs[seen], y, len(classes))
    p_clean = probs[:, classes.index(CLEAN)]
    out["valid_p_clean"] = {k: [round(float(p), 6) for p, kk in zip(p_clean, kinds) if kk == k]
                            for k in dict.fromkeys(kinds)}
    return out


def at_prior(p_clean_by_kind: dict, train_clean: float, corpus_clean: float, threshold: float,
             corrected: bool, holdout: list[str] = ()) -> dict:
    """The filter rule `P(clean) >= threshold` (P(clean) corrected from train_clean to corpus_clean
    when `corrected`) on the valid pairs: the noisy class's recall (noisy pairs dropped, held-out
    kinds included), its precision at a corpus with clean share corpus_clean (noisy_precision),
    the share of clean pairs dropped, and the recall on each held-out kind."""
    if CLEAN not in p_clean_by_kind or len(p_clean_by_kind) < 2:
        raise KdgridError(f"valid_p_clean needs clean and noisy pairs, has {sorted(p_clean_by_kind)}")

    def dropped(kind: str) -> np.ndarray:
        p = np.asarray(p_clean_by_kind[kind], dtype=np.float64)
        p = corrected_clean(p, train_clean, corpus_clean) if corrected else p
        return p < threshold

    clean_dropped = float(dropped(CLEAN).mean()) if len(p_clean_by_kind[CLEAN]) else 0.0
    noisy = np.concatenate([dropped(k) for k in p_clean_by_kind if k != CLEAN])
    recall = float(noisy.mean()) if len(noisy) else 0.0
    held_out = {k: (float(dropped(k).mean()) if len(p_clean_by_kind.get(k, [])) else float("nan"))
                for k in holdout}
    return {"noisy_recall": recall, "noisy_precision": noisy_precision(recall, clean_dropped, corpus_clean),
            "clean_dropped": clean_dropped, "held_out_recall": held_out}
