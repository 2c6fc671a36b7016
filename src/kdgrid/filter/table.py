"""The corpus filter's classifier comparison: per label set (few, binary), the teacher's linear head
and each student method, as mean ± std over the students' seeds (sample std, ddof 1; 0 for a
single seed): valid accuracy and macro F1 (on the kinds trained on), the noisy class's precision
and recall at the corpus prior with and without the prior correction, and the recall on each
held-out kind (kdgrid.filter.evaluate.at_prior on the valid pairs' P(clean))."""

from __future__ import annotations

import csv
import math
import statistics

from kdgrid.errors import KdgridError, atomic_output
from kdgrid.filter.evaluate import at_prior

METRICS = ("accuracy", "macro_f1")
RATES = ("noisy_precision", "noisy_recall", "noisy_precision_raw", "noisy_recall_raw")
METHOD_ORDER = ("labels", "kd", "lelp")
LABEL_ORDER = ("few", "binary")


def _spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _rates(s: dict, where: str, corpus_prior: float, threshold: float, prior: str) -> dict:
    """One classifier's rates: under the filter's rule (corrected unless prior is none) and raw."""
    if "valid_p_clean" not in s or "train_prior" not in s:
        raise KdgridError(f"{where}: its scores lack valid_p_clean/train_prior (from before the prior "
                          "correction); rerun filter_teacher and filter_student")
    args = (s["valid_p_clean"], s["train_prior"]["clean"], corpus_prior, threshold)
    rule, raw = at_prior(*args, prior != "none", s.get("holdout", [])), at_prior(*args, False)
    out = {"noisy_precision": rule["noisy_precision"], "noisy_recall": rule["noisy_recall"],
           "noisy_precision_raw": raw["noisy_precision"], "noisy_recall_raw": raw["noisy_recall"]}
    return {**out, **{f"held_out_{k}_recall": r for k, r in rule["held_out_recall"].items()}}


def rows(teacher_scores: list[dict], student_scores: list[dict], corpus_prior: float = 0.8,
         threshold: float = 0.5, prior: str = "em") -> list[dict]:
    """One row per (label set, classifier): the teacher head first, then the methods in
    METHOD_ORDER; each with n (seeds), the classes, and mean/std of every metric."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for s in student_scores:
        missing = [k for k in ("labels", "method", "seed", *METRICS) if k not in s]
        if missing:
            raise KdgridError(f"a student scores file lacks {', '.join(missing)}; rerun filter_student")
        groups.setdefault((s["labels"], s["method"]), []).append(s)
    at = (corpus_prior, threshold, prior)
    out = []
    for label_set in LABEL_ORDER:
        for t in teacher_scores:
            if label_set in t:
                values = {**{m: t[label_set][m] for m in METRICS}, **_rates(t[label_set], "the teacher head", *at)}
                out.append({"labels": label_set, "classifier": "teacher head", "n": 1,
                            "classes": len(t[label_set]["classes"]),
                            **{f"{m}_{k}": v for m, x in values.items() for k, v in zip(("mean", "std"), (x, 0.0))}})
        for method in METHOD_ORDER:
            group = groups.get((label_set, method))
            if not group:
                continue
            seeds = sorted(s["seed"] for s in group)
            if len(set(seeds)) != len(seeds):
                raise KdgridError(f"{label_set}/{method}: seed(s) given twice ({seeds})")
            row = {"labels": label_set, "classifier": f"student {method}", "n": len(group),
                   "classes": len(group[0]["classes"])}
            per_seed = [{**{m: float(s[m]) for m in METRICS},
                         **_rates(s, f"student {label_set}/{method}.{s['seed']}", *at)} for s in group]
            for m in per_seed[0]:
                row[f"{m}_mean"], row[f"{m}_std"] = _spread([x[m] for x in per_seed])
            out.append(row)
    return out


def _metrics(table: list[dict]) -> list[str]:
    """The metrics of the table's columns, in order: accuracy, macro F1, the rates, held-out recalls."""
    held = [k[: -len("_mean")] for r in table for k in r if k.startswith("held_out_") and k.endswith("_mean")]
    return [*METRICS, *RATES, *dict.fromkeys(held)]


def write_csv(table: list[dict], path) -> None:
    fields = ["labels", "classifier", "classes", "n", *(f"{m}_{k}" for m in _metrics(table) for k in ("mean", "std"))]
    with atomic_output(path) as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for row in table:
            w.writerow({k: (f"{row[k]:.4f}" if isinstance(row.get(k), float) else row.get(k, "")) for k in fields})


