"""The class prior of the corpus being filtered, and the posterior corrected to it.

A classifier trained on a labelled set whose classes have the shares pi_train learns
p_train(c|x) ∝ p(x|c) pi_train(c). A corpus with the same class-conditional p(x|c) but the shares
pi_corpus (a real corpus is 80-99% clean; the labelled set is half noise) has the posterior

    p(c|x) = p_train(c|x) w_c / sum_k p_train(k|x) w_k,    w_c = pi_corpus(c) / pi_train(c)

(Bayes; Saerens, Latinne & Decaestecker 2002, "Adjusting the outputs of a classifier to new a
priori probabilities"). The corpus prior is configured (a clean share: the noisy classes share
the rest in their training proportions) or estimated by their EM on the unlabelled corpus: start
at pi_train, then repeat pi <- the mean over the corpus of the posteriors corrected to pi, until
no class share moves by more than EM_TOL. Modes (filter.prior): em, configured, none (the
uncorrected posterior: the filter before the correction existed).

For scores at a corpus prior: the recall of the noisy class (the share of noisy pairs the filter
drops) does not depend on the prior, precision does; from the per-class rates measured on a
labelled set and the corpus's clean share pi,

    precision = (1 - pi) R / ((1 - pi) R + pi F),   R: noisy pairs dropped, F: clean pairs dropped

(no resampling: the expectation of precision on a corpus with that prior and those rates).
"""

from __future__ import annotations

import numpy as np

from kdgrid.errors import KdgridError

MODES = ("em", "configured", "none")
EM_TOL = 1e-6  # stop when no class share moves by more than this
EM_MAX_ITER = 1000


def as_prior(values, what: str) -> np.ndarray:
    """A class prior as float64: every share > 0 (a class the prior rules out cannot be
    corrected back) and the shares summing to 1."""
    p = np.asarray(values, dtype=np.float64)
    if p.ndim != 1 or len(p) < 2 or not np.all(np.isfinite(p)) or np.any(p <= 0) or abs(p.sum() - 1) > 1e-6:
        raise KdgridError(f"{what}: a class prior needs 2 or more shares > 0 summing to 1, got {p.tolist()}")
    return p / p.sum()


def correct(probs, train_prior, corpus_prior) -> np.ndarray:
    """(N, C) posteriors at train_prior -> at corpus_prior (rows renormalised). A row whose mass
    lies only on classes the corpus prior gives 0 (an EM estimate can reach 0) is left as it was."""
    p = np.asarray(probs, dtype=np.float64)
    weights = np.asarray(corpus_prior, dtype=np.float64) / np.asarray(train_prior, dtype=np.float64)
    q = p * weights
    total = q.sum(-1, keepdims=True)
    return np.where(total > 0, q / np.where(total > 0, total, 1.0), p)


def em_prior(probs, train_prior, tol: float = EM_TOL, max_iter: int = EM_MAX_ITER) -> tuple[np.ndarray, int, bool]:
    """(estimated prior, iterations, converged): Saerens et al.'s EM on the unlabelled rows'
    posteriors at train_prior. An empty corpus keeps the training prior (0 iterations)."""
    train = np.asarray(train_prior, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if len(p) == 0:
        return train.copy(), 0, True
    prior = train.copy()
    for it in range(1, max_iter + 1):
        new = correct(p, train, prior).mean(0)
        moved = float(np.abs(new - prior).max())
        prior = new
        if moved <= tol:
            return prior, it, True
    return prior, max_iter, False


def clean_share_prior(clean_share: float, classes: list[str], train_prior, clean: str = "clean") -> np.ndarray:
    """The class prior of a corpus with `clean_share` clean pairs: the noisy classes share the
    rest in their training proportions (so the correction moves P(clean) only)."""
    train = np.asarray(train_prior, dtype=np.float64)
    i = classes.index(clean)
    noisy = np.delete(np.arange(len(classes)), i)
    out = np.zeros(len(classes))
    out[i] = clean_share
    out[noisy] = (1 - clean_share) * train[noisy] / train[noisy].sum()
    return out


def clean_share(value, what: str = "filter.corpus_prior") -> float:
    """A configured corpus prior: a clean share in (0, 1), or {clean: share}."""
    if isinstance(value, dict):
        if set(value) != {"clean"}:
            raise KdgridError(f"{what}: give the clean share as a number or {{clean: share}}, got {value!r}")
        value = value["clean"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise KdgridError(f"{what}: the corpus's clean share must be a number in (0, 1), got {value!r}")
    return float(value)


def corrected_clean(p_clean, train_clean: float, corpus_clean: float) -> np.ndarray:
    """P(clean) corrected from a training clean share to a corpus clean share. For a few-class
    posterior corrected to clean_share_prior this equals correct(...)[:, clean]: the noisy
    classes' weights are all (1 - corpus_clean) / (1 - train_clean)."""
    p = np.asarray(p_clean, dtype=np.float64)
    a, b = corpus_clean / train_clean, (1 - corpus_clean) / (1 - train_clean)
    return p * a / (p * a + (1 - p) * b)


def noisy_precision(noisy_recall: float, clean_dropped: float, clean: float) -> float:
    """Precision of the noisy class (the dropped pairs that are noisy) on a corpus with clean
    share `clean`, from the share of noisy pairs dropped (recall) and of clean pairs dropped;
    NaN when nothing is dropped."""
    dropped = (1 - clean) * noisy_recall + clean * clean_dropped
    return float((1 - clean) * noisy_recall / dropped) if dropped > 0 else float("nan")
