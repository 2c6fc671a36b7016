"""The answer per student (Zhou, Gu & Neubig 2020, finding 4: capacity and complexity correlate):
which training-data column suits each student, and why, computed from the grid's scores and data
metrics; nothing here is hand-written. Columns are generic: `raw` and any `teacher.method`.

Rules (one place, so the report, the CSV and the plots agree):
- with a `selection` (kdgrid.selection: the grid has valid scores and test hypotheses) a
  student's **best** set is its choice on valid, reported with its test BLEU; the **runner-up** is
  the next on valid, the **margin** their test difference; a column the paired tests cannot tell
  from the best is **tied** with it (status tie, the cheapest tied column `recommended`); a column
  better on test, pooled and in every seed, makes the status **disagree**;
- without one (older grids): the best set is the highest test BLEU (ties: the earlier column), the
  runner-up the next, and a margin below `tie_bleu` (default 0.5 BLEU) is a **tie**;
- a score **beats copying the source** when it exceeds the copy-the-source BLEU by at least
  `tie_bleu`; a student none of whose columns does gets no recommendation, and a teacher whose
  test BLEU does not is flagged;
- the one-line **reason** compares the C(d) of the student's best set with its **peers'** best
  sets (the other students with a clear recommendation: a tie or no recommendation makes no peer)
  and with raw, its raw-data BLEU (a capacity proxy) with theirs (<= the lowest is "as simple as
  the simplest", a strict < "simpler than"; peers on the same set are named), names the runner-up
  and margin, and flags a best set whose teacher does not beat copying;
- the **capacity ↔ complexity summary** (Spearman's rank correlation between raw-data BLEU and
  the best set's C(d) over the clear students) is a test only with at least `MIN_SPEARMAN` (5)
  students; with fewer it says so and claims nothing.
"""

from __future__ import annotations

import csv
import io
import json

from kdgrid.errors import atomic_output
from kdgrid.metrics.rank import EXACT_PERMUTATIONS, spearman, spearman_p

TIE_BLEU = 0.5  # BLEU; below this a margin is a tie (and a score does not beat copying the source)
RECOMMENDED = ("clear", "tie", "disagree")  # statuses with a recommended set
PEER = ("clear",)  # statuses whose best set is compared in other students' reasons and the summary
MIN_SPEARMAN = 5  # students needed before a rank correlation is read as evidence
C_TOLERANCE = 0.01  # nats: C(d) values closer than this are "as simple as" each other (report.c_tolerance)


def _data(grid: dict, column: str, key: str):
    m = grid["data"].get(column)
    return None if m is None else m.get(key)


def teacher_of(grid: dict, column: str):
    """The teacher of a distilled column (its data metrics' label, else the name before the dot);
    None for `raw`."""
    if column == "raw":
        return None
    return _data(grid, column, "teacher") or (column.partition(".")[0] if "." in column else None)


def _span(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}–{fmt.format(hi)}"