def _cell(mean: float, std: float) -> str:
    return "–" if math.isnan(mean) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def markdown(table: list[dict], title: str, at: dict | None = None) -> str:
    at = {"corpus_prior": 0.8, "threshold": 0.5, "prior": "em", **(at or {})}
    metrics = _metrics(table)
    held = [m[len("held_out_"): -len("_recall")] for m in metrics if m.startswith("held_out_")]
    pi, rule = at["corpus_prior"], ("corrected" if at["prior"] != "none" else "uncorrected, filter.prior: none")
    lines = [f"# {title}", "",
             "Valid scores (%), mean ± std over the seeds (n). Accuracy and macro F1: the valid pairs of "
             "the kinds the classifiers were trained on. Noisy P and R: precision and recall of the noisy "
             f"class (the pairs the filter drops, P(clean) < {at['threshold']:g}) on a corpus with clean "
             f"share π = {pi:g} (filter.corpus_prior); R is measured on the noisy valid pairs, P is "
             "computed from the per-class rates and π, (1-π)R / ((1-π)R + πF) with F the share of clean "
             "valid pairs dropped (not by resampling). Without a suffix P(clean) is Bayes-corrected from "
             "the classifier's training prior to this configured π (under filter.prior: em the filter over "
             "the corpus corrects to its EM estimate instead: see the applied filter's section); \"raw\": "
             f"uncorrected (filter.prior: {at['prior']})."
             + (f" Held out of training (filter.holdout_kind): {', '.join(held)}; its R is the share of its "
                f"valid pairs the filter drops ({rule})." if held else ""), ""]
    names = {"accuracy": "accuracy", "macro_f1": "macro F1", "noisy_precision": "noisy P",
             "noisy_recall": "noisy R", "noisy_precision_raw": "noisy P raw", "noisy_recall_raw": "noisy R raw",
             **{f"held_out_{k}_recall": f"{k} R (held out)" for k in held}}
    lines += ["| labels | classifier | classes | n | " + " | ".join(names[m] for m in metrics) + " |",
              "|---|---|---|---|" + "---|" * len(metrics)]
    for r in table:
        cells = [_cell(r.get(f"{m}_mean", math.nan), r.get(f"{m}_std", 0.0)) for m in metrics]
        lines.append(f"| {r['labels']} | {r['classifier']} | {r['classes']} | {r['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def applied_markdown(applied: dict) -> str:
    """filter_apply's report as text: the prior correction, what the filter kept of the training
    data with and without it (per injected kind too, the held-out kinds marked), and how fast."""
    n, prior = applied["pairs"], applied.get("prior", {"mode": "none"})
    lines = ["", f"## The filter on the training data ({applied.get('method')} {applied.get('labels') or ''} "
                 f"student, P(clean) >= {applied['threshold']})", ""]
    if prior["mode"] == "none":
        lines += ["Prior correction: none (filter.prior: none): P(clean) as the classifier gives it.", ""]
    else:
        how = (f"{prior['em_iterations']} EM iterations, {'converged' if prior['em_converged'] else 'NOT converged'}"
               if prior["mode"] == "em" else "filter.corpus_prior")
        lines += [f"Prior correction (filter.prior: {prior['mode']}): P(clean) corrected from the training "
                  f"prior (clean {prior['train_clean']:.3f}) to the corpus prior (clean "
                  f"{prior['corpus_clean']:.3f}, {prior['source']}; {how}).", ""]
    uncorrected = applied.get("kept_uncorrected", applied["kept"])
    lines += [f"Kept {applied['kept']} of {n} pairs ({_share(applied['kept'], n)}), dropped {applied['dropped']}; "
              f"without the correction kept {uncorrected} ({_share(uncorrected, n)}). "
              f"{applied['pairs_per_s']:.0f} pairs/s on {applied['threads']} thread(s).", "",
              "Predicted class: " + ", ".join(f"{c} {k}" for c, k in applied["predicted"].items()) + "."]
    if "kept_by_kind" in applied:
        held = set(applied.get("holdout") or [])
        kinds = sorted(set(applied["kept_by_kind"]) | set(applied["dropped_by_kind"]))
        lines += ["", "| injected kind | kept | dropped | kept share | kept share uncorrected |",
                  "|---|---|---|---|---|"]
        for k in kinds:
            kept, dropped = applied["kept_by_kind"].get(k, 0), applied["dropped_by_kind"].get(k, 0)
            raw = applied.get("kept_by_kind_uncorrected", applied["kept_by_kind"]).get(k, 0)
            name = f"{k} (held out of training)" if k in held else k
            lines.append(f"| {name} | {kept} | {dropped} | {_share(kept, kept + dropped)} | "
                         f"{_share(raw, kept + dropped)} |")
    return "\n".join(lines) + "\n"


def write_markdown(table: list[dict], path, title: str, applied: dict | None = None, at: dict | None = None) -> None:
    with atomic_output(path) as f:
        f.write(markdown(table, title, at) + (applied_markdown(applied) if applied else ""))
