"""Paired bootstrap and approximate randomization over seeds (kdgrid.metrics.significance):
known outcomes on hand-made systems, equality with sacrebleu's PairedTest for one seed, pooling."""

from __future__ import annotations

import random

import pytest
from sacrebleu.significance import PairedTest

from kdgrid.errors import KdgridError
from kdgrid.metrics.bleu import sacrebleu_metric
from kdgrid.metrics.significance import approximate_randomization, mean_sd, paired_bootstrap, sentence_stats

WORDS = ("a man woman child dog cat walks runs sits on in the street park grass red blue small "
         "big old young ball bike water looks at with his her two three people group near").split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + f" s{i}" for i in range(n)]


def noisy(lines: list[str], rate: float, seed: int) -> list[str]:
    """Real-ish output: each word kept, dropped or replaced (rate/2 each)."""
    rng = random.Random(seed)
    out = []
    for line in lines:
        words = []
        for w in line.split():
            r = rng.random()
            if r >= rate:
                words.append(w)
            elif r >= rate / 2:
                words.append(rng.choice(WORDS))
        out.append(" ".join(words))
    return out


REFS = sentences(200)
DROPPED = [" ".join(s.split()[1:]) for s in REFS]  # one word fewer in every sentence
R = 1000


@pytest.fixture(autouse=True)
def sacrebleu_seed(monkeypatch):
    monkeypatch.setenv("SACREBLEU_SEED", "12345")  # sacrebleu's default; its baseline CI reads it


# -- known outcomes ---------------------------------------------------------------------------

def test_b_equal_to_the_reference_beats_a_that_drops_a_word():
    r = paired_bootstrap([DROPPED], [REFS], [REFS], resamples=R)
    assert r["b"]["score"] == pytest.approx(100.0) and r["a"]["score"] < 95
    assert r["diff"] > 0 and r["diff_ci"][0] > 0  # b - a, interval excludes 0
    assert r["p_value"] < 0.01
    assert r["b"]["ci"] == [pytest.approx(100.0)] * 2
    ar = approximate_randomization([DROPPED], [REFS], [REFS], resamples=R)
    assert ar["p_value"] < 0.01 and ar["diff"] == pytest.approx(r["diff"])


def test_identical_systems_are_never_different():
    hyps = noisy(REFS, 0.3, 1)
    r = paired_bootstrap([hyps], [hyps], [REFS], resamples=R)
    assert r["diff"] == 0 and r["diff_ci"] == [0.0, 0.0]
    # sacrebleu's (MultEval's) convention counts only strictly greater statistics: 1/(R+1)
    assert r["p_value"] == 1 / (R + 1)
    _, sb = PairedTest([("a", hyps), ("b", hyps)], {"bleu": sacrebleu_metric("bleu")}, [REFS],
                       test_type="bs", n_samples=R)()
    assert sb["BLEU"][1].p_value == r["p_value"]
    assert paired_bootstrap([hyps], [hyps], [REFS], resamples=R, count_ties=True)["p_value"] == 1.0
    ar = approximate_randomization([hyps], [hyps], [REFS], resamples=R)
    assert ar["p_value"] == 1 / (R + 1)
    assert approximate_randomization([hyps], [hyps], [REFS], resamples=R, count_ties=True)["p_value"] == 1.0


def test_better_on_one_sentence_of_200_is_not_significant():
    a = noisy(REFS, 0.3, 1)
    b = list(a)
    b[17] = REFS[17]  # b right on one sentence, equal elsewhere
    r = paired_bootstrap([a], [b], [REFS], resamples=R)
    assert r["diff"] > 0
    assert r["p_value"] >= 0.05 and r["diff_ci"][0] <= 0 <= r["diff_ci"][1]
    # randomization: every shuffle ties the observed |d|; only count_ties says so
    assert approximate_randomization([a], [b], [REFS], resamples=R)["p_value"] == 1 / (R + 1)
    assert approximate_randomization([a], [b], [REFS], resamples=R, count_ties=True)["p_value"] == 1.0


# -- equality with sacrebleu for one seed ------------------------------------------------------

SYSTEMS = {"close": (noisy(REFS, 0.30, 1), noisy(REFS, 0.28, 2)),
           "far": (noisy(REFS, 0.40, 3), noisy(REFS, 0.25, 4))}