def _student(grid: dict, s: str, copy, tie: float, sel: dict | None = None, cost_of=None) -> dict:
    cols = grid["columns"]
    order = {c: i for i, c in enumerate(cols)}
    row = grid["cells"][s]
    points = []
    for c in cols:
        cell = row.get(c)
        b = None if cell is None else cell["bleu"]
        points.append({"data": c, "bleu": b, "complexity": _data(grid, c, "complexity"),
                       "faithfulness": _data(grid, c, "faithfulness"),
                       "valid_bleu": None if cell is None else (cell.get("valid") or {}).get("bleu"),
                       "beats_copy": None if b is None or copy is None else b - copy >= tie})
    # ordered by C(d), simplest first; columns without C(d) last, in grid order
    points.sort(key=lambda p: (p["complexity"] is None, p["complexity"] or 0.0, order[p["data"]]))
    scored = sorted((p for p in points if p["bleu"] is not None), key=lambda p: (-p["bleu"], order[p["data"]]))
    if sel is not None and sel.get("order"):  # chosen on valid: the ranking is the selection's
        by = {p["data"]: p for p in points}
        scored = [by[c] for c in sel["order"]]
    raw = next((p for p in points if p["data"] == "raw"), None)
    a = {"student": s, "status": "clear", "best": None, "best_bleu": None, "best_complexity": None,
         "best_faithfulness": None, "best_distilled": None, "best_teacher": None, "runner_up": None,
         "runner_up_bleu": None, "margin": None, "tie": None,
         "raw_bleu": None if raw is None else raw["bleu"], "gain_over_raw": None, "copy_source_bleu": copy,
         "top": max(scored, key=lambda p: p["bleu"])["data"] if scored else None,
         "top_bleu": max(p["bleu"] for p in scored) if scored else None,
         "selected_on": "test" if sel is None else sel["selected_on"],
         "select_metric": "bleu" if sel is None else sel["metric"], "tie_rule": "margin", "tied": [],
         "better_on_test": [], "tied_by_sign": [], "recommended": None, "recommended_cost_hours": None,
         "runner_up_p": None,
         "margin_ci": None, "seeds": max((row[c].get("n", 1) for c in cols if row.get(c)), default=0),
         "missing": [c for c in cols if row.get(c) is None], "points": points, "reason": ""}
    if not scored:
        a["status"] = "no_scores"
        return a
    if copy is not None and a["top_bleu"] - copy < tie:
        a["status"] = "below_copy"
        return a
    best = scored[0]
    a.update(best=best["data"], best_bleu=best["bleu"], best_complexity=best["complexity"],
             best_faithfulness=best["faithfulness"], best_distilled=best["data"] != "raw",
             best_teacher=teacher_of(grid, best["data"]), recommended=best["data"])
    if len(scored) > 1:
        runner = scored[1]
        a.update(runner_up=runner["data"], runner_up_bleu=runner["bleu"], margin=best["bleu"] - runner["bleu"])
        tests = None if sel is None else sel.get("tests")
        if tests:  # the paired tests decide: tied = not told apart from the chosen column on test
            a["tie_rule"] = "paired"
            a["tied"] = [c for c, t in tests.items() if t["verdict"] == "tied"]
            # why each is tied: a p >= alpha (pooled or in a seed), or every p < alpha but the seeds
            # disagree in sign (the trained models differ, the columns do not, in a consistent way)
            a["tied_by_sign"] = [c for c in a["tied"] if all(
                x["p_value"] < sel["alpha"] for x in [tests[c], *tests[c]["per_seed"]])]
            a["better_on_test"] = [c for c, t in tests.items() if t["verdict"] == "better"]
            t = tests[runner["data"]]
            lo, hi = t["diff_ci"] if t.get("diff_ci") else (None, None)
            # the interval of chosen - runner-up in the selection metric (for TER, > 0: the chosen is worse)
            a["runner_up_p"], a["margin_ci"] = t["p_value"], None if lo is None else [-hi, -lo]
            a["tie"] = bool(a["tied"])
            a["alpha"], a["test"] = sel["alpha"], sel["test"]
            if a["better_on_test"] and not a["tied"]:
                a["status"] = "disagree"  # a column beats the valid choice on test: reported, not chosen
            if a["tied"] and cost_of is not None:  # a tie: the cheapest of the tied columns
                pool = [best["data"], *a["tied"]]
                costs = {c: cost_of(c) for c in pool}
                known = [c for c in pool if costs[c] is not None]
                if known:
                    a["recommended"] = min(known, key=lambda c: (costs[c], pool.index(c)))
                    a["recommended_cost_hours"] = costs[a["recommended"]]
        else:
            a["tie"] = a["margin"] < tie
        if a["tie"]:
            a["status"] = "tie"
    if a["best_distilled"] and a["raw_bleu"] is not None:
        a["gain_over_raw"] = best["bleu"] - a["raw_bleu"]
    return a


