"""What the grid's jobs cost: wall time, CPU time, peak memory and GPU hours, from Snakemake's
benchmark files and the jobs' logs.

The workflow passes, per rule, the paths of its benchmark file and log with their wildcards and
the scope its jobs are charged to (`discover`): the jobs are the benchmark files that exist and
belong to the grid. (Not a list of files as inputs: Snakemake would rerun a job whose benchmark
was deleted, and 10,000 distillation shards would overflow the command line.) A job's label is
`SCOPE/RULE[/NAMES]`:
`cell/RULE/STUDENT/DATA` (training and evaluating one student), or, counted once and shown apart,
the shared upstream work of a training-data column (`data/RULE/COLUMN`: a distilled set's shards,
gather, encoding, alignment and data metrics, or the raw data's alignment and metrics), of a
teacher (`teacher/RULE/NAME`: training, evaluation, metrics of its valid output), or of the whole
grid (`setup/RULE`: corpus and vocabulary; with corpus.clean.filter, the filter every cell trains
behind: its teacher, labelled set, head, the chosen student classifier and filter_apply).

GPU hours are the wall time of each job times the GPUs it ran on: the distinct CUDA devices its
processes named on their `kdgrid device:` log line (one per torchrun worker). A job on the CPU,
or of a verb that never uses a GPU (no such line), counts none.
"""

from __future__ import annotations

import csv
import glob
import io
import re
from collections import Counter
from pathlib import Path

from kdgrid.devices import DEVICE_LINE
from kdgrid.errors import KdgridError, atomic_output

SCOPES = ("cell", "data", "teacher", "setup")
_NAMES = {"cell": ("student", "data"), "data": ("data",), "teacher": ("teacher",), "setup": ()}
FIELDS = ["scope", "student", "data", "teacher", "rules", "jobs", "wall_seconds", "cpu_seconds",
          "max_rss_mb", "gpu_jobs", "gpu_hours"]


def _number(value: str | None, path, column: str) -> float | None:
    if value is None or value.strip() in ("", "NA", "-"):  # NA: a job too short to be sampled
        return None
    try:
        return float(value)
    except ValueError:
        raise KdgridError(f"{path}: column {column!r} holds {value!r}, not a number") from None


def read_benchmark(path) -> dict:
    """Wall seconds, CPU seconds and peak resident memory (MB) of one job's benchmark TSV. Several
    rows (Snakemake's `repeat()`) are several runs: their times add up, their memory is the max.
    A value Snakemake could not measure (NA) is None."""
    try:
        rows = list(csv.DictReader(io.StringIO(Path(path).read_text()), delimiter="\t"))
    except OSError as e:
        raise KdgridError(f"{path}: cannot read the benchmark file ({e.strerror})") from None
    if not rows or "s" not in rows[0]:
        raise KdgridError(f"{path}: not a Snakemake benchmark file (no rows, or no column 's')")
    wall = [_number(r.get("s"), path, "s") for r in rows]
    cpu = [_number(r.get("cpu_time"), path, "cpu_time") for r in rows]
    rss = [_number(r.get("max_rss"), path, "max_rss") for r in rows]
    known = lambda xs: [x for x in xs if x is not None]
    return {"wall": sum(known(wall)), "cpu": sum(known(cpu)) if known(cpu) else None,
            "rss": max(known(rss)) if known(rss) else None}


def gpus_in_log(path) -> int:
    """GPUs a job ran on: the distinct CUDA devices named on its `kdgrid device:` lines (none if
    its log is gone: it cannot have said so)."""
    if not Path(path).exists():
        return 0
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        raise KdgridError(f"{path}: cannot read the job's log ({e.strerror})") from None
    return len(set(re.findall(rf"{re.escape(DEVICE_LINE)} (cuda(?::\d+)?)\s*$", text, re.MULTILINE)))


def job(label: str, benchmark, log) -> dict:
    """One job: its label `scope/rule[/names]`, its benchmark and the GPUs its log names."""
    parts = label.split("/")
    if len(parts) < 2 or parts[0] not in SCOPES or len(parts) != 2 + len(_NAMES[parts[0]]):
        raise KdgridError(f"job label {label!r}: expected SCOPE/RULE[/NAMES] with SCOPE one of "
                          f"{', '.join(SCOPES)} (cell/RULE/STUDENT/DATA, data/RULE/COLUMN, teacher/RULE/NAME, "
                          "setup/RULE)")
    scope, rule, *names = parts
    return {"scope": scope, "rule": rule, **dict(zip(_NAMES[scope], names)),
            **read_benchmark(benchmark), "gpus": gpus_in_log(log)}


# What a wildcard of a benchmark path may hold (names cannot contain dots: config_check).
_WILDCARDS = {"shard": r"\d+", "data": r"raw|[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+",
              "student": r"[A-Za-z0-9_-]+(?:\.seed\d+)?"}  # a student run: <student> or <student>.seed<N>


