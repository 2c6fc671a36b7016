"""Cell scores -> the grid: rows are students, columns `raw` and every `teacher.method`."""

from __future__ import annotations

import csv
import io

from kdgrid.errors import KdgridError, atomic_output
from kdgrid.metrics.significance import mean_sd

SCORE_KEYS = ("bleu", "chrf", "chrfpp", "ter")  # a cell's numbers that several seeds average


def build(cells: list[dict], teachers: list[dict], students: list[str], columns: list[str],
          data_metrics=(), teacher_metrics=(), languages=(), runs: dict | None = None,
          valid_cells=(), column_replicas: dict | None = None) -> dict:
    """Arrange cell scores (each names its `student` run and `data` column) in the given order, with
    the data metrics of each column, the teachers' scores, and the language mix of outputs.
    `runs` {run: (student, seed)} maps the runs of a seeded grid to their student (default: every
    run is its own student); a cell of several seeds is their mean (`combine`). `valid_cells`:
    the same cells scored on the valid split, kept under each run's "valid". `column_replicas`
    {column: (grid column, teacher seed)} folds a teacher replica's columns (grid.teacher_seeds)
    into the grid's: their cells are more replicas of the cell, their data metrics are averaged."""
    runs, fold = runs or {}, column_replicas or {}
    valid = {(v.get("student"), v.get("data")): v for v in valid_cells}
    replicas: dict[tuple, list] = {}
    for cell in cells:
        run, data = cell.get("student"), cell.get("data")
        c, teacher_seed = fold.get(data, (data, None))
        s, seed = runs.get(run, (run, cell.get("seed")))
        if s not in students or c not in columns:
            raise KdgridError(f"scores for student {run!r} on {data!r} are not part of this grid")
        v = valid.get((run, data))
        replicas.setdefault((s, c), []).append({**cell, "run": run, "seed": seed, "teacher_seed": teacher_seed,
                                                **({"valid": v} if v is not None else {})})
    table = {s: {c: (combine(replicas[s, c]) if (s, c) in replicas else None) for c in columns} for s in students}
    by_teacher: dict[str, dict] = {}
    for t in teachers:
        by_teacher.setdefault(t["teacher"], {})[t["split"]] = t
    for m in teacher_metrics:
        by_teacher.setdefault(m["teacher"], {})[f"{m['split']}_metrics"] = m
    data = {c: None for c in columns}
    folded: dict[str, list] = {}
    for m in data_metrics:
        c = fold.get(m.get("data"), (m.get("data"), None))[0]
        if c not in data:
            raise KdgridError(f"data metrics for {m.get('data')!r} are not part of this grid")
        folded.setdefault(c, []).append(m)
    for c, ms in folded.items():
        data[c] = ms[0] if len(ms) == 1 else _fold_metrics(c, ms)
    return {"students": students, "columns": columns, "cells": table, "teachers": by_teacher,
            "data": data, "languages": list(languages),
            "seeded": any(cell["n"] > 1 for row in table.values() for cell in row.values() if cell)}


DATA_KEYS = ("complexity", "faithfulness", "bleu_vs_real")  # a column's numbers teacher seeds average


def _fold_metrics(column: str, metrics: list[dict]) -> dict:
    """One column's data metrics from its teacher replicas': the mean of DATA_KEYS, `<key>_sd` the
    sample sd, `n` the replicas, `replicas` their own records; other fields the first's."""
    out = {**metrics[0], "data": column, "n": len(metrics), "replicas": metrics}
    for key in DATA_KEYS:
        values = [m[key] for m in metrics if m.get(key) is not None]
        if values:
            out[key], out[f"{key}_sd"] = _mean_sd(values)
    return out


