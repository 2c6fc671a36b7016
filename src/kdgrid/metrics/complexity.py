"""Complexity C(d) and faithfulness F(d) of a parallel corpus from its word alignment
(Zhou, Gu & Neubig 2020, section 3).

p(y|x) is the lexical translation distribution of source word type x, estimated from alignment
links: count(x-y links) / count(links from x); unaligned words are ignored.

    C(d) = mean over source types x of H(y|x) = -sum_y p(y|x) ln p(y|x)
    F(d) = mean over source types x of KL(p_real(.|x) || p_d(.|x))

C averages over the source types the corpus links. F averages over every source type the real
data links, including those the distilled set never links ("dropped" types): leaving them out
would reward a set for losing words. Where p_d is zero (a dropped translation or a dropped type)
the KL needs a smoothed p_d (`Smoothing`):
  floor      p_d = max(count_d(x,y) / count_d(x), floor); a dropped type has p_d = floor for
             every y. Each dropped translation then costs p_real * ln(p_real / floor) (~23 nats at
             the paper-style floor 1e-10), so F mostly counts dropped rare translations.
  add_alpha  p_d = (count_d(x,y) + alpha [y in Y(x)]) / (count_d(x) + alpha |Y(x)|), Y(x) = the
             target types x links to in the real data: a proper distribution whose dropped
             translations cost in proportion to how often the teacher used x; a dropped type
             gets the uniform distribution over Y(x), KL = ln|Y(x)| - H(p_real(.|x)).
Corpora are streamed: words become integer ids, links are counted in numpy in chunks.
"""

from __future__ import annotations

import itertools
from array import array
from dataclasses import dataclass

import numpy as np

from kdgrid.corpus import iter_lines
from kdgrid.errors import KdgridError
from kdgrid.metrics.align import SYMMETRIZATION, TOKENIZER, parse_links, word_tokens

FLOOR = 1e-10
SMOOTHINGS = ("floor", "add_alpha")


@dataclass(frozen=True)
class Smoothing:
    """How F(d) treats p_d(y|x) = 0 (see the module docstring)."""

    method: str = "floor"
    floor: float = FLOOR
    alpha: float = 0.1

    def __post_init__(self):
        if self.method not in SMOOTHINGS:
            raise KdgridError(f"metrics.faithfulness.smoothing: unknown {self.method!r}; "
                              f"known: {', '.join(SMOOTHINGS)}")
        if not 0 < self.floor <= 0.01 or not self.alpha > 0:
            raise KdgridError(f"metrics.faithfulness: floor must be in (0, 0.01] and alpha > 0, got "
                              f"floor {self.floor}, alpha {self.alpha}")

    def describe(self) -> dict:
        used = {"floor": self.floor} if self.method == "floor" else {"alpha": self.alpha}
        return {"smoothing": self.method, **used}


@dataclass
class LinkTable:
    """Link counts per (source id, target id), sorted by (x, y)."""

    x: np.ndarray
    y: np.ndarray
    count: np.ndarray
    sentences: int
    target_types: int

    @property
    def links(self) -> int:
        return int(self.count.sum())

    @property
    def keys(self) -> np.ndarray:
        return (self.x << 32) | self.y

    def totals(self, n: int) -> np.ndarray:
        return np.bincount(self.x, weights=self.count, minlength=n)


class Vocab:
    """Word -> id, shared by the corpora compared, so their ids agree."""

    def __init__(self):
        self.src: dict[str, int] = {}
        self.tgt: dict[str, int] = {}


def count_links(src_path, tgt_path, links_path, vocab: Vocab, chunk: int = 4_000_000) -> LinkTable:
    xs, ys = array("q"), array("q")
    keys, counts = np.empty(0, np.int64), np.empty(0, np.int64)
    tgt_seen: set[int] = set()
    n = 0

    def flush():
        nonlocal keys, counts, xs, ys
        new = (np.frombuffer(xs, np.int64) << 32) | np.frombuffer(ys, np.int64)
        keys, inverse = np.unique(np.concatenate([keys, new]), return_inverse=True)
        weights = np.concatenate([counts, np.ones(len(new), np.int64)])
        counts = np.bincount(inverse, weights=weights).astype(np.int64)
        xs, ys = array("q"), array("q")

    files = (src_path, tgt_path, links_path)
    lines = itertools.zip_longest(*(iter_lines(f) for f in files))
    for n, (s, t, a) in enumerate(lines, start=1):
        if None in (s, t, a):  # zip would silently drop the longer files' tail
            short = ", ".join(str(f) for f, x in zip(files, (s, t, a)) if x is None)
            raise KdgridError(f"{short}: ends after line {n - 1}, before the other files of "
                              f"{', '.join(map(str, files))}; each needs one line per sentence "
                              "(realign after changing a corpus)")
        s_tok, t_tok = word_tokens(s), word_tokens(t)
        s_ids = [vocab.src.setdefault(w, len(vocab.src)) for w in s_tok]
        t_ids = [vocab.tgt.setdefault(w, len(vocab.tgt)) for w in t_tok]
        tgt_seen.update(t_ids)
        for i, j in parse_links(a):
            if i >= len(s_ids) or j >= len(t_ids):
                raise KdgridError(f"{links_path}: line {n}: link {i}-{j} is outside the sentence pair "
                                  f"({len(s_ids)} x {len(t_ids)} words); realign")
            xs.append(s_ids[i])
            ys.append(t_ids[j])
        if len(xs) >= chunk:
            flush()
    flush()
    if n == 0:
        raise KdgridError(f"{src_path}: empty corpus")
    return LinkTable(keys >> 32, keys & 0xFFFFFFFF, counts, n, len(tgt_seen))