def _regex(pattern: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", pattern)
    return re.compile("".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_WILDCARDS.get(part, '[A-Za-z0-9_-]+')})"
                              for i, part in enumerate(parts)))


def _pin(pattern: str, wildcards: dict) -> str:
    """`pattern` with the given wildcards filled in (the others left for discover to match)."""
    return re.sub(r"\{(\w+)\}", lambda m: str(wildcards.get(m.group(1), m.group(0))), pattern)


def discover(patterns: list[dict], students: list[str], columns: list[str], teachers: list[str]) -> list[tuple]:
    """(label, benchmark, log) of every job that wrote a benchmark file and belongs to this grid.
    `patterns`: per rule {rule, scope, benchmark, log}, paths and scope with {wildcards}, e.g.
    scope "data/{teacher}.{method}", and optionally `wildcards` {name: value}: the only jobs of
    the rule that count (the one filter student of several that the grid trains behind). Files of
    other grids sharing the results folder (another config's students or columns) are left out."""
    keep = {"setup": lambda: True, "teacher": lambda t: t in teachers, "data": lambda d: d in columns,
            "cell": lambda s, d: s in students and d in columns}
    found = []
    for p in patterns:
        pinned = p.get("wildcards") or {}
        missing = [k for k in pinned if f"{{{k}}}" not in p["benchmark"]]
        if missing:  # a typo would otherwise charge nothing, silently
            raise KdgridError(f"cost pattern of rule {p['rule']}: {p['benchmark']} has no wildcard(s) "
                              f"{', '.join(missing)} to fix")
        benchmark, log = _pin(p["benchmark"], pinned), _pin(p["log"], pinned)
        rx = _regex(benchmark)
        for path in sorted(glob.glob(re.sub(r"\{\w+\}", "*", benchmark))):
            m = rx.fullmatch(path)
            if not m:
                continue
            values = {**pinned, **m.groupdict()}
            kind, *names = p["scope"].format(**values).split("/")
            if kind not in keep or not keep[kind](*names):
                continue
            found.append(("/".join([kind, p["rule"], *names]), path, log.format(**values)))
    return found


def jobs(labels: list[str], benchmarks: list, logs: list) -> list[dict]:
    """Every job, from three lists that match one to one (as the workflow passes them)."""
    if not len(labels) == len(benchmarks) == len(logs):
        raise KdgridError(f"--job-labels ({len(labels)}), --benchmarks ({len(benchmarks)} files) and "
                          f"--job-logs ({len(logs)} files) must match one to one")
    return [job(*j) for j in zip(labels, benchmarks, logs)]


REUSED = " (reused)"  # marks a job of another grid whose product this grid took from the share.store


def reused_jobs(entries: list[dict]) -> list[dict]:
    """The jobs that made the products this grid took from the store (share.store), as the records
    of its fetch jobs give them: `entries` [{record, scope}], scope as a rule's ("teacher/NAME",
    "data/COLUMN", "setup"). Each keeps its cost and rule, marked REUSED; a record that is gone
    (the fetch job not run yet) is skipped."""
    import json

    out = []
    for e in entries:
        path = Path(e["record"])
        if not path.is_file():
            continue
        try:
            record = json.loads(path.read_text())
        except ValueError as err:
            raise KdgridError(f"{path}: not a store record ({err})") from None
        kind, *names = e["scope"].split("/")
        if kind not in SCOPES or len(names) != len(_NAMES[kind]):
            raise KdgridError(f"{path}: scope {e['scope']!r}: expected teacher/NAME, data/COLUMN or setup")
        for j in record.get("jobs", []):
            out.append({"scope": kind, "rule": j["rule"] + REUSED, **dict(zip(_NAMES[kind], names)),
                        "wall": j.get("wall") or 0.0, "cpu": j.get("cpu"), "rss": j.get("rss"),
                        "gpus": j.get("gpus", 0), "reused": True})
    return out


def _group(scope: str, jobs: list[dict], **names) -> dict:
    cpu = [j["cpu"] for j in jobs if j["cpu"] is not None]
    rss = [j["rss"] for j in jobs if j["rss"] is not None]
    rules = Counter(j["rule"] for j in jobs)
    return {"scope": scope, "student": None, "data": None, "teacher": None, **names,
            "rules": "; ".join(r if n == 1 else f"{r} x{n}" for r, n in rules.items()),
            "jobs": len(jobs), "wall_seconds": sum(j["wall"] for j in jobs),
            "cpu_seconds": sum(cpu) if cpu else None, "max_rss_mb": max(rss) if rss else None,
            "gpu_jobs": sum(1 for j in jobs if j["gpus"]),
            "gpu_hours": sum(j["wall"] * j["gpus"] for j in jobs) / 3600}


