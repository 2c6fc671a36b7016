"""Paired significance tests between two systems on one test set, each system given by one or
several hypothesis lists (one per training seed) aligned to the same references.

Both tests work on per-sentence sufficient statistics (sacrebleu's `_extract_corpus_statistics`,
scored by its `_compute_score_from_stats`): BLEU's n-gram matches, totals and lengths, chrF's and
chrF++'s n-gram counts, TER's edits and reference lengths all add over sentences. A resample is one
matrix product of resample counts (or swap masks) with the statistics of every seed at once.

With one seed per system both reproduce sacrebleu 2.x's `PairedTest` (`paired_bs`, `paired_ar`;
system a = its baseline, b = the system) bit for bit: the same generator calls
(`np.random.default_rng(seed)`, seed 12345 = sacrebleu's SACREBLEU_SEED default), the same float32
bootstrap sums, the same confidence-interval indices and the same p-value. Several seeds: a
system's score, on the data and on every resample, is the mean over its seeds of the corpus metric.

Conventions (those of sacrebleu, which takes its p-value from MultEval):
- `diff` = score(b) - score(a); for TER (lower is better, `HIGHER_IS_BETTER`) positive = b worse.
- p-value = (c + 1) / (R + 1), R resamples, c = how many resampled statistics are STRICTLY greater
  than the observed one. Bootstrap statistic: |d*| - mean(|d*|) against |d| (resampled differences
  shifted to mean zero); randomization: |a' - b'| of the shuffled systems against |d|. So two
  identical systems get p = 1/(R+1), not 1, and in the randomization test two systems that differ
  on one sentence too (every shuffle ties |d|). `count_ties=True` counts ties (>= |d| - 1e-9) as
  extreme: identical systems get p = 1; otherwise it differs only on exact ties.
- 95% interval: the sorted resampled values at R//40 and R - 1 - R//40 (sacrebleu's
  `estimate_ci`, which reports their half width `half_width` around the bootstrap mean).
"""

from __future__ import annotations

import math

import numpy as np

from kdgrid.errors import KdgridError
from kdgrid.metrics.bleu import HIGHER_IS_BETTER, sacrebleu_metric

SEED = 12345  # sacrebleu's default SACREBLEU_SEED
_TIE_TOLERANCE = 1e-9
_CHUNK = 2000  # resamples per matrix product (bounds memory at 1000s of sentences)


def _references(refs) -> list[list[str]]:
    """One list of reference lines, or several (sacrebleu's streams)."""
    if not refs:
        raise KdgridError("no references")
    return [list(refs)] if isinstance(refs[0], str) else [list(r) for r in refs]


def sentence_stats(hypotheses, references, metric: str = "bleu") -> np.ndarray:
    """Per-sentence sufficient statistics of one or several hypothesis lists (one per seed):
    an array (seeds, sentences, statistics). Pass it instead of the hypotheses to the tests below
    to extract a system's statistics once for many comparisons (TER's take seconds)."""
    hyps = [hypotheses] if hypotheses and isinstance(hypotheses[0], str) else hypotheses
    if not hyps or not hyps[0]:
        raise KdgridError("no hypotheses")
    refs = _references(references)
    for h in hyps:
        for r in refs:
            if len(h) != len(r):
                raise KdgridError(f"{len(h)} hypotheses but {len(r)} references")
    m = sacrebleu_metric(metric, references=refs)  # references preprocessed once
    return np.array([m._extract_corpus_statistics(h, None) for h in hyps])


def _prepare(sys_a, sys_b, refs, metric):
    if metric not in HIGHER_IS_BETTER:
        raise KdgridError(f"unknown metric {metric!r}")
    a, b = (s if isinstance(s, np.ndarray) else sentence_stats(s, refs, metric) for s in (sys_a, sys_b))
    if a.ndim != 3 or a.shape[1:] != b.shape[1:]:
        raise KdgridError(f"systems differ in sentences or statistics: {a.shape} vs {b.shape}")
    m = sacrebleu_metric(metric)
    # observed: as sacrebleu, from Python lists (exact sums); a system's = mean over its seeds
    per_a, per_b = ([m._aggregate_and_compute(s.tolist()).score for s in x] for x in (a, b))
    return m, a, b, per_a, per_b


