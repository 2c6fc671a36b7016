"""grid.md's notes on the section-5 columns (Zhou et al. 2020, section 5): each mixture-of-experts
teacher's per-expert columns side by side with their mean and spread (the paper notes a large
variance between experts), its mixture-best and prior-expert columns beside them, and the size of
each Born-Again round's AT. `info` is the workflow's description of each such column:
{column: {"kind": "moe", "teacher", "method", "expert": k | "mixture_best"}} or
{column: {"kind": "ban", "teacher", "method", "round", "size"}}."""

from __future__ import annotations

import statistics


def _fmt(x, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _spread(values: list[float], digits: int = 2) -> str:
    """mean ± sample standard deviation (n - 1) of the values present; '—' when none."""
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f} (n={len(values)})"


def _value(grid: dict, row: str, column: str, key: str):
    if row in grid["cells"]:
        cell = grid["cells"][row].get(column)
        return None if cell is None else cell.get(key)
    m = grid["data"].get(column)
    return None if m is None else m.get(key)


def moe_markdown(grid: dict, info: dict) -> list[str]:
    """Per MoE teacher and `expert: each` method: its single-expert columns with their mean ± sd,
    then the teacher's other MoE columns beside them (one expert, mixture-best, and the plain
    methods' columns, which decode with the prior's expert)."""
    teachers: dict[str, list] = {}
    for column, d in info.items():
        if "expert" in d and column in grid["columns"]:
            teachers.setdefault(d["teacher"], []).append((column, d))
    lines: list[str] = []
    for teacher, cols in teachers.items():
        each = {}  # method -> its per-expert columns (an `expert: each` method)
        for column, d in cols:
            if isinstance(d["expert"], int) and column != f"{teacher}.{d['method']}":
                each.setdefault(d["method"], []).append(column)
        others = [(c, d) for c, d in cols if not any(c in group for group in each.values())]
        for method, experts in (each or {None: []}).items():
            heads = ([f"{c} (expert {info[c]['expert']})" for c in experts]
                     + (["experts: mean ± sd"] if experts else []) + [_label(c, d) for c, d in others])
            what = f"method {method}: one column per expert" if method else "its columns"
            lines += ["", f"Mixture-of-experts teacher {teacher}, {what} (decoding with one expert gives one "
                      "consistent style), their mean ± sample sd over experts, and the teacher's other columns: "
                      "one expert, mixture-best (per sentence, the expert the mixture scores highest) and the "
                      "plain methods (per sentence the prior's expert). Student test BLEU, then the data "
                      "metrics:", "", "| | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
            rows = [(s, "bleu", 2) for s in grid["students"]] + [("C(d)", "complexity", 3),
                                                                 ("F(d)", "faithfulness", 3)]
            for row, key, digits in rows:
                values = [_value(grid, row, c, key) for c in experts]
                cells = [_fmt(v, digits) for v in values]
                if experts:
                    cells.append(_spread([v for v in values if v is not None], digits))
                cells += [_fmt(_value(grid, row, c, key), digits) for c, _ in others]
                lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def _label(column: str, d: dict) -> str:
    if d["expert"] == "mixture_best":
        return f"{column} (mixture-best)"
    if d["expert"] == "prior":
        return f"{column} (prior's expert)"
    return f"{column} (expert {d['expert']})"


def ban_markdown(info: dict, columns: list[str]) -> list[str]:
    rounds = [(c, d) for c, d in info.items() if d.get("kind") == "ban" and c in columns]
    if not rounds:
        return []
    lines = ["", "Born-Again rounds (round 1 is the teacher's own beam column; each later round re-distils with "
             "an AT trained on the round before; `size: student` is the students' body, as the paper describes):",
             "", "| column | teacher | round | AT size |", "|---|---|---:|---|"]
    lines += [f"| {c} | {d['teacher']} | {d['round']} | {d['size']} |" for c, d in rounds]
    return lines


def markdown(grid: dict, info: dict) -> str:
    """The section-5 notes, or '' when the grid has no MoE or Born-Again column."""
    lines = moe_markdown(grid, info) + ban_markdown(info, grid["columns"])
    return "\n".join(lines) + "\n" if lines else ""
