"""What data preparation uses: which training pairs the filter student keeps.

`keep_pairs` (a model file) is the one call for data preparation; `keep_mask` does the work on a
loaded student (tests, reports that score several thresholds with one model)."""

from __future__ import annotations

import numpy as np

from kdgrid.errors import KdgridError
from kdgrid.filter.noise import CLEAN
from kdgrid.filter.student import PairClassifier, load_student, predict_probs


def keep_mask(student: PairClassifier, src_ids, tgt_ids, threshold: float,
              max_tokens: int = 4096) -> tuple[np.ndarray, dict]:
    """(keep, counts): keep[i] is True when the student's P(clean | pair i) >= threshold.

    threshold 0 keeps every pair, 1 only those the student is certain of. counts: kept,
    dropped, and the pairs per predicted class (argmax), for the preparation's report."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise KdgridError(f"corpus.clean.filter.threshold must be a number in [0, 1], got {threshold!r}")
    classes = student.cfg.classes
    if CLEAN not in classes:
        raise KdgridError(f"the filter student has no {CLEAN!r} class (its classes: {classes})")
    n = len(src_ids)
    if n == 0:
        return np.zeros(0, dtype=bool), {"kept": 0, "dropped": 0, "threshold": threshold,
                                         "predicted": {c: 0 for c in classes}}
    probs = predict_probs(student, src_ids, tgt_ids, max_tokens)
    keep = probs[:, classes.index(CLEAN)] >= threshold
    predicted = np.bincount(probs.argmax(-1), minlength=len(classes))
    counts = {"kept": int(keep.sum()), "dropped": int(n - keep.sum()), "threshold": threshold,
              "predicted": {c: int(k) for c, k in zip(classes, predicted)}}
    return keep, counts


def keep_pairs(model_path, src_ids, tgt_ids, threshold: float, vocab_sha256: str | None = None,
               max_tokens: int = 4096) -> tuple[np.ndarray, dict]:
    """keep_mask with the student in `model_path` (checked against the corpus's vocabulary when
    vocab_sha256 is given); the counts also name the model and its method."""
    student, meta = load_student(model_path, vocab_sha256)
    keep, counts = keep_mask(student, src_ids, tgt_ids, threshold, max_tokens)
    return keep, {**counts, "model": str(model_path), "method": meta.get("method")}