def complexity(table: LinkTable) -> tuple[float, int]:
    """(C, number of source types averaged over)."""
    nx = int(table.x.max()) + 1 if len(table.x) else 0
    tot = table.totals(nx)
    c = table.count.astype(float)
    s = np.bincount(table.x, weights=c * np.log(c), minlength=nx)
    has = tot > 0
    entropy = np.log(tot[has]) - s[has] / tot[has]
    return (float(entropy.mean()) if has.any() else 0.0), int(has.sum())


def faithfulness(real: LinkTable, distilled: LinkTable, smoothing: Smoothing = Smoothing()
                 ) -> tuple[float, int, int, float]:
    """(F, source types averaged over, dropped types (linked in real, never in distilled), F over
    the types both link: the value before dropped types counted)."""
    nx = int(max(real.x.max(initial=-1), distilled.x.max(initial=-1))) + 1
    tot_r, tot_d = real.totals(nx), distilled.totals(nx)
    d_keys = distilled.keys
    pos = np.searchsorted(d_keys, real.keys).clip(max=max(len(d_keys) - 1, 0))
    found = (d_keys[pos] == real.keys) if len(d_keys) else np.zeros(len(real.keys), bool)
    c_d = np.where(found, distilled.count[pos] if len(d_keys) else 0, 0).astype(float)
    p_r = real.count / tot_r[real.x]
    tot_d_x = tot_d[real.x]
    if smoothing.method == "floor":
        with np.errstate(divide="ignore", invalid="ignore"):
            p_d = np.where(tot_d_x > 0, c_d / tot_d_x, 0.0)
        p_d = np.maximum(p_d, smoothing.floor)
    else:  # add_alpha over Y(x): the real data's target types of x (one real key each)
        support = np.bincount(real.x, minlength=nx)[real.x]
        p_d = (c_d + smoothing.alpha) / (tot_d_x + smoothing.alpha * support)
    terms = p_r * (np.log(p_r) - np.log(p_d))
    kl = np.bincount(real.x, weights=terms, minlength=nx)
    use, both = tot_r > 0, (tot_r > 0) & (tot_d > 0)
    mean = lambda m: float(kl[m].mean()) if m.any() else 0.0  # noqa: E731
    return mean(use), int(use.sum()), int((use & ~both).sum()), mean(both)


def data_metrics(src, real, real_links, distilled=None, distilled_links=None,
                 smoothing: Smoothing = Smoothing()) -> dict:
    """C of the real data, and for a distilled set its C and its F against the real data."""
    vocab = Vocab()
    real_t = count_links(src, real, real_links, vocab)
    c_real, n_real = complexity(real_t)
    out = {"sentences": real_t.sentences, "source_types": len(vocab.src)}
    if distilled is None:
        out.update({"complexity": c_real, "faithfulness": 0.0, "complexity_types": n_real,
                    "links": real_t.links, "target_types": real_t.target_types})
    else:
        dist_t = count_links(src, distilled, distilled_links, vocab)
        if dist_t.sentences != real_t.sentences:
            raise KdgridError(f"{distilled}: {dist_t.sentences} lines but {real} has {real_t.sentences}")
        c, n = complexity(dist_t)
        f, n_f, dropped, f_both = faithfulness(real_t, dist_t, smoothing)
        out.update({"complexity": c, "faithfulness": f, "complexity_types": n,
                    "faithfulness_types": n_f, "faithfulness_dropped_types": dropped,
                    "faithfulness_without_dropped_types": f_both,
                    "links": dist_t.links, "target_types": dist_t.target_types,
                    "real": {"complexity": c_real, "links": real_t.links, "target_types": real_t.target_types,
                             "note": "the real data's side of the same joint alignment run"}})
    out["choices"] = {"aligner": "eflomal (model 3, HMM+fertility), both directions; unseeded, so "
                                 "values vary slightly between runs",
                      "symmetrization": SYMMETRIZATION, "tokenizer": TOKENIZER,
                      "p(y|x)": "count(x-y links) / count(links from x); unaligned words ignored",
                      "log_base": "e",
                      "average": "C: over the source types the corpus links; F: over the source "
                                 "types the real data links, types the distilled set drops included",
                      "faithfulness": smoothing.describe(), "joint_alignment": distilled is not None}
    return out
