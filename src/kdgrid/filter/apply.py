"""What data preparation uses: which training pairs the filter student keeps.

`keep_pairs` (a model file) is the one call for data preparation; `keep_mask` does the work on a
loaded student (tests, reports that score several thresholds with one model); `decide` is the
rule on class probabilities: P(clean) >= threshold, P(clean) first corrected from the student's
training prior to the corpus's (kdgrid.filter.prior: `em` estimates the corpus prior on the pairs
being filtered, `configured` takes a clean share, `none` leaves the posterior as it is)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdgrid.errors import KdgridError
from kdgrid.filter.noise import CLEAN
from kdgrid.filter.prior import EM_TOL, MODES, as_prior, clean_share, clean_share_prior, correct, em_prior
from kdgrid.filter.student import PairClassifier, load_student, predict_probs


@dataclass
class Decision:
    keep: np.ndarray  # the filter's rule (with the prior correction, if any)
    uncorrected: np.ndarray  # the same threshold on the uncorrected P(clean)
    counts: dict


def _check(threshold, classes) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise KdgridError(f"corpus.clean.filter.threshold must be a number in [0, 1], got {threshold!r}")
    if CLEAN not in classes:
        raise KdgridError(f"the filter student has no {CLEAN!r} class (its classes: {classes})")


def _prior_vector(train_prior, classes: list[str]) -> np.ndarray:
    if not isinstance(train_prior, dict) or set(train_prior) != set(classes):
        raise KdgridError(f"the filter model's training prior ({train_prior!r}) does not name its classes "
                          f"{classes}: the model predates filter.prior; rerun filter_student, or set "
                          "filter.prior: none")
    return as_prior([train_prior[c] for c in classes], "the filter model's training prior")


def decide(probs, classes: list[str], threshold: float, prior: str = "none", train_prior: dict | None = None,
           corpus_prior=None) -> Decision:
    """The filter on (N, C) class probabilities. prior: em | configured (corpus_prior: a clean
    share or {clean: share}) | none; train_prior {class: share}: the student's training labels'.
    counts: kept/dropped with and without the correction, the priors, EM's iterations, and the
    pairs per predicted class (argmax of the corrected posterior)."""
    _check(threshold, classes)
    if prior not in MODES:
        raise KdgridError(f"filter.prior must be one of {', '.join(MODES)}, got {prior!r}")
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, len(classes))
    n, c = len(probs), classes.index(CLEAN)
    record: dict = {"mode": prior, "threshold": threshold}
    corrected = probs
    if prior != "none":
        train = _prior_vector(train_prior, classes)
        if prior == "configured":
            corpus = clean_share_prior(clean_share(corpus_prior), classes, train)
            record["source"] = "filter.corpus_prior"
        else:
            corpus, iterations, converged = em_prior(probs, train)
            record.update(source="estimated by EM on the pairs filtered", em_iterations=iterations,
                          em_converged=converged, em_tol=EM_TOL)
        corrected = correct(probs, train, corpus)
        record.update(train={k: float(v) for k, v in zip(classes, train)},
                      corpus={k: float(v) for k, v in zip(classes, corpus)},
                      train_clean=float(train[c]), corpus_clean=float(corpus[c]))
    keep, uncorrected = corrected[:, c] >= threshold, probs[:, c] >= threshold
    predicted = np.bincount(corrected.argmax(-1), minlength=len(classes)) if n else np.zeros(len(classes), int)
    counts = {"kept": int(keep.sum()), "dropped": int(n - keep.sum()), "threshold": threshold,
              "kept_uncorrected": int(uncorrected.sum()), "dropped_uncorrected": int(n - uncorrected.sum()),
              "prior": record, "predicted": {k: int(m) for k, m in zip(classes, predicted)}}
    return Decision(keep, uncorrected, counts)


def keep_mask(student: PairClassifier, src_ids, tgt_ids, threshold: float, max_tokens: int = 4096,
              prior: str = "none", train_prior: dict | None = None, corpus_prior=None) -> tuple[np.ndarray, dict]:
    """(keep, counts): keep[i] is True when the student's P(clean | pair i), corrected to the
    corpus prior unless prior is none, is >= threshold (decide).

    threshold 0 keeps every pair, 1 only those the student is certain of."""
    classes = student.cfg.classes
    _check(threshold, classes)
    probs = predict_probs(student, src_ids, tgt_ids, max_tokens) if len(src_ids) else np.zeros((0, len(classes)))
    d = decide(probs, classes, threshold, prior, train_prior, corpus_prior)
    return d.keep, d.counts


def decide_pairs(model_path, src_ids, tgt_ids, threshold: float, vocab_sha256: str | None = None,
                 max_tokens: int = 4096, prior: str = "none", corpus_prior=None) -> Decision:
    """decide with the student in `model_path` (checked against the corpus's vocabulary when
    vocab_sha256 is given; its training prior and held-out kinds come from the file)."""
    student, meta = load_student(model_path, vocab_sha256)
    classes = student.cfg.classes
    _check(threshold, classes)
    probs = predict_probs(student, src_ids, tgt_ids, max_tokens) if len(src_ids) else np.zeros((0, len(classes)))
    d = decide(probs, classes, threshold, prior, meta.get("train_prior"), corpus_prior)
    d.counts.update(model=str(model_path), method=meta.get("method"), labels=meta.get("labels"),
                    holdout=list(meta.get("holdout") or []))
    return d


def keep_pairs(model_path, src_ids, tgt_ids, threshold: float, vocab_sha256: str | None = None,
               max_tokens: int = 4096, prior: str = "none", corpus_prior=None) -> tuple[np.ndarray, dict]:
    """(keep, counts) of decide_pairs; the counts also name the model and its method."""
    d = decide_pairs(model_path, src_ids, tgt_ids, threshold, vocab_sha256, max_tokens, prior, corpus_prior)
    return d.keep, d.counts
