"""Labels for free: a few-class set of clean and noisy sentence pairs made from the training pairs.

Every input pair gets exactly one kind, so row i of the output is built from row i of the input
(the caller can keep whatever else it holds per row, e.g. the target language). The number of
rows of each kind is the share times the corpus size, rounded by largest remainder so the counts
add up; which rows get which kind is drawn at random from the rows the kind can apply to.

Kinds (KINDS): clean (unchanged), misaligned (the target of another random sentence), truncated
(target cut to a random 20-60% prefix of its words, at least one word kept and one removed),
copy (the source copied as target), shuffled (the target's words permuted, always into another
order), wrong_language (multi-way corpora: the target of the same source in another language).

A wrong-language pair is word for word a clean pair of the other language: it is only wrong
given the language the row was meant to have, so a classifier can learn it only when that
language reaches it (e.g. as a tag on the source); the caller decides.

Two callers: the filter's labelled sets (make_labelled on a sample), and corpus.noise, which
turns a share of the prepared training data itself into noise (inject_noise, for `prepare`).
"""

from __future__ import annotations

import numpy as np

from kdgrid.errors import KdgridError

KINDS = ("clean", "misaligned", "truncated", "copy", "shuffled", "wrong_language")
CLEAN = "clean"
NOISY = "noisy"
TRUNCATE_SHARE = (0.2, 0.6)  # the kept prefix, as a share of the target's words


def class_names(kinds: dict[str, float]) -> list[str]:
    """The few-class label set of a `kinds` config: clean first, then the kinds with a share, in
    KINDS order (so class indices do not depend on the config's key order)."""
    check_kinds(kinds)
    return [k for k in KINDS if kinds.get(k, 0) > 0 or k == CLEAN]


def binary(labels: list[str]) -> list[str]:
    """The clean/noisy labels of few-class labels."""
    return [CLEAN if label == CLEAN else NOISY for label in labels]