def combine(replicas: list[dict]) -> dict:
    """One cell from its runs (seeds): the first run's record with every score in SCORE_KEYS (and
    the valid split's) replaced by the mean over runs, `<key>_sd` the sample sd (n - 1; None for
    one run), `n` the number of runs and `replicas` the runs themselves, in seed order."""
    reps = sorted(replicas, key=lambda r: (r.get("teacher_seed") or 0, r.get("seed") is None, r.get("seed") or 0,
                                           r["run"]))
    out = {**reps[0], "n": len(reps), "replicas": reps, "seeds": [r.get("seed") for r in reps]}
    for key in SCORE_KEYS:
        values = [r[key] for r in reps if r.get(key) is not None]
        if values:  # <key>_n: runs that have the score (chrF++ and TER are missing from older runs)
            out[key], out[f"{key}_sd"] = _mean_sd(values)
            out[f"{key}_n"] = len(values)
    valids = [r["valid"] for r in reps if "valid" in r]
    if valids:
        out["valid"] = {**valids[0], "n": len(valids)}
        for key in SCORE_KEYS:
            values = [v[key] for v in valids if v.get(key) is not None]
            if values:
                out["valid"][key], out["valid"][f"{key}_sd"] = _mean_sd(values)
    return out


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    m = mean_sd(values)  # kdgrid.metrics.significance: sample sd, None for one value
    return m["mean"], m["sd"]


def _backend(scores: dict) -> str:
    """Which code decoded a teacher's test set (scores.json `decode.backend`; torch before it existed)."""
    b = scores.get("decode", {}).get("backend") or {"used": "torch"}
    if b.get("used") != "ctranslate2":
        moe = scores.get("decode", {}).get("moe_expert")  # an MoE teacher: which expert decoded
        return f"torch; {moe}" if moe else "torch"
    search = scores.get("decode_options", {}).get("method", "beam") == "beam"  # ct2_search: beam only
    return (f"CTranslate2 ({b.get('compute_type', 'default')}"
            + (f", {b.get('ct2_search', 'exact')} search)" if search else ")"))


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.2f}"


def _fmt_cell(cell, key: str) -> str:
    """A cell's score; over several seeds `mean ± sd`."""
    if cell is None or cell.get(key) is None:
        return "—"
    sd, n, have = cell.get(f"{key}_sd"), cell.get("n", 1), cell.get(f"{key}_n", cell.get("n", 1))
    return (f"{cell[key]:.2f}" + (f" ± {sd:.2f}" if have > 1 and sd is not None else "")
            + (f" (n={have})" if have < n else ""))


