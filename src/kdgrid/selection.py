"""Which column each student is recommended, chosen without looking at the test set, and which
columns the test set cannot tell apart from it.

- **Selection on valid.** A student's chosen column is the one with the best mean (over seeds)
  validation score in `metric` (config `report.select_metric`: bleu, chrf, chrfpp or ter; TER lower
  is better; ties: the earlier column). Only where a scored column has no valid scores (a grid
  finished before they existed) is it chosen on test, and the answer says so. The reported number
  is that column's TEST score, never the maximum over test scores (which is biased upward).
- **Paired tests on test.** The chosen column is compared with every other column on the saved
  test hypotheses: paired bootstrap resampling over sentences (kdgrid.metrics.significance,
  sacrebleu's paired_bs; approximate randomization with `test: ar`), pooled over seeds (a system's
  score on each resample is the mean over its seeds) and per seed (seeds both columns have).
  Ties in the resampled statistic count as extreme, so identical outputs get p = 1.
- A column is **worse** (or **better on test**: valid and test disagree; reported, not chosen)
  only when the pooled test says so (p < `alpha`, 0.05) AND every per-seed test does, with the
  same sign: the sentence bootstrap holds the trained models fixed, so the seed-to-seed spread
  enters a verdict only through this agreement. Otherwise the column is **tied** with the chosen
  one. Each comparison is at `alpha` (no multiple-comparison correction: with 14 other columns,
  one "better on test" is expected by chance about half the time at 0.05).
"""

from __future__ import annotations

from kdgrid.corpus import read_lines
from kdgrid.metrics import significance
from kdgrid.metrics.bleu import HIGHER_IS_BETTER, METRICS

ALPHA = 0.05
RESAMPLES = 1000
TESTS = ("bs", "ar")


def _cell_score(cell: dict, metric: str, split: str):
    if split == "valid":
        return (cell.get("valid") or {}).get(metric)
    return cell.get(metric)


def ranking(grid: dict, student: str, metric: str = "bleu") -> tuple[list[str], str]:
    """The student's scored columns, best first by mean valid `metric` (grid order on ties), and
    the split that ranked them ("valid", or "test" where a scored column lacks valid scores)."""
    if metric not in METRICS:
        raise ValueError(f"report.select_metric must be one of {', '.join(METRICS)}, got {metric!r}")
    row = grid["cells"][student]
    scored = [c for c in grid["columns"] if row.get(c) is not None and row[c].get(metric) is not None]
    split = "valid" if scored and all(_cell_score(row[c], metric, "valid") is not None for c in scored) else "test"
    sign = -1 if HIGHER_IS_BETTER[metric] else 1
    order = {c: i for i, c in enumerate(grid["columns"])}
    return sorted(scored, key=lambda c: (sign * _cell_score(row[c], metric, split), order[c])), split


def verdict(pooled: dict, per_seed: list[dict], metric: str, alpha: float) -> str:
    """worse / better when the pooled test and every per-seed test are significant with one sign;
    tied otherwise."""
    sign = lambda d: (d > 0) == HIGHER_IS_BETTER[metric]  # noqa: E731  (True: the column is better)
    tests = [pooled, *per_seed]
    if any(t["p_value"] >= alpha or t["diff"] == 0 for t in tests) or len({sign(t["diff"]) for t in tests}) > 1:
        return "tied"
    return "better" if sign(pooled["diff"]) else "worse"


def _seed_pairs(a: list[tuple], b: list[tuple]) -> list[tuple[int, int, object]]:
    """(i, j, label) of the runs of two columns that share a student seed and, where both columns
    have teacher replicas (grid.teacher_seeds), a teacher seed; a column without replicas (raw)
    pairs with each replica. The label is the seed, or `<seed>/t<teacher seed>`."""
    out = []
    for i, (ta, sa) in enumerate(a):
        for j, (tb, sb) in enumerate(b):
            if sa is None or sa != sb or (ta is not None and tb is not None and ta != tb):
                continue
            t = ta if ta is not None else tb
            out.append((i, j, sa if t is None else f"{sa}/t{t}"))
            if ta is None and tb is None:
                break
    return out


def _hyps(cell: dict) -> list[list[str]] | None:
    """The test hypotheses of every seed of a cell, or None where one is missing."""
    paths = [r.get("hyp") for r in cell.get("replicas", [cell])]
    return None if not paths or None in paths else [read_lines(p) for p in paths]


