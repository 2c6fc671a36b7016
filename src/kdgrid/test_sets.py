"""Several test sets (corpus.files.tests): the grid, the paired tests and the answer per student on
each named set beside the primary one, and whether the answer agrees across them.

The choice of each student's column is made on valid and so is the same on every test set; what a
test set can change is the verdict of its paired tests. The answer **agrees** across test sets when
every set gives the student the same status (clear / tie / disagree / ...) and the same recommended
column; where it does not, each set's status and tied columns are named. The column with the highest
test BLEU ("test maximum", never the one reported) is listed per set as well, for the reader who
wants to see how often it moves.
"""

from __future__ import annotations

from kdgrid.errors import KdgridError
from kdgrid.grid import _fmt_cell


def by_name(records: list[dict], what: str) -> dict[str, list]:
    """Records (scores.json of a named set, each labelled `test_set`) grouped by their set."""
    out: dict[str, list] = {}
    for r in records:
        name = r.get("test_set")
        if not name:
            raise KdgridError(f"{what}: a record without a test_set label ({sorted(r)[:6]} ...)")
        out.setdefault(name, []).append(r)
    return out


def _verdict(a: dict) -> dict:
    return {"status": a["status"], "recommended": a["recommended"], "best": a["best"], "best_bleu": a["best_bleu"],
            "tied": list(a.get("tied") or []), "better_on_test": list(a.get("better_on_test") or []),
            "top": a["top"], "top_bleu": a["top_bleu"]}


def agreement(answers: dict[str, dict]) -> dict:
    """{student: {"agrees": bool, "sets": {set: verdict}}} from each test set's recommend.answer
    (the primary set first)."""
    out = {}
    students = [a["student"] for a in next(iter(answers.values()))["students"]]
    for s in students:
        sets = {name: _verdict(next(a for a in ans["students"] if a["student"] == s)) for name, ans in answers.items()}
        keys = {(v["status"], v["recommended"]) for v in sets.values()}
        out[s] = {"agrees": len(keys) == 1, "sets": sets}
    return out


def _status(v: dict) -> str:
    if v["status"] == "tie":
        return f"tie: {', '.join([v['best'], *v['tied']])}; cheapest {v['recommended']}"
    if v["status"] == "disagree":
        return f"disagree (test prefers {', '.join(v['better_on_test'])})"
    return v["status"]


def agreement_markdown(agree: dict) -> str:
    if not agree:
        return ""
    names = list(next(iter(agree.values()))["sets"])
    lines = ["", "## The answer on every test set", "",
             f"Each student's column is chosen on valid, so it is the same on every test set ({', '.join(names)}); "
             "each set's paired tests decide whether it is a clear best or tied. The answer agrees when every set "
             "gives the same status and recommended column. Test maximum: the column with the highest test BLEU "
             "on that set (never the reported one).", "",
             "| student | agrees | " + " | ".join(f"{n}: verdict | {n}: chosen BLEU | {n}: test maximum"
                                                 for n in names) + " |",
             "|---|---|" + "---|---:|---|" * len(names)]
    for s, e in agree.items():
        cells = []
        for n in names:
            v = e["sets"][n]
            cells += [_status(v), "—" if v["best_bleu"] is None else f"{v['best_bleu']:.2f}",
                      "—" if v["top"] is None else f"{v['top']} ({v['top_bleu']:.2f})"]
        lines.append(f"| {s} | {'yes' if e['agrees'] else 'no'} | " + " | ".join(cells) + " |")
    n_agree = sum(e["agrees"] for e in agree.values())
    lines += ["", f"The answer agrees across the {len(names)} test sets for {n_agree} of {len(agree)} students."]
    return "\n".join(lines) + "\n"


def block_markdown(name: str, g: dict, ans: dict) -> str:
    """grid.md's block of one named test set: student BLEU (and chrF) per cell, with the chosen
    column (*) and the columns tied with it (≈), the copy-the-source baseline and the teachers."""
    cols = g["columns"]
    by = {a["student"]: a for a in ans["students"]}
    paired = any(a.get("tie_rule") == "paired" for a in by.values())

    def mark(s, c):
        a = by.get(s, {})
        return (" *" if c == a.get("best") else " ≈" if c in a.get("tied", ()) else "") if paired else ""

    lines = ["", f"## Test set {name}", "",
             f"Student BLEU on {name} (mean ± sd over seeds where seeded)" + (
                 "; * the column chosen on valid, ≈ tied with it on this set's paired tests" if paired else "") + ":",
             "", "| student | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for s in g["students"]:
        lines.append(f"| {s} | " + " | ".join(_fmt_cell(g["cells"][s][c], "bleu") + mark(s, c) for c in cols) + " |")
    for key, label in (("chrf", "chrF"), ("chrfpp", "chrF++"), ("ter", "TER (lower is better)")):
        if not any(c and c.get(key) is not None for r in g["cells"].values() for c in r.values()):
            continue
        lines += ["", f"{label} on {name}:", "", "| student | " + " | ".join(cols) + " |",
                  "|---|" + "---:|" * len(cols)]
        for s in g["students"]:
            lines.append(f"| {s} | " + " | ".join(_fmt_cell(g["cells"][s][c], key) for c in cols) + " |")
    if g.get("copy_source"):
        lines += ["", f"Copying the source: BLEU {g['copy_source']['bleu']:.2f}."]
    teachers = {t: sp.get("test") for t, sp in g["teachers"].items() if sp.get("test")}
    if teachers:
        lines += ["", f"Teachers on {name}: " + "; ".join(f"{t} BLEU {v['bleu']:.2f}, chrF {v['chrf']:.2f}"
                                                          for t, v in teachers.items()) + "."]
    return "\n".join(lines) + "\n"
