"""The corpus filter's classifier comparison: per label set (few, binary), the teacher's linear head
and each student method, valid accuracy and macro F1 as mean ± std over the students' seeds
(sample std, ddof 1; 0 for a single seed)."""

from __future__ import annotations

import csv
import statistics

from kdgrid.errors import KdgridError, atomic_output

METRICS = ("accuracy", "macro_f1")
METHOD_ORDER = ("labels", "kd", "lelp")
LABEL_ORDER = ("few", "binary")


def _spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def rows(teacher_scores: list[dict], student_scores: list[dict]) -> list[dict]:
    """One row per (label set, classifier): the teacher head first, then the methods in
    METHOD_ORDER; each with n (seeds), the classes, and mean/std of every metric."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for s in student_scores:
        missing = [k for k in ("labels", "method", "seed", *METRICS) if k not in s]
        if missing:
            raise KdgridError(f"a student scores file lacks {', '.join(missing)}; rerun filter_student")
        groups.setdefault((s["labels"], s["method"]), []).append(s)
    out = []
    for label_set in LABEL_ORDER:
        for t in teacher_scores:
            if label_set in t:
                out.append({"labels": label_set, "classifier": "teacher head", "n": 1,
                            "classes": len(t[label_set]["classes"]),
                            **{f"{m}_{k}": v for m in METRICS for k, v in zip(("mean", "std"),
                                                                              (t[label_set][m], 0.0))}})
        for method in METHOD_ORDER:
            group = groups.get((label_set, method))
            if not group:
                continue
            seeds = sorted(s["seed"] for s in group)
            if len(set(seeds)) != len(seeds):
                raise KdgridError(f"{label_set}/{method}: seed(s) given twice ({seeds})")
            row = {"labels": label_set, "classifier": f"student {method}", "n": len(group),
                   "classes": len(group[0]["classes"])}
            for m in METRICS:
                row[f"{m}_mean"], row[f"{m}_std"] = _spread([float(s[m]) for s in group])
            out.append(row)
    return out


FIELDS = ("labels", "classifier", "classes", "n", "accuracy_mean", "accuracy_std", "macro_f1_mean", "macro_f1_std")


def write_csv(table: list[dict], path) -> None:
    with atomic_output(path) as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        for row in table:
            w.writerow({k: (f"{row[k]:.4f}" if isinstance(row[k], float) else row[k]) for k in FIELDS})


def markdown(table: list[dict], title: str) -> str:
    lines = [f"# {title}", "", "Valid accuracy and macro F1 (%), mean ± std over the seeds (n).", "",
             "| labels | classifier | classes | n | accuracy | macro F1 |", "|---|---|---|---|---|---|"]
    for r in table:
        cells = [f"{100 * r[f'{m}_mean']:.1f} ± {100 * r[f'{m}_std']:.1f}" for m in METRICS]
        lines.append(f"| {r['labels']} | {r['classifier']} | {r['classes']} | {r['n']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def applied_markdown(applied: dict) -> str:
    """filter_apply's report as text: what the filter kept of the training data, and how fast."""
    lines = ["", f"## The filter on the training data ({applied.get('method')} student, "
                 f"P(clean) >= {applied['threshold']})", "",
             f"Kept {applied['kept']} of {applied['pairs']} pairs, dropped {applied['dropped']}; "
             f"{applied['pairs_per_s']:.0f} pairs/s on {applied['threads']} thread(s).", "",
             "Predicted class: " + ", ".join(f"{c} {n}" for c, n in applied["predicted"].items()) + "."]
    if "kept_by_kind" in applied:
        kinds = sorted(set(applied["kept_by_kind"]) | set(applied["dropped_by_kind"]))
        lines += ["", "| injected kind | kept | dropped |", "|---|---|---|"]
        lines += [f"| {k} | {applied['kept_by_kind'].get(k, 0)} | {applied['dropped_by_kind'].get(k, 0)} |"
                  for k in kinds]
    return "\n".join(lines) + "\n"


def write_markdown(table: list[dict], path, title: str, applied: dict | None = None) -> None:
    with atomic_output(path) as f:
        f.write(markdown(table, title) + (applied_markdown(applied) if applied else ""))