@pytest.mark.parametrize("metric", ["bleu", "chrf", "ter"])
@pytest.mark.parametrize("pair", ["close", "far"])
def test_bootstrap_equals_sacrebleu_paired_bs(metric, pair):
    a, b = SYSTEMS[pair]
    r = paired_bootstrap([a], [b], [REFS], metric=metric, resamples=R, seed=12345)
    _, sb = PairedTest([("a", a), ("b", b)], {metric: sacrebleu_metric(metric)}, [REFS],
                       test_type="bs", n_samples=R)()
    (key,) = [k for k in sb if k != "System"]
    base, system = sb[key]
    assert r["p_value"] == system.p_value
    assert (r["a"]["score"], r["b"]["score"]) == (base.score, system.score)
    assert (r["a"]["bootstrap_mean"], r["a"]["half_width"]) == (base.mean, base.ci)
    assert (r["b"]["bootstrap_mean"], r["b"]["half_width"]) == (system.mean, system.ci)
    if pair == "far":
        assert r["p_value"] < 0.01 and (r["diff"] < 0 if metric == "ter" else r["diff"] > 0)


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
@pytest.mark.parametrize("pair", ["close", "far"])
def test_randomization_equals_sacrebleu_paired_ar(metric, pair):
    a, b = SYSTEMS[pair]
    r = approximate_randomization([a], [b], [REFS], metric=metric, resamples=R, seed=12345)
    _, sb = PairedTest([("a", a), ("b", b)], {metric: sacrebleu_metric(metric)}, [REFS],
                       test_type="ar", n_samples=R)()
    (key,) = [k for k in sb if k != "System"]
    base, system = sb[key]
    assert r["p_value"] == system.p_value
    assert (r["a"]["score"], r["b"]["score"]) == (base.score, system.score)


# -- several seeds ----------------------------------------------------------------------------

def test_three_identical_seeds_equal_one_seed():
    a, b = SYSTEMS["close"]
    stats = [sentence_stats([h] * 3, REFS) for h in (a, b)]  # precomputed: the same as hypotheses
    for test in (paired_bootstrap, approximate_randomization):
        one = test([a], [b], [REFS], resamples=R)
        three = test(*stats, resamples=R)
        assert three["seeds"] == [3, 3] and three["a"]["per_seed"] == [one["a"]["score"]] * 3
        assert three["p_value"] == one["p_value"] and three["diff"] == pytest.approx(one["diff"])
        if test is paired_bootstrap:  # (x + x + x) / 3 may differ from x in the last bit
            for key in ("diff_ci", "a", "b"):
                got, want = three[key], one[key]
                got, want = (got, want) if key == "diff_ci" else (got["ci"], want["ci"])
                assert got == pytest.approx(want, abs=1e-9), key


def test_a_systems_score_is_the_mean_over_its_seeds():
    refs = ["the dog runs in the park .", "a man sits on the grass .", "two children play ball ."]
    wrong = ["red blue green", "one two three", "cat sky"]  # no n-gram of the references
    r = paired_bootstrap([refs, wrong], [refs], refs, resamples=200)
    assert r["a"]["per_seed"] == [pytest.approx(100.0), 0.0]
    assert r["a"]["score"] == pytest.approx(50.0)
    assert r["a"]["ci"] == [pytest.approx(50.0)] * 2  # every resample: mean of 100 and 0
    assert r["diff"] == pytest.approx(50.0) and r["diff_ci"] == [pytest.approx(50.0)] * 2
    half = noisy(refs, 0.5, 7)
    m = sacrebleu_metric("chrf")
    expected = (m.corpus_score(refs, [refs]).score + m.corpus_score(half, [refs]).score) / 2
    assert paired_bootstrap([refs, half], [refs], refs, metric="chrf", resamples=10)["a"]["score"] == \
        pytest.approx(expected)


def test_randomization_pairs_seeds_and_checks_lengths():
    a, b = SYSTEMS["close"]
    with pytest.raises(KdgridError, match="pairs seeds"):
        approximate_randomization([a, b], [b], [REFS], resamples=10)
    with pytest.raises(KdgridError, match="hypotheses but"):
        paired_bootstrap([a[:-1]], [b], [REFS], resamples=10)


def test_deterministic_given_the_seed():
    a, b = SYSTEMS["close"]
    assert paired_bootstrap([a], [b], [REFS], resamples=200, seed=3) == \
        paired_bootstrap([a], [b], [REFS], resamples=200, seed=3)
    assert paired_bootstrap([a], [b], [REFS], resamples=200, seed=3)["diff_ci"] != \
        paired_bootstrap([a], [b], [REFS], resamples=200, seed=4)["diff_ci"]


def test_mean_sd():
    assert mean_sd([1, 2, 3]) == {"mean": 2.0, "sd": 1.0, "n": 3}
    assert mean_sd([27.5]) == {"mean": 27.5, "sd": None, "n": 1}
    with pytest.raises(KdgridError):
        mean_sd([])
