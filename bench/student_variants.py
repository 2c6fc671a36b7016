"""Student-training variants of one column across seeds (issue 22, run 3): each variant's test BLEU
mean ± sd over seeds, a paired test against the plain student (pooled over seeds and per seed, as
grid.md's; kdgrid.selection's verdict), and its cost from the jobs' Snakemake benchmarks: training
wall and CPU seconds per update (the whole job over its updates: start-up and validation included,
the same for every variant) and peak resident memory.

    python bench/student_variants.py --results results/demo --column cpu_s.beam \
        --students nat_s nat_s_init nat_s_fkl nat_s_rkl nat_s_okd --seeds 1 2 3 [--targets]

The first student is the plain one the others are compared with. Runs follow the workflow's
naming: seed 1 (the students' own seed) is `<student>`, seed N `<student>.seed<N>`. `--targets`
prints the files to ask Snakemake for instead (the cells of this column only).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from kdgrid.corpus import read_lines
from kdgrid.costs import read_benchmark
from kdgrid.metrics import significance
from kdgrid.selection import verdict


def run_name(student: str, seed: int, own: int) -> str:
    return student if seed == own else f"{student}.seed{seed}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True)
    ap.add_argument("--column", required=True)
    ap.add_argument("--students", nargs="+", required=True, help="the plain student first")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--own-seed", type=int, default=1, help="student.train.seed: the run without a suffix")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--targets", action="store_true")
    a = ap.parse_args()
    R = Path(a.results)
    runs = {s: [run_name(s, k, a.own_seed) for k in a.seeds] for s in a.students}
    if a.targets:
        print(" ".join(f"{R}/students/{r}/{a.column}/{f}" for rs in runs.values() for r in rs
                       for f in ("scores.json", "valid.scores.json")))
        return
    refs = [read_lines(R / "data" / "test.tgt")]
    stats, rows = {}, {}
    for s, rs in runs.items():
        scores = [json.loads((R / "students" / r / a.column / "scores.json").read_text()) for r in rs]
        valid = [json.loads((R / "students" / r / a.column / "valid.scores.json").read_text())["bleu"] for r in rs]
        bench = [read_benchmark(R / "benchmarks" / "train_student" / f"{r}.{a.column}.tsv") for r in rs]
        updates = [sc.get("updates") for sc in scores]
        if not all(updates) or any(b["cpu"] is None or b["rss"] is None for b in bench):
            raise SystemExit(f"{s}: a run without its update count (scores.json) or its CPU time and memory "
                             "(benchmark TSV); rerun it")
        stats[s] = significance.sentence_stats([read_lines(R / "students" / r / a.column / "test.hyp") for r in rs],
                                               refs)
        bleu = [sc["bleu"] for sc in scores]
        rows[s] = {"bleu": bleu, "valid": valid, "updates": updates,
                   "wall_ms": statistics.mean(b["wall"] / u * 1000 for b, u in zip(bench, updates)),
                   "cpu_ms": statistics.mean(b["cpu"] / u * 1000 for b, u in zip(bench, updates)),
                   "rss": max(b["rss"] for b in bench)}
    plain = a.students[0]
    n = len(a.seeds)
    print(f"column {a.column}, seeds {a.seeds}; paired bootstrap ({a.resamples} resamples) against {plain}, "
          "pooled over seeds and per seed; verdict as grid.md's (pooled and every seed, p < 0.05, one sign)\n")
    print("| student | test BLEU mean ± sd | per seed | valid BLEU | Δ vs plain [95% CI] | p pooled | p per seed "
          "| verdict | updates | wall ms/update | CPU ms/update | peak RSS MB |")
    print("|---|---:|---|---:|---:|---:|---|---|---:|---:|---:|---:|")
    for s in a.students:
        r = rows[s]
        m = significance.mean_sd(r["bleu"])
        cells = [f"{m['mean']:.2f} ± {m['sd']:.2f}" if m["sd"] is not None else f"{m['mean']:.2f}",
                 ", ".join(f"{b:.2f}" for b in r["bleu"]), f"{statistics.mean(r['valid']):.2f}"]
        if s == plain:
            cells += ["", "", "", "(plain)"]
        else:
            pooled = significance.paired_bootstrap(stats[plain], stats[s], None, "bleu", a.resamples,
                                                   count_ties=True)
            per = [significance.paired_bootstrap(stats[plain][k:k + 1], stats[s][k:k + 1], None, "bleu",
                                                 a.resamples, count_ties=True) for k in range(n)]
            lo, hi = pooled["diff_ci"]
            cells += [f"{pooled['diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]", f"{pooled['p_value']:.3f}",
                      ", ".join(f"{p['p_value']:.3f}" for p in per),
                      verdict(pooled, [{"p_value": p["p_value"], "diff": p["diff"]} for p in per], "bleu", 0.05)]
        cells += [f"{statistics.mean(r['updates']):.0f}", f"{r['wall_ms']:.0f}", f"{r['cpu_ms']:.0f}",
                  f"{r['rss']:.0f}"]
        print(f"| {s} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