def _scores(m, sums) -> np.ndarray:
    """Scores of rows of summed statistics; np.array infers the dtype as sacrebleu does."""
    f = m._compute_score_from_stats
    return np.array([f(row).score for row in sums])


def _seed_mean(per_seed: list[np.ndarray]) -> np.ndarray:
    """One seed: its scores unchanged (sacrebleu's dtype, for bit equality); else their mean."""
    return per_seed[0] if len(per_seed) == 1 else np.mean(np.array(per_seed, dtype=np.float64), axis=0)


def _interval(values: np.ndarray) -> tuple[float, float, float, float]:
    """sacrebleu's estimate_ci: (lower, upper, mean, half width) of the sorted values."""
    v = np.sort(values)
    lo = len(v) // 40
    lower, upper = v[lo], v[len(v) - lo - 1]
    return float(lower), float(upper), float(v.mean()), float(0.5 * (upper - lower))


def _p_value(stats: np.ndarray, observed: float, count_ties: bool) -> float:
    c = np.sum(stats >= observed - _TIE_TOLERANCE) if count_ties else np.sum(stats > observed)
    return (int(c) + 1) / (len(stats) + 1)


def _system(per_seed: list[float], resampled: np.ndarray | None = None) -> dict:
    out = {"score": float(np.mean(per_seed)), "per_seed": [float(x) for x in per_seed]}
    if resampled is not None:
        lower, upper, mean, half = _interval(resampled)
        out.update(ci=[lower, upper], bootstrap_mean=mean, half_width=half)
    return out


def _native(sums: np.ndarray, dtype) -> np.ndarray:
    """Exact float64 sums back to the statistics' own type (integers stay integers, as in
    sacrebleu's randomization sums)."""
    return np.rint(sums).astype(dtype) if dtype.kind in "iu" else sums


def _check(resamples: int):
    if resamples < 1:
        raise KdgridError(f"resamples must be positive, not {resamples}")


def paired_bootstrap(sys_a, sys_b, refs=None, metric: str = "bleu", resamples: int = 1000,
                     seed: int | None = SEED, count_ties: bool = False) -> dict:
    """Paired bootstrap resampling (Koehn 2004; sacrebleu's paired_bs). `sys_a`, `sys_b`: a list
    of hypothesis lists (one per seed; a single list of lines is one seed) or `sentence_stats`
    arrays (then `refs` may be None); the seed counts may differ. Every resample draws sentence
    indices with replacement, the same for both systems and all their seeds.

    Returns {"test", "metric", "higher_is_better", "resamples", "seed", "sentences",
    "seeds": [n_a, n_b], "a": {...}, "b": {...}, "diff", "diff_ci", "p_value"}, where a system is
    {"score" (mean over seeds of the corpus score), "per_seed", "ci" [lower, upper] (95%
    percentile), "bootstrap_mean", "half_width" (sacrebleu's "ci")}, "diff" = b - a (observed),
    "diff_ci" its 95% percentile interval, "p_value" two-sided (module docstring)."""
    _check(resamples)
    m, a, b, per_a, per_b = _prepare(sys_a, sys_b, refs, metric)
    n = a.shape[1]
    idxs = np.random.default_rng(seed).choice(n, size=(resamples, n), replace=True)
    stacked = np.concatenate([a, b]).transpose(1, 0, 2).reshape(n, -1).astype(np.float64)
    rows = (idxs + n * np.arange(resamples)[:, None]).ravel()
    counts = np.bincount(rows, minlength=resamples * n).reshape(resamples, n).astype(np.float64)
    # float32 as sacrebleu's resampled sums (exact for integer statistics below 2**24)
    sums = (counts @ stacked).astype(np.float32).reshape(resamples, len(a) + len(b), -1)
    per = [_scores(m, sums[:, j]) for j in range(len(a) + len(b))]
    star_a, star_b = _seed_mean(per[:len(a)]), _seed_mean(per[len(a):])
    d = star_b - star_a
    sample_diffs = np.abs(star_b - star_a)
    observed = abs(float(np.mean(per_a)) - float(np.mean(per_b)))
    p = _p_value(sample_diffs - sample_diffs.mean(), observed, count_ties)
    lower, upper, _, _ = _interval(d)
    return {"test": "paired_bootstrap", "metric": metric, "higher_is_better": HIGHER_IS_BETTER[metric],
            "resamples": resamples, "seed": seed, "sentences": n, "seeds": [len(a), len(b)],
            "a": _system(per_a, star_a), "b": _system(per_b, star_b),
            "diff": float(np.mean(per_b)) - float(np.mean(per_a)), "diff_ci": [lower, upper], "p_value": p}