def _reason(a: dict, peers: list[dict], c_raw, tie: float, copy, below_teachers: dict,
            tol: float = C_TOLERANCE) -> str:
    if a["status"] == "no_scores":
        return "no scores; no recommendation"
    if a["status"] == "below_copy":
        why = f"no column beats copying the source ({copy:.2f} BLEU)"
        if a["top_bleu"] > copy:
            why += f" by the noise threshold of {tie:g} BLEU"
        return f"{why}; its best, {a['top']}, scores {a['top_bleu']:.2f}; no recommendation"
    parts = []
    mine, others = a["best_complexity"], [p for p in peers if p["best_complexity"] is not None]
    if mine is not None and others:
        cs = [p["best_complexity"] for p in others]
        span = _span(cs, "{:.3f}")
        same = [p["student"] for p in others if p["best"] == a["best"]]
        shared = f"; {a['best']} is also the best set of {', '.join(same)}" if same else ""
        if len(same) == len(others):
            where = f"peaks on the same set as the other students ({a['best']})"
        elif mine < min(cs) - tol:
            where = f"peaks on a simpler set than the other students (C {mine:.3f} vs {span})"
        elif mine <= min(cs) + tol and mine < max(cs) - tol:
            where = f"peaks on a set as simple as the simplest of the other students' (C {mine:.3f} vs {span}{shared})"
        elif mine > max(cs) + tol:
            where = f"peaks on a more complex set than the other students (C {mine:.3f} vs {span})"
        elif mine >= max(cs) - tol:
            where = (f"peaks on a set as complex as the most complex of the other students' "
                     f"(C {mine:.3f} vs {span}{shared})")
        else:
            where = f"peaks between the other students in complexity (C {mine:.3f} vs {span}{shared})"
        raws = [p["raw_bleu"] for p in others if p["raw_bleu"] is not None]
        if a["raw_bleu"] is not None and raws:
            mine_raw, vs = a["raw_bleu"], f"(BLEU {a['raw_bleu']:.2f} vs {_span(raws, '{:.2f}')}) and "
            if mine_raw < min(raws):
                where = "weakest on raw data " + vs + where
            elif mine_raw == min(raws):
                where = "as weak on raw data as the weakest other student " + vs + where
            elif mine_raw > max(raws):
                where = "strongest on raw data " + vs + where
            elif mine_raw == max(raws):
                where = "as strong on raw data as the strongest other student " + vs + where
        parts.append(where)
    if not a["best_distilled"]:
        parts.append("raw data beats every distilled set")
    else:
        what = "distilled"
        if mine is not None and c_raw is not None:
            rel = ("simpler than" if mine < c_raw - tol else "more complex than" if mine > c_raw + tol
                   else "as complex as")
            what += f", {rel} raw (C {mine:.3f} vs {c_raw:.3f})"
        if a["gain_over_raw"] is not None:
            what += f", {a['gain_over_raw']:+.2f} BLEU over raw"
        parts.append(what)
    if a["selected_on"] == "valid":
        parts.insert(0, f"chosen on valid {a['select_metric']} (mean over seeds), test scores reported")
    if a["runner_up"] is None:
        parts.append("the only scored column")
    elif a["tie_rule"] == "paired":
        test = "paired bootstrap" if a["test"] == "bs" else "approximate randomization"
        lead = (f"{a['margin']:+.2f} test BLEU against {a['runner_up']} ({test} on test "
                f"{a['select_metric']}: p = {a['runner_up_p']:.3f})")
        if a["tied"]:
            cheap = a["recommended"]
            cost = "" if a["recommended_cost_hours"] is None else f", {a['recommended_cost_hours']:.2f} core-h"
            by_p = [c for c in a["tied"] if c not in a.get("tied_by_sign", [])]
            why = ([f"not told apart from {', '.join(by_p)} (p >= {a['alpha']:g}, pooled or in a seed)"] if by_p
                   else []) + ([f"{', '.join(a['tied_by_sign'])} differs significantly in every seed but not in "
                                "the same direction (the seeds disagree)"] if a.get("tied_by_sign") else [])
            lead = (f"tie: {lead}; " + "; ".join(why)
                    + (f"; the cheapest of them is {cheap}{cost}" if cheap != a["best"] else ""))
        parts.append(lead)
        if a["better_on_test"]:
            parts.append(f"test prefers {', '.join(a['better_on_test'])} (p < {a['alpha']:g}, pooled and in every "
                         "seed): valid and test disagree")
    else:
        lead = f"{a['margin']:.2f} BLEU ahead of {a['runner_up']}"
        parts.append(f"tie: only {lead} (< {tie:g}), within noise" if a["tie"] else lead)
        if copy is not None and a["runner_up_bleu"] - copy < tie:
            parts.append("the only column that beats copying the source")
    t = a["best_teacher"]
    if t in below_teachers:
        parts.append(f"but its teacher {t} does not beat copying the source "
                     f"({below_teachers[t]:.2f} vs {copy:.2f} BLEU)")
    return "; ".join(parts)


