"""The cost table on tiny made-up benchmark files, checked by hand: sums, the shared-once rule,
GPU hours from the jobs' `kdgrid device:` log lines."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from kdgrid import costs
from kdgrid.errors import KdgridError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
import filter_check  # noqa: E402

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def bench(tmp_path, name, *rows):
    """A benchmark TSV with one row per (wall seconds, max_rss MB, cpu seconds); "NA" allowed."""
    path = tmp_path / f"{name}.tsv"
    path.write_text(HEADER + "".join(f"{s}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t0\t{cpu}\n" for s, rss, cpu in rows))
    return path


def log(tmp_path, name, *devices):
    path = tmp_path / f"{name}.log"
    path.write_text("01:00:00 some progress | 3.4k tok/s\n"
                    + "".join(f"01:00:0{i} kdgrid device: {d}\n" for i, d in enumerate(devices)))
    return path


@pytest.fixture
def grid_jobs(tmp_path):
    """setup (2 jobs), teacher T (training on 2 GPUs under torchrun, evaluation on 1), the
    distilled set T.beam (2 GPU shards, a CPU gather), and two cells of student nat."""
    spec = [  # label, (wall s, max_rss MB, cpu s) rows, devices in the log
        (["setup", "prepare"], [(10, 100, 8)], []),
        (["setup", "vocab"], [(20, 200, 30)], []),
        (["teacher", "train_teacher", "T"], [(3600, 1000, 100)], ["cuda:0", "cuda:1"]),
        (["teacher", "evaluate_teacher", "T"], [(360, "NA", "NA")], ["cuda:0"]),
        (["data", "distill", "T.beam"], [(1800, 900, 50)], ["cuda:0"]),
        (["data", "distill", "T.beam"], [(1800, 950, 60)], ["cuda:0"]),
        (["data", "gather", "T.beam"], [(5, 10, 1)], []),
        (["cell", "train_student", "nat", "raw"], [(7200, 500, 7000)], ["cpu"]),
        (["cell", "evaluate_student", "nat", "raw"], [(60, 300, 55)], ["cpu"]),
        (["cell", "train_student", "nat", "T.beam"], [(1800, 800, 90)], ["cuda:0"]),
        (["cell", "evaluate_student", "nat", "T.beam"], [(36, 700, 30)], ["cuda:0"]),
    ]
    labels, benchmarks, logs = [], [], []
    for i, (label, rows, devices) in enumerate(spec):
        labels.append("/".join(label))
        benchmarks.append(bench(tmp_path, f"job{i}", *rows))
        logs.append(log(tmp_path, f"job{i}", *devices))
    return costs.jobs(labels, benchmarks, logs)


def by_scope(rows):
    return {(r["scope"], r["student"], r["data"], r["teacher"]): r for r in rows}


def test_each_cell_counts_only_its_own_jobs(grid_jobs):
    rows = by_scope(costs.table(grid_jobs))
    raw = rows["cell", "nat", "raw", None]
    assert (raw["jobs"], raw["wall_seconds"], raw["cpu_seconds"], raw["max_rss_mb"]) == (2, 7260, 7055, 500)
    assert raw["gpu_hours"] == 0 and raw["gpu_jobs"] == 0  # trained on the CPU
    beam = rows["cell", "nat", "T.beam", None]
    # its own training and evaluation only: not the teacher's nor the distilled set's hours
    assert beam["wall_seconds"] == 1836 and beam["gpu_hours"] == pytest.approx(1836 / 3600)
    assert beam["rules"] == "train_student; evaluate_student"


def test_shared_jobs_are_counted_once_apart_from_the_cells(grid_jobs):
    rows = costs.table(grid_jobs)
    assert [(r["scope"], r["student"] or r["data"] or r["teacher"]) for r in rows] == [
        ("cell", "nat"), ("cell", "nat"), ("data", "T.beam"), ("teacher", "T"), ("setup", None), ("total", None)]
    s = by_scope(rows)
    data = s["data", None, "T.beam", None]
    assert data["rules"] == "distill x2; gather" and data["jobs"] == 3
    assert data["wall_seconds"] == 3605 and data["cpu_seconds"] == 111 and data["max_rss_mb"] == 950
    assert data["gpu_hours"] == pytest.approx(1.0) and data["gpu_jobs"] == 2  # 2 x 1800 s on one GPU
    teacher = s["teacher", None, None, "T"]
    # 1 h on 2 GPUs (two torchrun workers) + 0.1 h on one; the evaluation's CPU time and memory were NA
    assert teacher["gpu_hours"] == pytest.approx(2.1)
    assert teacher["cpu_seconds"] == 100 and teacher["max_rss_mb"] == 1000
    setup = s["setup", None, None, None]
    assert (setup["jobs"], setup["wall_seconds"], setup["cpu_seconds"], setup["max_rss_mb"]) == (2, 30, 38, 200)
    assert setup["gpu_hours"] == 0
    total = rows[-1]
    assert total["jobs"] == 11 == sum(r["jobs"] for r in rows[:-1])
    assert total["wall_seconds"] == 30 + 3960 + 3605 + 7260 + 1836
    assert total["wall_seconds"] == sum(r["wall_seconds"] for r in rows[:-1])
    assert total["gpu_hours"] == pytest.approx(1836 / 3600 + 1.0 + 2.1)
    assert total["max_rss_mb"] == 1000


def test_benchmark_repeats_add_up_and_na_is_unknown(tmp_path):
    b = costs.read_benchmark(bench(tmp_path, "r", (10, 100, 4), (12.5, 150, 5), (1, "NA", "NA")))
    assert b == {"wall": 23.5, "cpu": 9, "rss": 150}
    assert costs.read_benchmark(bench(tmp_path, "na", (0.2, "NA", "NA"))) == {"wall": 0.2, "cpu": None, "rss": None}


def test_gpus_are_the_distinct_cuda_devices_a_log_names(tmp_path):
    assert costs.gpus_in_log(log(tmp_path, "cpu", "cpu")) == 0
    assert costs.gpus_in_log(log(tmp_path, "none")) == 0
    assert costs.gpus_in_log(log(tmp_path, "one", "cuda:0")) == 1
    assert costs.gpus_in_log(log(tmp_path, "ddp", "cuda:1", "cuda:0", "cuda:1")) == 2


def test_outputs(grid_jobs, tmp_path):
    rows = costs.table(grid_jobs)
    costs.write_csv(rows, tmp_path / "costs.csv")
    table = list(csv.DictReader(open(tmp_path / "costs.csv")))
    assert list(table[0]) == costs.FIELDS and len(table) == 6
    assert table[-1]["scope"] == "total" and float(table[-1]["gpu_hours"]) == pytest.approx(3.61)
    assert table[3]["teacher"] == "T" and table[3]["cpu_seconds"] == "100.0"
    md = costs.markdown(rows)
    assert "| nat | raw | 2 | 2:01:00 | 1:57:35 | 500 MB | 0.00 |" in md
    assert "| teacher T | train_teacher; evaluate_teacher | 2 | 1:06:00 | 0:01:40 | 1000 MB | 2.10 |" in md
    assert "| **all jobs** | every job above, once | 11 |" in md


def test_bad_inputs_name_the_problem(tmp_path):
    b, lg = bench(tmp_path, "b", (1, 1, 1)), log(tmp_path, "l")
    with pytest.raises(KdgridError, match="must match one to one"):
        costs.jobs(["setup/prepare"], [b, b], [lg])
    with pytest.raises(KdgridError, match="expected SCOPE/RULE"):
        costs.jobs(["cell/train_student/nat"], [b], [lg])  # a cell needs student and data
    (tmp_path / "bad.tsv").write_text("not a benchmark\n")
    with pytest.raises(KdgridError, match="bad.tsv: not a Snakemake benchmark file"):
        costs.read_benchmark(tmp_path / "bad.tsv")
    assert costs.gpus_in_log(tmp_path / "missing.log") == 0  # a deleted log cannot name a GPU


PATTERNS = [  # as the workflow passes them (costs.smk: cost_params)
    {"rule": "prepare", "scope": "setup", "benchmark": "r/benchmarks/prepare.tsv", "log": "r/logs/prepare.log"},
    {"rule": "distill", "scope": "data/{teacher}.{method}",
     "benchmark": "r/benchmarks/distill/{teacher}.{method}.{shard}.tsv",
     "log": "r/logs/distill/{teacher}.{method}.{shard}.log"},
    {"rule": "evaluate_teacher", "scope": "teacher/{teacher}",
     "benchmark": "r/benchmarks/evaluate_teacher/{teacher}.tsv", "log": "r/logs/e/{teacher}.log"},
    {"rule": "train_student", "scope": "cell/{student}/{data}",
     "benchmark": "r/benchmarks/train_student/{student}.{data}.tsv", "log": "r/logs/ts/{student}.{data}.log"},
]


def test_jobs_are_found_by_their_rules_paths_and_only_this_grids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("prepare", "distill/T.beam.0", "distill/T.beam.1", "distill/T.sample.0", "distill/U.beam.0",
                 "evaluate_teacher/T", "evaluate_teacher/U", "train_student/nat.raw",
                 "train_student/nat.T.beam", "train_student/cmlm.raw", "train_student/nat.T.beam.extra"):
        path = tmp_path / "r" / "benchmarks" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(HEADER + "1\t0:00:01\t10\t1\t1\t1\t0\t0\t0\t1\n")
    found = costs.discover(PATTERNS, students=["nat"], columns=["raw", "T.beam"], teachers=["T"])
    assert [label for label, _, _ in found] == [  # other grids' files (T.sample, U, cmlm) left out
        "setup/prepare", "data/distill/T.beam", "data/distill/T.beam", "teacher/evaluate_teacher/T",
        "cell/train_student/nat/T.beam", "cell/train_student/nat/raw"]
    assert found[1][1:] == ("r/benchmarks/distill/T.beam.0.tsv", "r/logs/distill/T.beam.0.log")
    rows = costs.table(costs.jobs(*map(list, zip(*found))))  # the logs are gone: no GPU, no error
    assert rows[-1]["jobs"] == 6 and rows[-1]["gpu_hours"] == 0


def test_a_seeded_grids_runs_are_cells_of_their_own(tmp_path, monkeypatch):
    """grid.seeds: the runs nat.seed2, nat.seed3 are found like any cell (and not misread as a
    student nat on a column seed2.T.beam)."""
    monkeypatch.chdir(tmp_path)
    for name in ("train_student/nat.raw", "train_student/nat.seed2.raw", "train_student/nat.seed2.T.beam",
                 "train_student/nat.seed3.T.beam"):
        path = tmp_path / "r" / "benchmarks" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(HEADER + "1\t0:00:01\t10\t1\t1\t1\t0\t0\t0\t1\n")
    found = costs.discover(PATTERNS, students=["nat", "nat.seed2"], columns=["raw", "T.beam"], teachers=["T"])
    assert sorted(label for label, _, _ in found) == [  # nat.seed3 is another grid's run
        "cell/train_student/nat.seed2/T.beam", "cell/train_student/nat.seed2/raw", "cell/train_student/nat/raw"]


def test_a_columns_cost_is_the_jobs_that_make_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, cpu in (("train_teacher/T", 3600), ("distill/T.beam.0", 1800), ("align_distilled/T.beam", 900)):
        path = tmp_path / "r" / "benchmarks" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(HEADER + f"1\t0:00:01\t10\t1\t1\t1\t0\t0\t0\t{cpu}\n")
    more = [{"rule": "train_teacher", "scope": "teacher/{teacher}",
             "benchmark": "r/benchmarks/train_teacher/{teacher}.tsv", "log": "r/logs/tt/{teacher}.log"},
            {"rule": "align_distilled", "scope": "data/{teacher}.{method}",
             "benchmark": "r/benchmarks/align_distilled/{teacher}.{method}.tsv",
             "log": "r/logs/a/{teacher}.{method}.log"}]
    found = costs.discover(PATTERNS + more, students=["nat"], columns=["raw", "T.beam"], teachers=["T"])
    assert len(found) == 3
    cost = costs.column_cost(costs.jobs(*map(list, zip(*found))))
    assert cost("T.beam") == 1.5  # the teacher's training and the distillation; the alignment measures
    assert cost("raw") == 0.0 and cost("U.beam") is None


def test_an_ensemble_columns_cost_is_its_members_training_and_the_join(tmp_path, monkeypatch):
    """teacher E = ensemble of A and B: E.beam costs A's and B's training, the job that joins them
    and its distillation; A.beam (A also a grid teacher) costs A's training only."""
    monkeypatch.chdir(tmp_path)
    rules = {"train_teacher": "teacher/{teacher}", "ensemble_teacher": "teacher/{teacher}",
             "distill": "data/{teacher}.{method}"}
    patterns = [{"rule": r, "scope": scope, "benchmark": f"r/benchmarks/{r}/" + scope.split("/")[1] + ".tsv",
                 "log": f"r/logs/{r}/x.log"} for r, scope in rules.items()]
    for name, cpu in (("train_teacher/A", 3600), ("train_teacher/B", 7200), ("ensemble_teacher/E", 36),
                      ("distill/E.beam", 1800), ("distill/A.beam", 900)):
        path = tmp_path / "r" / "benchmarks" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(HEADER + f"1\t0:00:01\t10\t1\t1\t1\t0\t0\t0\t{cpu}\n")
    found = costs.discover(patterns, students=["nat"], columns=["raw", "E.beam", "A.beam"], teachers=["A", "B", "E"])
    job_list = costs.jobs(*map(list, zip(*found)))
    cost = costs.column_cost(job_list, {"E": ["A", "B"]})
    assert cost("E.beam") == pytest.approx(3.51) and cost("A.beam") == pytest.approx(1.25)
    assert costs.column_cost(job_list)("E.beam") == pytest.approx(0.51)  # without the map: the join only


