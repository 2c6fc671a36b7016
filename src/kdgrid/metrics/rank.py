"""Spearman's rank correlation and its permutation test (the answer per student's capacity ↔
complexity summary, kdgrid.recommend)."""

from __future__ import annotations

import itertools
import random


def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]):
    """Spearman's rank correlation (average ranks for ties); None where either side is constant."""
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    vx, vy = sum((r - mx) ** 2 for r in rx), sum((r - my) ** 2 for r in ry)
    if vx == 0 or vy == 0:
        return None
    return sum((a - mx) * (b - my) for a, b in zip(rx, ry)) / (vx * vy) ** 0.5


EXACT_PERMUTATIONS = 9  # up to this many students the permutation test enumerates every ordering


def spearman_p(xs: list[float], ys: list[float], draws: int = 100_000, seed: int = 1):
    """Two-sided permutation p-value of Spearman's rho: the share of orderings of ys whose |rho| is
    at least the observed one; exact (every permutation) up to EXACT_PERMUTATIONS values, else a
    seeded Monte-Carlo estimate with `draws` orderings, counting the observed one ((k + 1) / (draws
    + 1)). None where rho is undefined."""
    rho = spearman(xs, ys)
    if rho is None:
        return None
    bar = abs(rho) - 1e-12
    if len(ys) <= EXACT_PERMUTATIONS:
        perms = list(itertools.permutations(ys))
        return sum(abs(spearman(xs, list(p)) or 0.0) >= bar for p in perms) / len(perms)
    rng, shuffled, hits = random.Random(seed), list(ys), 0
    for _ in range(draws):
        rng.shuffle(shuffled)
        hits += abs(spearman(xs, shuffled) or 0.0) >= bar
    return (hits + 1) / (draws + 1)