def _summary(clear: list[dict]) -> dict:
    """Spearman's rank correlation between raw-data BLEU and the best set's C(d) over the students
    with a clear recommendation; read as a test only with MIN_SPEARMAN students or more."""
    both = [a for a in clear if a["raw_bleu"] is not None and a["best_complexity"] is not None]
    n = len(both)
    xs, ys = [a["raw_bleu"] for a in both], [a["best_complexity"] for a in both]
    rho = spearman(xs, ys) if n >= 3 else None
    p = spearman_p(xs, ys) if rho is not None else None
    if not both:
        text = ("no student has a clear recommendation with a C(d) and a raw-data score: nothing to "
                "correlate")
    elif rho is None and n >= 3:
        best = sorted({a["best"] for a in both})
        text = (f"the {n} students with a clear recommendation do not differ in "
                + ("the C(d) of their best set" if len(best) > 1 else f"their best set ({best[0]})")
                + (" or in raw-data BLEU" if len({a['raw_bleu'] for a in both}) == 1 else "")
                + ": no correlation to measure")
    elif n < MIN_SPEARMAN:
        text = (f"n = {n}: too few to test (students with a clear recommendation, a raw-data score and "
                f"a best set's C(d); {MIN_SPEARMAN} needed)")
        if rho is not None:
            text += (f"; Spearman rank correlation of raw-data BLEU with the best set's C(d) over them: "
                     f"{rho:+.2f} (permutation p = {p:.3f}), not evidence either way")
    else:
        text = (f"Spearman rank correlation between a student's raw-data BLEU (capacity proxy) and the C(d) "
                f"of its best set: {rho:+.2f} over {n} students, two-sided permutation p = {p:.3f} "
                f"({'exact' if n <= EXACT_PERMUTATIONS else 'Monte Carlo'}; finding 4 expects it positive: "
                "stronger students peak on more complex data)")
    return {"students": [a["student"] for a in both], "spearman": rho, "spearman_p": p,
            "tested": n >= MIN_SPEARMAN and rho is not None, "text": text}


def answer(grid: dict, tie_bleu: float = TIE_BLEU, selection: dict | None = None, cost_of=None,
           c_tolerance: float = C_TOLERANCE) -> dict:
    """Per student: best set, its C(d)/F(d), runner-up, margin, status and reason; the teachers
    that do not beat copying the source; and a capacity ↔ complexity summary over students.
    `selection` (kdgrid.selection.analyse): choose on valid and decide ties by paired tests;
    without it the best is the highest test BLEU and a margin under `tie_bleu` is a tie.
    `cost_of(column)`: its core-hours (the cheapest of tied columns is recommended). C(d) values
    within `c_tolerance` nats are worded "as simple/complex as" (report.c_tolerance)."""
    copy = (grid.get("copy_source") or {}).get("bleu")
    below_teachers = {}
    if copy is not None:
        for t, splits in grid["teachers"].items():
            b = splits.get("test", {}).get("bleu")
            if b is not None and b - copy < tie_bleu:
                below_teachers[t] = b
    students = [_student(grid, s, copy, tie_bleu, (selection or {}).get(s), cost_of) for s in grid["students"]]
    clear = [a for a in students if a["status"] in PEER]
    c_raw = _data(grid, "raw", "complexity")
    for a in students:
        peers = [p for p in clear if p is not a]
        a["reason"] = _reason(a, peers, c_raw, tie_bleu, copy, below_teachers, c_tolerance)
        if a["missing"] and a["status"] != "no_scores":
            a["reason"] += f"; not scored yet: {', '.join(a['missing'])}"
    return {"tie_bleu": tie_bleu, "copy_source_bleu": copy, "raw_complexity": c_raw,
            "teachers_below_copy": below_teachers, "students": students, "summary": _summary(clear),
            "selection": {s: {k: v for k, v in e.items() if k != "order"} for s, e in (selection or {}).items()}}


# -- outputs ---------------------------------------------------------------------------------
CSV_FIELDS = ["student", "status", "best", "best_bleu", "best_complexity", "best_faithfulness", "best_distilled",
              "best_teacher", "runner_up", "runner_up_bleu", "margin", "tie", "raw_bleu", "gain_over_raw",
              "copy_source_bleu", "tie_bleu", "selected_on", "select_metric", "tie_rule", "runner_up_p", "tied",
              "better_on_test", "recommended", "recommended_cost_hours", "seeds", "missing", "reason"]


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, list):
        return " ".join(v)
    return v