# filter.smk's benchmark paths (under r/benchmarks/, logs alike under r/logs/)
FILTER_PATHS = {"train_filter_teacher": "train_filter_teacher", "filter_labels": "filter_labels",
                "filter_teacher": "filter_teacher", "filter_student": "filter_student/{label_set}.{classifier}.{seed}",
                "filter_apply": "filter_apply"}


def test_the_filter_the_grid_trains_behind_is_charged_to_its_setup(tmp_path, monkeypatch):
    """corpus.clean.filter: every cell trains on the pairs the filter kept, so its teacher, labelled
    set, head, the chosen student classifier and filter_apply are setup of the grid, read from their
    benchmark files like any job; the comparison's other students (not waited for) are not charged."""
    monkeypatch.chdir(tmp_path)
    clean = filter_check.clean_filter_spec({"corpus": {"clean": {"filter": {"classifier": "lelp"}}}})
    pins = filter_check.cost_wildcards(clean)
    patterns = [{"rule": rule, "scope": scope, "benchmark": f"r/benchmarks/{FILTER_PATHS[rule]}.tsv",
                 "log": f"r/logs/{FILTER_PATHS[rule]}.log", **({"wildcards": pins[rule]} if rule in pins else {})}
                for rule, scope in filter_check.cost_scopes(clean).items()]  # as costs.smk's cost_params
    wall = {"prepare": 10, "train_filter_teacher": 600, "filter_labels": 5, "filter_teacher": 60,
            "filter_student/few.lelp.1": 120, "filter_apply": 30,  # the chosen student: few, lelp, seed 1
            "filter_student/few.kd.1": 1000, "filter_student/binary.lelp.1": 1000, "filter_student/few.lelp.2": 1000}
    for name, seconds in wall.items():
        path = tmp_path / "r" / "benchmarks" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(HEADER + f"{seconds}\t0:00:01\t10\t1\t1\t1\t0\t0\t0\t{seconds / 2}\n")
    found = costs.discover(PATTERNS + patterns, students=["nat"], columns=["raw"], teachers=["T"])
    assert [job for job in found if "filter_student" in job[0]] == [
        ("setup/filter_student", "r/benchmarks/filter_student/few.lelp.1.tsv", "r/logs/filter_student/few.lelp.1.log")]
    (setup,) = [r for r in costs.table(costs.jobs(*map(list, zip(*found)))) if r["scope"] == "setup"]
    assert setup["rules"] == "; ".join(["prepare", *filter_check.GATING_RULES])
    assert (setup["jobs"], setup["wall_seconds"], setup["cpu_seconds"]) == (6, 825, 412.5)
    # without corpus.clean.filter the filter gates nothing: the comparison is not the grid's cost
    assert filter_check.cost_scopes(None) == {} == filter_check.cost_wildcards(None)
    with pytest.raises(KdgridError, match="has no wildcard.s. seed to fix"):
        costs.discover([{**PATTERNS[0], "wildcards": {"seed": "1"}}], ["nat"], ["raw"], ["T"])