def analyse(grid: dict, refs: list[list[str]], metric: str = "bleu", alpha: float = ALPHA,
            resamples: int = RESAMPLES, test: str = "bs", seed: int = significance.SEED) -> dict:
    """Per student: {"chosen", "runner_up", "selected_on", "metric", "tests": {column: result}},
    result = the pooled test of column against chosen (significance's dict: diff = column -
    chosen, p_value, CIs) with "per_seed" [{seed, p_value, diff}] and "verdict" (tied | worse |
    better). A student whose cells lack test hypotheses gets no "tests" (None)."""
    if test not in TESTS:
        raise ValueError(f"report.significance.test must be one of {', '.join(TESTS)}, got {test!r}")
    run = significance.paired_bootstrap if test == "bs" else significance.approximate_randomization
    n = resamples
    out = {}
    for s in grid["students"]:
        order, split = ranking(grid, s, metric)
        entry = {"chosen": order[0] if order else None, "runner_up": order[1] if len(order) > 1 else None,
                 "selected_on": split, "metric": metric, "alpha": alpha, "test": test, "resamples": n,
                 "order": order, "tests": None}
        row = grid["cells"][s]
        hyps = {c: _hyps(row[c]) for c in order}
        if order and all(h is not None for h in hyps.values()):
            stats = {c: significance.sentence_stats(h, refs, metric) for c, h in hyps.items()}
            best = order[0]
            keys = {c: [(r.get("teacher_seed"), r.get("seed")) for r in row[c].get("replicas", [row[c]])]
                    for c in order}
            entry["tests"] = {}
            for c in order[1:]:
                pairs = _seed_pairs(keys[best], keys[c])
                a, b = stats[best], stats[c]
                if test == "ar" and len(a) != len(b) and pairs:  # randomization swaps outputs run by run:
                    a, b = a[[i for i, _, _ in pairs]], b[[j for _, j, _ in pairs]]  # pair them (teacher seeds)
                r = run(a, b, None, metric, n, seed, count_ties=True)
                per_seed = []
                for k, j, label in pairs:
                    one = run(stats[best][k:k + 1], stats[c][j:j + 1], None, metric, n, seed, count_ties=True)
                    per_seed.append({"seed": label, "p_value": one["p_value"], "diff": one["diff"]})
                outcome = verdict(r, per_seed, metric, alpha)
                entry["tests"][c] = {**r, "per_seed": per_seed, "verdict": outcome}
        out[s] = entry
    return out


def _ci(pair) -> str:
    return "—" if not pair else f"[{pair[0]:.2f}, {pair[1]:.2f}]"


def markdown(chosen: dict, grid: dict, test_set: str = "the test set") -> str:
    """grid.md's section of paired tests on one test set: per student, every column against the
    chosen one."""
    entries = {s: e for s, e in chosen.items() if e.get("tests") is not None}
    if not entries:
        return ""
    any_entry = next(iter(entries.values()))
    test = "paired bootstrap" if any_entry["test"] == "bs" else "approximate randomization"
    lines = ["", f"## Paired tests on {test_set}", "",
             f"Per student, the column chosen on valid {any_entry['metric']} (mean over seeds) against every other "
             f"column on the test hypotheses: {test}"
             f" ({any_entry['resamples']} resamples, sacrebleu's statistics; pooled over seeds: a column's score on a "
             "resample is the mean over its seeds), 95% intervals, Δ = column − chosen, two-sided p (ties count as "
             f"extreme); p ≥ {any_entry['alpha']:g}: tied. Per seed: the p of each seed both columns have."]
    for s, e in entries.items():
        metric = e["metric"]
        lines += ["", f"**{s}** (chosen: {e['chosen']}, on {e['selected_on']})", "",
                  f"| column | test {metric} | 95% CI | Δ vs chosen | 95% CI of Δ | p | verdict | p per seed |",
                  "|---|---:|---|---:|---|---:|---|---|"]
        first = next(iter(e["tests"].values()), None)
        if first is not None:
            a = first["a"]
            lines.append(f"| {e['chosen']} (chosen) | {a['score']:.2f} | {_ci(a.get('ci'))} | | | | | |")
        for c, t in e["tests"].items():
            seeds = ", ".join(f"{p['seed']}: {p['p_value']:.3f}" for p in t["per_seed"]) or "—"
            lines.append(f"| {c} | {t['b']['score']:.2f} | {_ci(t['b'].get('ci'))} | {t['diff']:+.2f} | "
                         f"{_ci(t.get('diff_ci'))} | {t['p_value']:.3f} | {t['verdict']} | {seeds} |")
    return "\n".join(lines) + "\n"