def _fmt3(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def _data(grid, column, key):
    m = grid["data"].get(column)
    return None if m is None else m.get(key)


def write_csv(grid: dict, path, metric: str = "bleu") -> None:
    """Students' BLEU, then the rows C(d) and F(d) of each column's training data."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["student", *grid["columns"]])
    for s in grid["students"]:
        row = grid["cells"][s]
        w.writerow([s, *("" if row[c] is None else row[c][metric] for c in grid["columns"])])
    for label, key in (("C(d)", "complexity"), ("F(d)", "faithfulness")):
        values = [_data(grid, c, key) for c in grid["columns"]]
        if any(v is not None for v in values):
            w.writerow([label, *("" if v is None else round(v, 4) for v in values)])
    with atomic_output(path) as f:
        f.write(buf.getvalue())


def _own_data(grid: dict, column: str, replica: dict, key: str):
    """A run's own training set's metric: its teacher replica's where the column folds several."""
    m = grid["data"].get(column) or {}
    own = next((x for x in m.get("replicas", []) if x.get("data") == replica.get("data")), m)
    return own.get(key)


def write_long_csv(grid: dict, path, test_sets: dict | None = None) -> None:
    """scores.csv: one row per trained model and test set, i.e. per cell, seed (a seeded grid's runs
    apart) and test set (the primary one, then each of `test_sets` {name: its grid}), with its test
    scores and its valid BLEU."""
    fields = ["student", "data", "teacher", "method", "bleu", "chrf", "complexity", "faithfulness",
              "sentences_per_second", "decode_seconds", "updates", "seed", "run", "chrfpp", "ter", "valid_bleu",
              "test_set", "teacher_seed", "trained_on"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for name, g in {grid.get("test_name", "test"): grid, **(test_sets or {})}.items():
        _long_rows(w, g, name)
    with atomic_output(path) as f:
        f.write(buf.getvalue())


def _long_rows(w, grid: dict, test_set: str) -> None:
    for s in grid["students"]:
        for c in grid["columns"]:
            cell = grid["cells"][s][c]
            for r in (cell or {}).get("replicas", [cell] if cell else []):
                w.writerow({"student": s, "data": c, "test_set": test_set, "seed": r.get("seed", ""),
                            "teacher_seed": "" if r.get("teacher_seed") is None else r["teacher_seed"],
                            "trained_on": r.get("data", c),
                            "run": r.get("run", s),
                            "teacher": (c.partition(".")[0] if r.get("teacher") else ""),
                            "method": r.get("method") or "",
                            "bleu": r["bleu"], "chrf": r["chrf"], "chrfpp": r.get("chrfpp", ""),
                            "ter": r.get("ter", ""), "valid_bleu": r.get("valid", {}).get("bleu", ""),
                            "complexity": _own_data(grid, c, r, "complexity"),
                            "faithfulness": _own_data(grid, c, r, "faithfulness"),
                            "sentences_per_second": r["decode"]["sentences_per_second"],
                            "decode_seconds": r["decode"]["seconds"], "updates": r.get("updates", "")})


def _write_rows(path, fields: list[str], rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: "" if row.get(k) is None else row[k] for k in fields})
    with atomic_output(path) as f:
        f.write(buf.getvalue())


def write_teachers_csv(grid: dict, path, sizes: dict | None = None) -> None:
    """One row per teacher: its size (the config's shape, or an ensemble's members, and the
    parameter count), valid and test BLEU/chrF, and C(d), F(d) of its valid output (against the valid references')."""
    shape = ["d_model", "ffn", "heads", "encoder_layers", "decoder_layers"]
    fields = ["teacher", *shape, "ensemble", "imported", "parameters", "updates", "valid_bleu", "valid_chrf",
              "test_bleu", "test_chrf", "valid_complexity", "valid_complexity_references", "valid_faithfulness"]
    rows = []
    for t, splits in grid["teachers"].items():
        valid, test, vm = splits.get("valid", {}), splits.get("test", {}), splits.get("valid_metrics", {})
        size = (sizes or {}).get(t, {})
        members = size.get("ensemble")  # an ensemble teacher: its members and how they combine
        rows.append({"teacher": t, **{k: size.get(k) for k in shape},
                     "ensemble": f"{' + '.join(members)} ({size.get('combine')})" if members else None,
                     "imported": size.get("imported"),  # a teacher trained elsewhere: its model file
                     "parameters": valid.get("parameters", test.get("parameters")),
                     "updates": valid.get("updates", test.get("updates")),
                     "valid_bleu": valid.get("bleu"), "valid_chrf": valid.get("chrf"),
                     "test_bleu": test.get("bleu"), "test_chrf": test.get("chrf"),
                     "valid_complexity": vm.get("complexity"),
                     "valid_complexity_references": vm.get("real", {}).get("complexity"),
                     "valid_faithfulness": vm.get("faithfulness")})
    _write_rows(path, fields, rows)


def write_data_csv(grid: dict, path) -> None:
    """One row per training-data column: its data metrics (data_metrics.json, flattened)."""
    fields = ["data", "teacher", "method", "sentences", "complexity", "faithfulness", "faithfulness_smoothing",
              "faithfulness_dropped_types", "bleu_vs_real", "target_types", "source_types", "links",
              "real_complexity", "real_target_types"]
    rows = []
    for c in grid["columns"]:
        folded = grid["data"].get(c) or {}
        for m in folded.get("replicas", [folded]):  # a teacher replica's set (grid.teacher_seeds) is its own row
            real = m.get("real") or {}
            rows.append({**{k: m.get(k) for k in fields}, "data": m.get("data") or c,
                         "real_complexity": real.get("complexity"), "real_target_types": real.get("target_types"),
                         "faithfulness_smoothing": smoothing(m)})
    _write_rows(path, fields, rows)


def smoothing(metrics: dict | None) -> str | None:
    """How F(d) treated p_d = 0 (data_metrics.json's choices), e.g. 'floor 1e-10', 'add_alpha 0.1'."""
    f = ((metrics or {}).get("choices") or {}).get("faithfulness")
    if not isinstance(f, dict):
        return None
    value = f.get("floor", f.get("alpha"))
    return f"{f['smoothing']} {value:g}" if value is not None else f["smoothing"]


def _infeasible_table(grid: dict, cols: list[str]) -> list[str]:
    """The training pairs each student had no alignment for (CTC: kdgrid.models.ctc), per column:
    distilled and raw targets differ in length, so each column may drop a different share."""
    def record(cell):
        return (cell.get("replicas") or [cell])[0].get("infeasible_pairs") if cell else None

    rows = {s: [record(grid["cells"][s][c]) for c in cols] for s in grid["students"]}
    rows = {s: r for s, r in rows.items() if any(r)}
    if not rows:
        return []
    rule = next(x["rule"] for r in rows.values() for x in r if x)
    lines = ["", f"Training pairs a student cannot learn from ({rule}; they add nothing to its loss):", "",
             "| student | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]

    def share(x):
        if x is None:
            return "—"
        return f"{x['train']:,} of {x['train_pairs']:,} ({100 * x['train'] / max(x['train_pairs'], 1):.1f}%)"

    lines += [f"| {s} | " + " | ".join(map(share, r)) + " |" for s, r in rows.items()]
    return lines


def markdown(grid: dict, title: str, answer: dict | None = None) -> str:
    """The grid as Markdown. With the `recommend.answer`: BLEU cells and teachers that do not beat
    copying the source are marked †."""
    cols = grid["columns"]
    below = {(a["student"], p["data"]) for a in (answer or {}).get("students", []) for p in a["points"]
             if p["beats_copy"] is False}
    weak = (answer or {}).get("teachers_below_copy", {})

    by = {a["student"]: a for a in (answer or {}).get("students", [])}
    paired = any(a.get("tie_rule") == "paired" for a in by.values())

    def bleu(s, c):
        a = by.get(s, {})
        mark = (" *" if c == a.get("best") else " ≈" if c in a.get("tied", ()) else "") if paired else ""
        return _fmt_cell(grid["cells"][s][c], "bleu") + mark + (" †" if (s, c) in below else "")

    seeds = sorted({n for row in grid["cells"].values() for cell in row.values() if cell for n in [cell["n"]]})
    teacher_seeded = any(r.get("teacher_seed") is not None for row in grid["cells"].values() for cell in row.values()
                         if cell for r in cell["replicas"])
    over = (f" Mean ± sample sd over {'/'.join(map(str, seeds))} runs per cell (`grid.seeds`"
            + (" × `grid.teacher_seeds` for a distilled column: each teacher replica's own set)" if teacher_seeded
               else ")") + "." if grid.get("seeded") else "")
    name = grid.get("test_name", "test")
    on = "the test set" if name == "test" else name  # corpus.test_name: the primary test set's name
    lines = [f"# {title}", "", f"Student BLEU on {on} (rows: students; columns: training data).{over}", "",
             "| student | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for s in grid["students"]:
        lines.append(f"| {s} | " + " | ".join(bleu(s, c) for c in cols) + " |")
    if grid.get("copy_source"):
        b = grid["copy_source"]
        lines += ["", f"Trivial baseline, copying the source: BLEU {b['bleu']:.2f}, chrF {b['chrf']:.2f}."]
        if answer:
            scored = sum(c is not None for r in grid["cells"].values() for c in r.values())
            lines[-1] += (f" † marks a score that does not beat it by {answer['tie_bleu']:g} BLEU "
                          f"(`report.tie_bleu`): {len(below)} of {scored} scored cells"
                          + (f"; teachers below it: {', '.join(weak)}" if weak else "") + ".")
    if paired:
        lines += ["", "\\* the student's column chosen on valid (mean over seeds); ≈ a column the paired test on "
                  f"{on} cannot tell from it (p ≥ 0.05; section \"Paired tests on {on}\")."]
    for key, label in (("chrf", "chrF"), ("chrfpp", "chrF++"), ("ter", "TER (lower is better)")):
        if key != "chrf" and not any(c and c.get(key) is not None for r in grid["cells"].values() for c in r.values()):
            continue  # scores from before chrF++ and TER were computed
        lines += ["", f"{label} on {on}:", "", "| student | " + " | ".join(cols) + " |",
                  "|---|" + "---:|" * len(cols)]
        for s in grid["students"]:
            row = grid["cells"][s]
            lines.append(f"| {s} | " + " | ".join(_fmt_cell(row[c], key) for c in cols) + " |")
    lines += _infeasible_table(grid, cols)
    if any(grid["data"].values()):
        lines += ["", "Training data of each column (eflomal word alignments; see data_metrics.json for "
                  "every choice):", "", "| | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        how = next((smoothing(m) for m in grid["data"].values() if smoothing(m)), None)
        for label, key, fmt in (("complexity C(d)", "complexity", "{:.3f}"),
                                (f"faithfulness F(d){f' ({how})' if how else ''}", "faithfulness", "{:.3f}"),
                                ("source types F(d) dropped", "faithfulness_dropped_types", "{:,}"),
                                ("BLEU vs real targets", "bleu_vs_real", "{:.2f}"),
                                ("target word types", "target_types", "{:,}"),
                                ("alignment links", "links", "{:,}")):
            cells = [(_data(grid, c, key), _data(grid, c, f"{key}_sd")) for c in cols]
            lines.append(f"| {label} | " + " | ".join("—" if v is None else fmt.format(v) + (
                "" if sd is None else f" ± {fmt.format(sd)}") for v, sd in cells) + " |")
    lines += ["", "Teachers (decoding as configured under `teacher.evaluate`; C and F of their valid "
              "output against the valid references):", "",
              "| teacher | parameters | valid BLEU | test BLEU | valid C(output) | valid C(references) "
              "| valid F(output) | decoded with |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for t, splits in grid["teachers"].items():
        params = next(v for k, v in splits.items() if not k.endswith("_metrics")).get("parameters")
        vm = splits.get("valid_metrics", {})
        lines.append(f"| {t} | {params:,} | {_fmt(splits.get('valid', {}).get('bleu'))} | "
                     f"{_fmt(splits.get('test', {}).get('bleu'))}{' †' if t in weak else ''} | "
                     f"{_fmt3(vm.get('complexity'))} | "
                     f"{_fmt3(vm.get('real', {}).get('complexity'))} | {_fmt3(vm.get('faithfulness'))} | "
                     f"{_backend(splits.get('test', {}))} |")
    if grid["languages"]:
        langs = grid["languages"][0]["languages"]
        lines += ["", "Language mix of test outputs (p(l|y) from per-language unigram models):", "",
                  "| output | " + " | ".join(f"mean p({x})" for x in langs) + " | pure sentences | token mixing |",
                  "|---|" + "---:|" * (len(langs) + 2)]
        for m in grid["languages"]:
            lines.append(f"| {m['output']} | " + " | ".join(f"{m['mean_p'][x]:.3f}" for x in langs)
                         + f" | {m['pure_sentences']:.3f} | {m['token_mixing']:.3f} |")
    any_cell = next((c for r in grid["cells"].values() for c in r.values() if c), None)
    if any_cell:
        lines += ["", f"BLEU signature: `{any_cell['bleu_signature']}`  ",
                  f"chrF signature: `{any_cell['chrf_signature']}`"]
        lines[-1] += "".join(f"  \n{name} signature: `{any_cell[key]}`" for key, name in
                             (("chrfpp_signature", "chrF++"), ("ter_signature", "TER")) if any_cell.get(key))
    return "\n".join(lines) + "\n"