def approximate_randomization(sys_a, sys_b, refs=None, metric: str = "bleu", resamples: int = 10000,
                              seed: int | None = SEED, count_ties: bool = False) -> dict:
    """Paired approximate randomization (Riezler and Maxwell 2005; sacrebleu's paired_ar, whose
    default is 10000 trials). Each trial swaps the two systems' outputs of a sentence with
    probability 1/2; with several seeds (as many for a as for b) one coin per sentence swaps
    seed s of a with seed s of b for every s together, and a shuffled system's score is the mean
    over its seeds. Statistic: |score(a') - score(b')| against the observed |b - a|.

    Returns {"test", "metric", "higher_is_better", "resamples", "seed", "sentences", "seeds",
    "a": {"score", "per_seed"}, "b": {...}, "diff" (b - a), "p_value"}; no intervals (take them
    from paired_bootstrap)."""
    _check(resamples)
    m, a, b, per_a, per_b = _prepare(sys_a, sys_b, refs, metric)
    if len(a) != len(b):
        raise KdgridError(f"approximate randomization pairs seeds: {len(a)} vs {len(b)}")
    n = a.shape[1]
    swap = np.random.default_rng(seed).integers(2, size=(resamples, n), dtype=bool)
    # sacrebleu: a' = keep @ a + ~keep @ b, b' = ~keep @ a + keep @ b, keep = its pos_sel
    total_b, gap = b.sum(axis=1).astype(np.float64), (a - b).astype(np.float64)
    parts_a, parts_b = [[] for _ in a], [[] for _ in a]
    for start in range(0, resamples, _CHUNK):
        keep = swap[start:start + _CHUNK].astype(np.float64)
        for s in range(len(a)):
            shuf_a = total_b[s] + keep @ gap[s]
            shuf_b = total_b[s] + a[s].sum(axis=0) - shuf_a
            parts_a[s].append(_scores(m, _native(shuf_a, a.dtype)))
            parts_b[s].append(_scores(m, _native(shuf_b, a.dtype)))
    scores_a = [np.concatenate(p) for p in parts_a]
    scores_b = [np.concatenate(p) for p in parts_b]
    stat = np.abs(_seed_mean(scores_a) - _seed_mean(scores_b))
    observed = abs(float(np.mean(per_a)) - float(np.mean(per_b)))
    return {"test": "approximate_randomization", "metric": metric,
            "higher_is_better": HIGHER_IS_BETTER[metric], "resamples": resamples, "seed": seed,
            "sentences": n, "seeds": [len(a), len(b)], "a": _system(per_a), "b": _system(per_b),
            "diff": float(np.mean(per_b)) - float(np.mean(per_a)),
            "p_value": _p_value(stat, observed, count_ties)}


def mean_sd(values) -> dict:
    """{"mean", "sd", "n"} of per-seed values: sd is the sample standard deviation (n - 1);
    with one value it is None (undefined, not 0: one seed measures no spread)."""
    v = [float(x) for x in values]
    if not v:
        raise KdgridError("mean_sd of no values")
    mean = sum(v) / len(v)
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
    return {"mean": mean, "sd": sd, "n": len(v)}
