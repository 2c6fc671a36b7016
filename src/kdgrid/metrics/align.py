"""Word alignment with eflomal on word-level text, symmetrized with grow-diag-final-and.

Word level = sacrebleu's 13a tokenizer (mteval-style, the one BLEU uses) on the detokenized
text, then lowercased. eflomal aligns both directions; it has no symmetrization of its own, so
grow-diag-final-and (Koehn et al. 2005) is implemented here. Several corpora can be aligned in
one joint run (so they share one model) and their links are written back per corpus.

eflomal seeds its sampler from /dev/urandom and has no seed option: links, and so C(d) and F(d),
vary slightly from run to run. The output JSON records this.
"""

from __future__ import annotations

import bisect
import os
import sys
import tempfile
import time
from pathlib import Path

from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from kdgrid.corpus import iter_lines
from kdgrid.errors import KdgridError, atomic_output
from kdgrid.progress import log

TOKENIZER = "13a (sacrebleu), lowercased"
SYMMETRIZATION = "grow-diag-final-and"
_tok13a = Tokenizer13a()
_NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def word_tokens(line: str) -> list[str]:
    return _tok13a(line).lower().split()


def parse_links(line: str) -> list[tuple[int, int]]:
    """Pharaoh 'i-j' pairs (source index, target index)."""
    out = []
    for item in line.split():
        i, _, j = item.partition("-")
        out.append((int(i), int(j)))
    return out


def grow_diag_final_and(fwd, rev) -> list[tuple[int, int]]:
    """Koehn's heuristic: start from the intersection; repeatedly add union points that neighbour
    (also diagonally) an alignment point and cover a still unaligned word, visiting points in
    (source, target) order; then add directional points whose both words are unaligned.
    Only union points can be added, so the sentence lengths are not needed."""
    fwd, rev = set(fwd), set(rev)
    union = fwd | rev
    if not union:
        return []
    n_src, n_tgt = 1 + max(i for i, _ in union), 1 + max(j for _, j in union)
    points = sorted(fwd & rev)
    chosen = set(points)
    src_done, tgt_done = [False] * n_src, [False] * n_tgt
    for i, j in points:
        src_done[i] = tgt_done[j] = True
    grown = True
    while grown:
        grown, k = False, 0
        while k < len(points):
            i, j = points[k]
            for di, dj in _NEIGHBOURS:
                p = (i + di, j + dj)
                if p in union and p not in chosen and (not src_done[p[0]] or not tgt_done[p[1]]):
                    chosen.add(p)
                    src_done[p[0]] = tgt_done[p[1]] = True
                    pos = bisect.bisect_left(points, p)
                    points.insert(pos, p)
                    if pos <= k:  # inserted before the current point: keep pointing at it
                        k += 1
                    grown = True
            k += 1
    for direction in (fwd, rev):  # final-and
        for i, j in sorted(direction):
            if not src_done[i] and not tgt_done[j]:
                chosen.add((i, j))
                src_done[i] = tgt_done[j] = True
    return sorted(chosen)


def align(pairs: list[tuple[str, str, str]], threads: int = 1, n_samplers: int = 3,
          rel_iterations: float = 1.0) -> dict:
    """Align (src_file, tgt_file, out_links_file) pairs in one eflomal run; write symmetrized links
    per pair (one line per sentence pair). Returns counts for the log/JSON."""
    import eflomal

    os.environ["OMP_NUM_THREADS"] = str(max(1, threads))  # eflomal's binary runs OpenMP samplers
    with tempfile.TemporaryDirectory(prefix="kdgrid-align-") as tmp:
        tmp = Path(tmp)
        sizes = []
        with open(tmp / "src", "w", encoding="utf-8") as fs, open(tmp / "tgt", "w", encoding="utf-8") as ft:
            for src_path, tgt_path, _ in pairs:
                n = 0
                for s, t in _zip_strict(src_path, tgt_path):
                    s_tok, t_tok = word_tokens(s), word_tokens(t)
                    fs.write(" ".join(s_tok) + "\n")
                    ft.write(" ".join(t_tok) + "\n")
                    n += 1
                sizes.append(n)
        log(f"eflomal: aligning {sum(sizes)} sentence pairs ({' + '.join(map(str, sizes))}) jointly, "
            f"{n_samplers} samplers, {threads} threads")
        aligner = eflomal.Aligner(n_samplers=n_samplers, rel_iterations=rel_iterations)
        start = time.perf_counter()
        with open(tmp / "src", encoding="utf-8") as fs, open(tmp / "tgt", encoding="utf-8") as ft:
            aligner.align(fs, ft, links_filename_fwd=str(tmp / "fwd"), links_filename_rev=str(tmp / "rev"))
        sys.stderr.flush()
        log(f"eflomal: aligned in {time.perf_counter() - start:.1f}s; symmetrizing (grow-diag-final-and)")
        links = 0
        with open(tmp / "fwd", encoding="utf-8") as ff, open(tmp / "rev", encoding="utf-8") as fr:
            line_pairs = zip(ff, fr)
            for (_, _, out_path), n in zip(pairs, sizes):
                with atomic_output(out_path) as out:
                    for _ in range(n):
                        f_line, r_line = next(line_pairs)
                        sym = grow_diag_final_and(parse_links(f_line), parse_links(r_line))
                        out.write(" ".join(f"{i}-{j}" for i, j in sym) + "\n")
                        links += len(sym)
    log(f"align: {links} links written to {', '.join(str(p[2]) for p in pairs)}")
    return {"sentences": sizes, "links": links}


def _zip_strict(src_path, tgt_path):
    src, tgt = iter_lines(src_path), iter_lines(tgt_path)
    n = 0
    for s in src:
        t = next(tgt, None)
        if t is None:
            raise KdgridError(f"{src_path} has more lines than {tgt_path} (from line {n + 1})")
        n += 1
        yield s, t
    if next(tgt, None) is not None:
        raise KdgridError(f"{tgt_path} has more lines than {src_path} ({n})")
