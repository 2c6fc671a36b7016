"""Complexity C(d) and faithfulness F(d) of a parallel corpus from its word alignment
(Zhou, Gu & Neubig 2020, section 3).

p(y|x) is the lexical translation distribution of source word type x, estimated from alignment
links: count(x-y links) / count(links from x); unaligned words are ignored.

    C(d) = mean over source types x of H(y|x) = -sum_y p(y|x) ln p(y|x)
    F(d) = mean over source types x of KL(p_real(.|x) || p_d(.|x)),  p_d floored at `floor`

Both average over source types with at least one link (in both corpora, for F). Corpora are
streamed: words become integer ids, links are counted in numpy in chunks.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np

from kdgrid.corpus import iter_lines
from kdgrid.errors import KdgridError
from kdgrid.metrics.align import SYMMETRIZATION, TOKENIZER, parse_links, word_tokens

FLOOR = 1e-10


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

    lines = zip(iter_lines(src_path), iter_lines(tgt_path), iter_lines(links_path))
    for n, (s, t, a) in enumerate(lines, start=1):
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


def faithfulness(real: LinkTable, distilled: LinkTable, floor: float = FLOOR) -> tuple[float, int, int]:
    """(F, source types averaged over, source types skipped: linked in real but not distilled)."""
    nx = int(max(real.x.max(initial=-1), distilled.x.max(initial=-1))) + 1
    tot_r, tot_d = real.totals(nx), distilled.totals(nx)
    d_keys = distilled.keys
    pos = np.searchsorted(d_keys, real.keys).clip(max=max(len(d_keys) - 1, 0))
    found = (d_keys[pos] == real.keys) if len(d_keys) else np.zeros(len(real.keys), bool)
    c_d = np.where(found, distilled.count[pos] if len(d_keys) else 0, 0).astype(float)
    p_r = real.count / tot_r[real.x]
    with np.errstate(divide="ignore", invalid="ignore"):
        p_d = np.where(tot_d[real.x] > 0, c_d / tot_d[real.x], 0.0)
    terms = p_r * (np.log(p_r) - np.log(np.maximum(p_d, floor)))
    kl = np.bincount(real.x, weights=terms, minlength=nx)
    use = (tot_r > 0) & (tot_d > 0)
    skipped = int(((tot_r > 0) & (tot_d == 0)).sum())
    return (float(kl[use].mean()) if use.any() else 0.0), int(use.sum()), skipped


def data_metrics(src, real, real_links, distilled=None, distilled_links=None, floor: float = FLOOR) -> dict:
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
        f, n_f, skipped = faithfulness(real_t, dist_t, floor)
        out.update({"complexity": c, "faithfulness": f, "complexity_types": n,
                    "faithfulness_types": n_f, "faithfulness_skipped_types": skipped,
                    "links": dist_t.links, "target_types": dist_t.target_types,
                    "real": {"complexity": c_real, "links": real_t.links, "target_types": real_t.target_types,
                             "note": "the real data's side of the same joint alignment run"}})
    out["choices"] = {"aligner": "eflomal (model 3, HMM+fertility), both directions; unseeded, so "
                                 "values vary slightly between runs",
                      "symmetrization": SYMMETRIZATION, "tokenizer": TOKENIZER,
                      "p(y|x)": "count(x-y links) / count(links from x); unaligned words ignored",
                      "log_base": "e", "average": "over source types with at least one link "
                                                  "(in both corpora for F)",
                      "floor": floor, "joint_alignment": distilled is not None}
    return out