def label_ids(labels: list[str], classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise KdgridError(f"labels {unknown} are not among the classes {classes}")
    return np.array([index[label] for label in labels], dtype=np.int64)


def check_kinds(kinds: dict[str, float]) -> None:
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise KdgridError(f"noise kinds: unknown kind(s) {', '.join(unknown)}; "
                          f"the kinds are {', '.join(KINDS)}")
    bad = [k for k, v in kinds.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0]
    if bad:
        raise KdgridError(f"noise kinds: the share of {', '.join(bad)} must be a number >= 0")
    total = float(sum(kinds.values()))
    if abs(total - 1.0) > 1e-6:
        listed = ", ".join(f"{k} {v:g}" for k, v in kinds.items())
        raise KdgridError(f"noise kinds: the shares must sum to 1, got {total:g} ({listed})")


def training_kinds(kinds: dict[str, float], holdout: list[str]) -> dict[str, float]:
    """`kinds` without the held-out noise kinds, the remaining noise kinds scaled up to the same
    total noise share (the clean share, and so the clean/noisy balance, stays as configured)."""
    check_kinds(kinds)
    bad = [k for k in holdout if k == CLEAN or kinds.get(k, 0) <= 0]
    if bad:
        raise KdgridError(f"held-out kind(s) {bad} are not noise kinds with a share "
                          f"(kinds: {', '.join(k for k, v in kinds.items() if v > 0)})")
    kept = {k: v for k, v in kinds.items() if k not in holdout and v > 0}
    noise, left = 1.0 - kinds.get(CLEAN, 0.0), sum(v for k, v in kept.items() if k != CLEAN)
    if left <= 0:
        raise KdgridError(f"holding out {', '.join(holdout)} leaves no noise kind to learn from")
    return {k: (v if k == CLEAN else v * noise / left) for k, v in kept.items()}


def share_counts(kinds: dict[str, float], n: int) -> dict[str, int]:
    """Rows per kind: floor(share * n), the rows left over going to the largest remainders
    (ties in KINDS order), so the counts sum to n exactly."""
    names = [k for k in KINDS if kinds.get(k, 0) > 0]
    exact = {k: kinds[k] * n for k in names}
    counts = {k: int(np.floor(exact[k])) for k in names}
    left = n - sum(counts.values())
    for k in sorted(names, key=lambda k: -(exact[k] - counts[k]))[:left]:
        counts[k] += 1
    return counts


# -- the kinds, one row at a time --------------------------------------------------------------
def _truncate(words: list[str], rng) -> str:
    keep = int(round(rng.uniform(*TRUNCATE_SHARE) * len(words)))
    return " ".join(words[: min(max(keep, 1), len(words) - 1)])


def _shuffle(words: list[str], rng) -> str:
    # Retrying is quick: with at least two distinct words a random order is the original one
    # with probability at most 1/2.
    while True:
        order = rng.permutation(len(words))
        out = [words[i] for i in order]
        if out != words:
            return " ".join(out)


def _applies(kind: str, i: int, src, tgt, others) -> bool:
    """Whether `kind` can change row i (a copy of an identical source, a shuffle of one word...
    would leave a clean pair labelled noisy)."""
    words = tgt[i].split()
    if kind == "truncated":
        return len(words) >= 2
    if kind == "shuffled":
        return len(set(words)) >= 2
    if kind == "copy":
        return src[i].strip() != tgt[i].strip()
    if kind == "wrong_language":
        return bool(others[i])
    return True  # clean; misaligned is checked when its partner is drawn


def make_labelled(src_lines: list[str], tgt_lines: list[str], kinds: dict[str, float], seed: int,
                  langs: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """(src, tgt, labels): every row of the input turned into the kind its label names.

    kinds: {kind: share}, shares summing to 1. langs: the target language of each row
    (multi-way corpora), needed by wrong_language. Deterministic for a seed."""
    check_kinds(kinds)
    n = len(src_lines)
    if len(tgt_lines) != n:
        raise KdgridError(f"make_labelled: {n} source lines but {len(tgt_lines)} target lines")
    if n == 0:
        raise KdgridError("make_labelled: no pairs to label")
    counts = share_counts(kinds, n)
    if counts.get("wrong_language") and langs is None:
        raise KdgridError("noise kind wrong_language needs a multi-way corpus (the target language "
                          "of each training pair); give it a share of 0 for this corpus")
    if langs is not None and len(langs) != n:
        raise KdgridError(f"make_labelled: {n} pairs but {len(langs)} languages")
    if counts.get("misaligned") and len(set(tgt_lines)) < 2:
        raise KdgridError("noise kind misaligned needs at least two different targets")
    rng = np.random.default_rng(seed)
    others = _other_languages(src_lines, tgt_lines, langs) if counts.get("wrong_language") else [[] for _ in range(n)]

    # The most constrained kinds draw their rows first, so the free ones (clean, misaligned)
    # take what is left and a corpus of short lines fails only when a kind truly cannot fit.
    label: list[str | None] = [None] * n
    order = sorted(counts, key=lambda k: (k in (CLEAN, "misaligned"), KINDS.index(k)))
    for kind in order:
        free = [i for i in rng.permutation(n) if label[i] is None and _applies(kind, i, src_lines, tgt_lines, others)]
        if len(free) < counts[kind]:
            raise KdgridError(f"noise kind {kind}: {counts[kind]} pairs wanted but only {len(free)} "
                              "of the corpus can take it (too many one-word or copied lines); "
                              "lower its share")
        for i in free[: counts[kind]]:
            label[i] = kind

    src, tgt = list(src_lines), list(tgt_lines)
    for i in range(n):  # in row order, so each row's random draws depend on the seed alone
        kind = label[i]
        if kind == "misaligned":
            tgt[i] = tgt_lines[_partner(i, src_lines, tgt_lines, rng)]
        elif kind == "truncated":
            tgt[i] = _truncate(tgt_lines[i].split(), rng)
        elif kind == "copy":
            tgt[i] = src_lines[i]
        elif kind == "shuffled":
            tgt[i] = _shuffle(tgt_lines[i].split(), rng)
        elif kind == "wrong_language":
            tgt[i] = tgt_lines[others[i][int(rng.integers(len(others[i])))]]
    return src, tgt, label


def inject_noise(train: dict, spec: dict) -> tuple[list[str], dict]:
    """corpus.noise: {share, kinds: {kind: share of the noise}, seed}: turn `share` of the prepared
    training pairs into noise, in place (train's src/tgt lists; its lang list, if any, feeds
    wrong_language); returns each row's kind and the counts per kind."""
    share, kinds = spec["share"], spec["kinds"]
    mixed = {CLEAN: 1.0 - share, **{k: share * v for k, v in kinds.items()}}
    try:
        train["src"], train["tgt"], labels = make_labelled(train["src"], train["tgt"], mixed, spec["seed"],
                                                           train.get("lang"))
    except KdgridError as e:  # name the config key the shares come from
        raise KdgridError(f"corpus.noise: {e}") from None
    counts = {k: labels.count(k) for k in dict.fromkeys([CLEAN, *kinds])}
    return labels, {"share": share, "seed": spec["seed"], "pairs": len(labels), "per_kind": counts}


def _partner(i: int, src, tgt, rng) -> int:
    """Another row whose target differs from row i's, and whose source does too (in a multi-way
    corpus the same source's other rows are translations, not misalignments)."""
    n = len(tgt)
    for _ in range(100):
        j = int(rng.integers(n))
        if tgt[j] != tgt[i] and src[j] != src[i]:
            return j
    candidates = [j for j in range(n) if tgt[j] != tgt[i] and src[j] != src[i]]
    if not candidates:
        raise KdgridError(f"noise kind misaligned: no other sentence for pair {i + 1} "
                          "(every other pair has the same source or target)")
    return candidates[int(rng.integers(len(candidates)))]


def _other_languages(src, tgt, langs) -> list[list[int]]:
    """For each row, the rows with the same source whose language differs (and whose target
    differs, so the wrong-language pair really changes)."""
    by_source: dict[str, list[int]] = {}
    for i, s in enumerate(src):
        by_source.setdefault(s, []).append(i)
    return [[j for j in by_source[s] if langs[j] != langs[i] and tgt[j] != tgt[i]]
            for i, s in enumerate(src)]
