"""Speed of the data metrics on N synthetic pairs (default 100k): a real set (three languages mixed)
and a distilled set (one language) over the same sources, aligned jointly as the workflow does.

Prints pairs/s for each stage: 13a tokenization, eflomal itself (both directions), the
grow-diag-final-and symmetrization, and the metric computation (streamed id counting + C + F),
plus a reference for the counting: a plain Counter over (source word, target word) tuples,
measured in the same run.

    python bench/metrics_speed.py [--pairs 100000] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from kdgrid import synthetic
from kdgrid.corpus import iter_lines, write_lines
from kdgrid.metrics.align import grow_diag_final_and, parse_links, word_tokens
from kdgrid.metrics.complexity import data_metrics


def timed(label, n, fn):
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    print(f"{label:<46} {n / seconds:>10,.0f} pairs/s  ({seconds:6.1f} s for {n:,} pairs)")
    return out, seconds


def counter_reference(src, tgt, links):
    """The naive way: a Counter of word-string tuples (what the numpy path replaces)."""
    counts = Counter()
    for s, t, a in zip(iter_lines(src), iter_lines(tgt), iter_lines(links)):
        s_tok, t_tok = word_tokens(s), word_tokens(t)
        counts.update((s_tok[i], t_tok[j]) for i, j in parse_links(a))
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    import eflomal

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    spec = synthetic.SyntheticSpec(seed=11, train=args.pairs, valid=1, test=1, vocab_size=300)
    src, tgts = synthetic.generate_multiway(spec)["train"]
    rng = random.Random(0)
    langs = sorted(tgts)
    real = [tgts[rng.choice(langs)][i] for i in range(len(src))]
    distilled = tgts[langs[0]]
    n = 2 * len(src)  # pairs aligned in the joint run
    print(f"{len(src):,} sources, real (3 languages mixed) + distilled (1 language), {args.threads} threads")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_lines(tmp / "src", src)
        write_lines(tmp / "real", real)
        write_lines(tmp / "dist", distilled)

        def tokenize():
            with open(tmp / "s.tok", "w") as fs, open(tmp / "t.tok", "w") as ft:
                for tgt in ("real", "dist"):
                    for s, t in zip(iter_lines(tmp / "src"), iter_lines(tmp / tgt)):
                        fs.write(" ".join(word_tokens(s)) + "\n")
                        ft.write(" ".join(word_tokens(t)) + "\n")

        timed("13a tokenization (both sides)", n, tokenize)

        def run_eflomal():
            with open(tmp / "s.tok") as fs, open(tmp / "t.tok") as ft:
                eflomal.Aligner(n_samplers=3).align(fs, ft, links_filename_fwd=str(tmp / "fwd"),
                                                    links_filename_rev=str(tmp / "rev"))

        _, eflomal_s = timed("eflomal, both directions (3 samplers)", n, run_eflomal)

        def symmetrize():
            with open(tmp / "fwd") as ff, open(tmp / "rev") as fr:
                lines = [" ".join(f"{i}-{j}" for i, j in grow_diag_final_and(parse_links(f), parse_links(r)))
                         for f, r in zip(ff, fr)]
            write_lines(tmp / "real.links", lines[: len(src)])
            write_lines(tmp / "dist.links", lines[len(src):])

        _, sym_s = timed("grow-diag-final-and", n, symmetrize)
        m, metric_s = timed("metrics: tokenize, count ids (numpy), C and F", n, lambda: data_metrics(
            tmp / "src", tmp / "real", tmp / "real.links", tmp / "dist", tmp / "dist.links"))
        _, ref_s = timed("reference: Counter of word tuples (count only)", n, lambda: (
            counter_reference(tmp / "src", tmp / "real", tmp / "real.links"),
            counter_reference(tmp / "src", tmp / "dist", tmp / "dist.links")))
    print(f"C(real) {m['real']['complexity']:.3f}  C(distilled) {m['complexity']:.3f}  F {m['faithfulness']:.3f}")
    print(f"metric computation excluding eflomal (symmetrize + metrics): "
          f"{n / (sym_s + metric_s):,.0f} pairs/s; eflomal: {n / eflomal_s:,.0f} pairs/s; "
          f"numpy counting + C + F vs Counter reference (count only): {ref_s / metric_s:.2f}x")


if __name__ == "__main__":
    main()
