"""kdgrid.filter.prior and the filter's rule: the posterior corrected to the corpus prior (Bayes),
the corpus prior estimated by EM (Saerens et al. 2002), and the noisy class's precision and recall
at a corpus prior, on hand-checked numbers and posteriors drawn from known distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdgrid.errors import KdgridError
from kdgrid.filter.apply import decide
from kdgrid.filter.evaluate import at_prior
from kdgrid.filter.prior import (
    clean_share,
    clean_share_prior,
    correct,
    corrected_clean,
    em_prior,
    noisy_precision,
)
from kdgrid.filter.table import markdown, rows

BINARY = ["clean", "noisy"]


def test_the_correction_by_hand():
    # 0.4 * 0.8/0.5 = 0.64 and 0.6 * 0.2/0.5 = 0.24: 0.64 / 0.88 = 0.7272...
    assert correct([[0.4, 0.6]], [0.5, 0.5], [0.8, 0.2])[0] == pytest.approx([8 / 11, 3 / 11])
    assert corrected_clean([0.4], 0.5, 0.8)[0] == pytest.approx(0.727272, abs=1e-6)
    probs = np.array([[0.2, 0.5, 0.3], [0.7, 0.1, 0.2]])
    np.testing.assert_allclose(correct(probs, [0.5, 0.25, 0.25], [0.5, 0.25, 0.25]), probs)  # same prior: as is
    # few classes at a clean share: the noisy classes keep their training proportions, so only
    # P(clean) decides, exactly as the binary correction of P(clean)
    train = np.array([0.5, 0.3, 0.2])
    corpus = clean_share_prior(0.9, ["clean", "copy", "shuffled"], train)
    np.testing.assert_allclose(corpus, [0.9, 0.06, 0.04])
    np.testing.assert_allclose(correct(probs, train, corpus)[:, 0], corrected_clean(probs[:, 0], 0.5, 0.9))
    assert clean_share({"clean": 0.9}) == clean_share(0.9) == 0.9
    with pytest.raises(KdgridError, match=r"filter.corpus_prior: .*\(0, 1\), got 1.2"):
        clean_share(1.2)


def gaussian_posteriors(n: int, clean: float, seed: int):
    """Pairs whose score x is N(+1, 1) when clean and N(-1, 1) when noisy, and the exact posterior
    a classifier trained at a 50% clean prior gives them: P(clean|x) = sigmoid(2x)."""
    rng = np.random.default_rng(seed)
    is_clean = rng.random(n) < clean
    x = np.where(is_clean, rng.normal(1, 1, n), rng.normal(-1, 1, n))
    p = 1 / (1 + np.exp(-2 * x))
    return np.stack([p, 1 - p], 1), is_clean


@pytest.mark.parametrize("clean", [0.8, 0.95, 0.3])
def test_em_recovers_a_known_prior(clean):
    probs, is_clean = gaussian_posteriors(40000, clean, seed=3)
    prior, iterations, converged = em_prior(probs, [0.5, 0.5])
    assert converged and iterations > 1
    assert prior.sum() == pytest.approx(1.0)
    assert prior[0] == pytest.approx(clean, abs=0.01)
    assert abs(prior[0] - is_clean.mean()) < 0.01  # and the sample's own share


def test_em_recovers_a_few_class_prior():
    """Three classes on a line (clean at +2, copy at 0, shuffled at -2, unit variance): posteriors at
    a uniform training prior, a corpus of 70/20/10."""
    rng = np.random.default_rng(5)
    truth, means = np.array([0.7, 0.2, 0.1]), np.array([2.0, 0.0, -2.0])
    y = rng.choice(3, size=40000, p=truth)
    x = rng.normal(means[y], 1.0)
    logits = -0.5 * (x[:, None] - means[None, :]) ** 2
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    prior, _, converged = em_prior(probs, np.full(3, 1 / 3))
    assert converged
    np.testing.assert_allclose(prior, truth, atol=0.015)


def test_the_corrected_filter_keeps_more_clean_pairs_on_a_mostly_clean_corpus():
    probs, is_clean = gaussian_posteriors(20000, 0.9, seed=7)
    train = {"clean": 0.5, "noisy": 0.5}
    raw = decide(probs, BINARY, 0.5, "none")
    em = decide(probs, BINARY, 0.5, "em", train)
    configured = decide(probs, BINARY, 0.5, "configured", train, {"clean": 0.9})
    assert (em.keep & is_clean).sum() > (raw.keep & is_clean).sum() + 0.05 * is_clean.sum()
    assert raw.keep.sum() < 0.9 * len(probs) < em.keep.sum() + 0.03 * len(probs)  # kept share near the truth
    assert em.keep.sum() >= raw.keep.sum() and (em.uncorrected == raw.keep).all()
    c = em.counts
    assert c["kept_uncorrected"] == raw.counts["kept"] and c["kept"] == int(em.keep.sum())
    assert c["prior"]["mode"] == "em" and c["prior"]["em_converged"] and c["prior"]["em_iterations"] > 1
    assert c["prior"]["train_clean"] == 0.5 and c["prior"]["corpus_clean"] == pytest.approx(0.9, abs=0.01)
    assert configured.counts["prior"]["corpus"] == {"clean": pytest.approx(0.9), "noisy": pytest.approx(0.1)}
    assert configured.counts["prior"]["source"] == "filter.corpus_prior"
    assert raw.counts["prior"] == {"mode": "none", "threshold": 0.5}
    with pytest.raises(KdgridError, match="rerun filter_student, or set filter.prior: none"):
        decide(probs, BINARY, 0.5, "em", None)  # a model file from before the training prior was recorded
    with pytest.raises(KdgridError, match="filter.prior must be one of em, configured, none"):
        decide(probs, BINARY, 0.5, "bayes", train)


# A valid set by hand: 20 clean pairs, 10 copies (a kind trained on), 4 shuffled (held out).
VALID = {"clean": [0.9] * 18 + [0.3, 0.15], "copy": [0.1] * 8 + [0.3, 0.7], "shuffled": [0.4, 0.6, 0.1, 0.05]}


def test_noisy_precision_and_recall_at_the_corpus_prior_by_hand():
    # raw (P(clean) < 0.5 is dropped): clean 2 of 20 dropped (F = 0.1); copy 9 of 10, shuffled 3 of 4
    raw = at_prior(VALID, 0.5, 0.8, 0.5, corrected=False, holdout=["shuffled"])
    assert raw["clean_dropped"] == pytest.approx(0.1) and raw["noisy_recall"] == pytest.approx(12 / 14)
    assert raw["held_out_recall"] == {"shuffled": pytest.approx(0.75)}
    # precision at a corpus 80% clean: 0.2 R / (0.2 R + 0.8 F)
    assert raw["noisy_precision"] == pytest.approx(0.2 * 12 / 14 / (0.2 * 12 / 14 + 0.8 * 0.1))  # 0.6818
    # corrected from 0.5 to 0.8: P' = 4p / (3p + 1); 0.3 -> 0.63 and 0.4 -> 0.73 are kept, 0.15 -> 0.41 not
    fixed = at_prior(VALID, 0.5, 0.8, 0.5, corrected=True, holdout=["shuffled"])
    assert fixed["clean_dropped"] == pytest.approx(0.05) and fixed["noisy_recall"] == pytest.approx(10 / 14)
    assert fixed["held_out_recall"] == {"shuffled": pytest.approx(0.5)}
    assert fixed["noisy_precision"] == pytest.approx(0.78125)  # (0.2 * 10/14) / (0.2 * 10/14 + 0.8 * 0.05)
    assert noisy_precision(0.9, 0.05, 0.8) == pytest.approx(0.18 / 0.22)
    assert math.isnan(noisy_precision(0.0, 0.0, 0.8))  # nothing dropped: no precision


def test_the_table_names_the_held_out_kind_and_its_recall():
    student = {"labels": "few", "method": "lelp", "seed": 1, "accuracy": 0.9, "macro_f1": 0.8,
               "classes": ["clean", "copy"], "holdout": ["shuffled"], "train_prior": {"clean": 0.5, "copy": 0.5},
               "valid_p_clean": VALID}
    table = rows([], [student], corpus_prior=0.8, threshold=0.5, prior="em")
    (row,) = table
    assert row["held_out_shuffled_recall_mean"] == pytest.approx(0.5)
    assert row["noisy_precision_mean"] == pytest.approx(0.78125)
    assert row["noisy_recall_raw_mean"] == pytest.approx(12 / 14)
    text = markdown(table, "t", {"corpus_prior": 0.8, "threshold": 0.5, "prior": "em"})
    assert "| noisy P | noisy R | noisy P raw | noisy R raw | shuffled R (held out) |" in text
    assert "| few | student lelp | 2 | 1 | 90.0 ± 0.0 | 80.0 ± 0.0 | 78.1 ± 0.0 | 71.4 ± 0.0 | 68.2 ± 0.0 | " \
           "85.7 ± 0.0 | 50.0 ± 0.0 |" in text
    assert "clean share π = 0.8" in text and "Held out of training (filter.holdout_kind): shuffled" in text
    with pytest.raises(KdgridError, match="rerun filter_teacher and filter_student"):
        rows([], [{k: v for k, v in student.items() if k != "valid_p_clean"}])
