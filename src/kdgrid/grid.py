"""Cell scores -> the grid: rows are students, columns `raw` and every `teacher.method`."""

from __future__ import annotations

import csv
import io

from kdgrid.errors import KdgridError, atomic_output


def build(cells: list[dict], teachers: list[dict], students: list[str], columns: list[str]) -> dict:
    """Arrange cell scores (each names its `student` and `data` column) in the given order."""
    table = {s: {c: None for c in columns} for s in students}
    for cell in cells:
        s, c = cell.get("student"), cell.get("data")
        if s not in table or c not in table[s]:
            raise KdgridError(f"scores for student {s!r} on {c!r} are not part of this grid")
        table[s][c] = cell
    by_teacher: dict[str, dict] = {}
    for t in teachers:
        by_teacher.setdefault(t["teacher"], {})[t["split"]] = t
    return {"students": students, "columns": columns, "cells": table, "teachers": by_teacher}


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.2f}"


def write_csv(grid: dict, path, metric: str = "bleu") -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["student", *grid["columns"]])
    for s in grid["students"]:
        row = grid["cells"][s]
        w.writerow([s, *("" if row[c] is None else row[c][metric] for c in grid["columns"])])
    with atomic_output(path) as f:
        f.write(buf.getvalue())


def write_long_csv(grid: dict, path) -> None:
    fields = ["student", "data", "teacher", "method", "bleu", "chrf", "sentences_per_second",
              "decode_seconds", "updates"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for s in grid["students"]:
        for c in grid["columns"]:
            cell = grid["cells"][s][c]
            if cell is not None:
                w.writerow({"student": s, "data": c, "teacher": cell.get("teacher") or "",
                            "method": cell.get("method") or "", "bleu": cell["bleu"], "chrf": cell["chrf"],
                            "sentences_per_second": cell["decode"]["sentences_per_second"],
                            "decode_seconds": cell["decode"]["seconds"], "updates": cell.get("updates", "")})
    with atomic_output(path) as f:
        f.write(buf.getvalue())


def markdown(grid: dict, title: str) -> str:
    cols = grid["columns"]
    lines = [f"# {title}", "", "Student BLEU on the test set (rows: students; columns: training data).", "",
             "| student | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for s in grid["students"]:
        row = grid["cells"][s]
        lines.append(f"| {s} | " + " | ".join(_fmt(None if row[c] is None else row[c]["bleu"]) for c in cols) + " |")
    lines += ["", "chrF on the test set:", "", "| student | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for s in grid["students"]:
        row = grid["cells"][s]
        lines.append(f"| {s} | " + " | ".join(_fmt(None if row[c] is None else row[c]["chrf"]) for c in cols) + " |")
    lines += ["", "Teachers (beam search as configured under `teacher.evaluate`):", "",
              "| teacher | parameters | valid BLEU | test BLEU |", "|---|---:|---:|---:|"]
    for t, splits in grid["teachers"].items():
        params = next(iter(splits.values())).get("parameters")
        lines.append(f"| {t} | {params:,} | {_fmt(splits.get('valid', {}).get('bleu'))} | "
                     f"{_fmt(splits.get('test', {}).get('bleu'))} |")
    any_cell = next((c for r in grid["cells"].values() for c in r.values() if c), None)
    if any_cell:
        lines += ["", f"BLEU signature: `{any_cell['bleu_signature']}`  ",
                  f"chrF signature: `{any_cell['chrf_signature']}`"]
    return "\n".join(lines) + "\n"