def write_csv(ans: dict, path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for a in ans["students"]:
        w.writerow({k: _csv_value(ans["tie_bleu"] if k == "tie_bleu" else a.get(k)) for k in CSV_FIELDS})
    with atomic_output(path) as f:
        f.write(buf.getvalue())


def write_json(ans: dict, path) -> None:
    with atomic_output(path) as f:
        json.dump(ans, f, indent=1, sort_keys=True)
        f.write("\n")


def _f(x, fmt="{:.2f}") -> str:
    return "—" if x is None else fmt.format(x)


def markdown(ans: dict) -> str:
    """The section of grid.md: the recommendation per student, then every column's C(d), F(d) and
    each student's BLEU, columns ordered by C(d)."""
    tie, copy = ans["tie_bleu"], ans["copy_source_bleu"]
    copy_rule = ("" if copy is None else
                 f"; a score that does not beat copying the source ({copy:.2f} BLEU) by {tie:g} BLEU is not ranked")
    paired = next((e for e in ans.get("selection", {}).values() if e.get("tests")), None)
    if paired:
        rule = (f"best = the highest mean valid {paired['metric']} over seeds (never the test maximum), its TEST "
                f"BLEU reported; margin = its test lead over the runner-up on valid; a column the paired "
                f"{'bootstrap' if paired['test'] == 'bs' else 'approximate randomization'} test ({paired['resamples']} "
                f"resamples, pooled over seeds) cannot tell from the best on test (p >= {paired['alpha']:g}) is tied "
                "with it, and in a tie the cheapest tied column (core-hours of its teacher and data jobs, "
                "costs.csv) is recommended")
    else:
        rule = (f"best = highest test BLEU, margin = its lead over the runner-up, a margin under {tie:g} BLEU "
                "(`report.tie_bleu`) is a tie (no valid scores or test hypotheses for paired tests)")
    lines = ["## Answer per student: capacity ↔ complexity", "",
             "Which training data suits each student (the paper's finding 4: weaker students do best on "
             f"simpler data, stronger ones on richer data), computed from the scores: {rule}{copy_rule}.", "",
             "| student | recommended set | BLEU | C(d) | F(d) | runner-up | margin | reason |",
             "|---|---|---:|---:|---:|---|---:|---|"]
    for a in ans["students"]:
        tied = f" (tie with {', '.join(x for x in [a['best'], *a['tied']] if x != a['recommended'])})" if a[
            "tie_rule"] == "paired" and a["tied"] else " (tie)"
        rec = {"clear": a["best"], "tie": f"{a['recommended'] or a['best']}{tied}",
               "disagree": f"{a['best']} (test prefers {', '.join(a['better_on_test'])})"}.get(a["status"], "none")
        runner = "—" if a["runner_up"] is None else f"{a['runner_up']} ({a['runner_up_bleu']:.2f})"
        lines.append(f"| {a['student']} | {rec} | {_f(a['best_bleu'])} | {_f(a['best_complexity'], '{:.3f}')} | "
                     f"{_f(a['best_faithfulness'], '{:.3f}')} | {runner} | {_f(a['margin'])} | {a['reason']} |")
    for t, b in ans["teachers_below_copy"].items():
        lines += ["", f"**Teacher {t} does not beat copying the source**: test BLEU {b:.2f} vs {copy:.2f}; "
                  f"its distilled sets are translations no better than the input."]
    lines += ["", f"Capacity ↔ complexity across students: {ans['summary']['text']}."]
    points = {a["student"]: {p["data"]: p for p in a["points"]} for a in ans["students"]}
    order = [p["data"] for p in ans["students"][0]["points"]] if ans["students"] else []
    lines += ["", "Test BLEU by training data, columns ordered by complexity C(d), simplest first; **bold**: "
              "the student's recommended set" + ("" if copy is None else ", † does not beat copying the source")
              + ":", "", "| | " + " | ".join(order) + " |", "|---|" + "---:|" * len(order)]
    first = points[ans["students"][0]["student"]] if ans["students"] else {}
    lines.append("| C(d) | " + " | ".join(_f(first[c]["complexity"], "{:.3f}") for c in order) + " |")
    lines.append("| F(d) | " + " | ".join(_f(first[c]["faithfulness"], "{:.3f}") for c in order) + " |")
    for a in ans["students"]:
        cells = []
        for c in order:
            p = points[a["student"]][c]
            v = _f(p["bleu"])
            if c == (a.get("recommended") or a["best"]):
                v = f"**{v}**"
            if p["beats_copy"] is False:
                v += " †"
            cells.append(v)
        lines.append(f"| {a['student']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