def table(jobs: list[dict]) -> list[dict]:
    """One row per cell, then per data column, per teacher, the setup (each in the order the jobs
    came), and a `total` row in which every job counts once."""
    groups: dict[tuple, list[dict]] = {}
    for j in sorted(jobs, key=lambda j: SCOPES.index(j["scope"])):  # stable: keeps the order within
        key = (j["scope"], *(j[n] for n in _NAMES[j["scope"]]))
        groups.setdefault(key, []).append(j)
    rows = [_group(key[0], js, **dict(zip(_NAMES[key[0]], key[1:]))) for key, js in groups.items()]
    ran = [j for j in jobs if not j.get("reused")]
    reused = [j for j in jobs if j.get("reused")]
    return rows + [{**_group("total", ran), "rules": "every job above, once (reused ones not: they ran elsewhere)"
                    if reused else "every job above, once"}] + (
        [{**_group("reused", reused), "rules": "what the products taken from the share.store cost where they "
          "were made: saved here"}] if reused else [])


# jobs that make a training set
MAKING = ("train_teacher", "train_filter_teacher", "ensemble_teacher", "import_teacher", "train_ban", "distill",
          "gather", "import_distilled", "encode_distilled")  # (a filter teacher's: a stored teacher it put)


def column_cost(jobs: list[dict], ensembles: dict | None = None):
    """column -> core-hours of making its training data: the jobs in MAKING of the data column
    (its distillation, a Born-Again round's AT) and, for a distilled column, its teacher's training
    (CPU seconds, else wall seconds; the alignments and metrics measure, they make nothing); an
    ensemble teacher's (`ensembles`: {teacher: members}) is its members' training and the job that
    joins them. A Born-Again round r counts its own AT only, not the rounds before it. None where
    no job is known."""
    hours: dict = {}
    for j in jobs:
        if j["scope"] in ("data", "teacher") and j["rule"].removesuffix(REUSED) in MAKING:
            key = (j["scope"], j["data"] if j["scope"] == "data" else j["teacher"])
            seconds = j["cpu"] if j["cpu"] is not None else j["wall"]
            hours[key] = hours.get(key, 0.0) + seconds / 3600

    def cost(column: str):
        own = hours.get(("data", column))
        if own is None and column != "raw":
            return None
        own = own or 0.0  # raw: nothing to make
        teacher = None if column == "raw" else column.partition(".")[0]
        makers = [teacher, *(ensembles or {}).get(teacher, [])] if teacher else []
        return own + sum(hours.get(("teacher", t), 0.0) for t in makers)

    return cost


def write_csv(rows: list[dict], path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r[k] is None else round(r[k], 6) if isinstance(r[k], float) else r[k]
                    for k in FIELDS})
    with atomic_output(path) as f:
        f.write(buf.getvalue())


def clock(seconds: float | None) -> str:
    """h:mm:ss (hours may exceed 24)."""
    if seconds is None:
        return "—"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def memory(mb: float | None) -> str:
    if mb is None:
        return "—"
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _cells(r: dict) -> str:
    return (f"{r['jobs']} | {clock(r['wall_seconds'])} | {clock(r['cpu_seconds'])} | {memory(r['max_rss_mb'])} "
            f"| {r['gpu_hours']:.2f} |")


def markdown(rows: list[dict]) -> str:
    """The cost section of grid.md: the cells' own jobs, then the shared jobs, each counted once."""
    head = "jobs | wall time | CPU time | peak memory | GPU hours |"
    lines = ["## Compute cost", "",
             "From Snakemake's benchmark files (`benchmarks/`): wall and CPU time are summed over the jobs "
             "(which may have run in parallel), peak memory is the largest max_rss of one job, and GPU hours "
             "are each job's wall time times the GPUs its log names (`kdgrid device:` lines; none on a CPU). "
             "The aggregate job itself is not counted.", "",
             "Each cell's own jobs (training and evaluating its student; multi-way corpora: its language mix):", "",
             f"| student | data | {head}", "|---|---|" + "---:|" * 5]
    lines += [f"| {r['student']} | {r['data']} | {_cells(r)}" for r in rows if r["scope"] == "cell"]
    lines += ["", "Shared upstream jobs, each counted once (a cell on `teacher.method` also relies on that "
              "distilled set and its teacher; every cell on the setup):", "",
              f"| shared work | jobs run | {head}", "|---|---|" + "---:|" * 5]
    for r in rows:
        if r["scope"] == "cell":
            continue
        what = {"data": f"data {r['data']}", "teacher": f"teacher {r['teacher']}", "setup": "setup",
                "total": "**all jobs**", "reused": "**reused from the store** (not run here)"}[r["scope"]]
        lines.append(f"| {what} | {r['rules']} | {_cells(r)}")
    return "\n".join(lines) + "\n"
