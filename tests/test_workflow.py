"""The workflow: dry-runs plan exactly the grid, every rule calls a real CLI verb, and a real toy
grid runs end to end, after which one cell can be rerun alone."""

from __future__ import annotations

import csv
import json
import re
import shlex

import pytest
from conftest import ROOT, TOY, job_counts, snakemake, write_config

from kdgrid import cli

TOY_MULTIWAY = ROOT / "tests" / "configs" / "toy_multiway.yaml"
TOY_STUDENTS = ROOT / "tests" / "configs" / "toy_students.yaml"
ALL_STUDENTS = ["nat", "inat", "cmlm", "levt", "inst", "flowseq", "at_student"]


def expected_jobs(teachers, methods, students, shards=1, multiway=False):
    t, m, s = len(teachers), len(methods), len(students)
    counts = {"prepare": 1, "vocab": 1, "train_teacher": t, "evaluate_teacher": 2 * t,
              "distill": t * m * shards, "gather": t * m, "encode_distilled": t * m,
              "train_student": s * (1 + t * m), "evaluate_student": s * (1 + t * m),
              "align_raw": 1, "data_metrics_raw": 1, "align_distilled": t * m, "data_metrics_distilled": t * m,
              "align_teacher_valid": t, "teacher_valid_metrics": t, "aggregate": 1, "all": 1}
    if multiway:
        counts.update(language_mix_teacher=t, language_mix_student=s * (1 + t * m))
    return {k: v for k, v in counts.items() if v}


SHAPES = [
    (["toy"], ["beam"], ["nat"], 1),
    (["toy", "toy2"], ["beam", "greedy", "sample"], ["nat", "nat_mask"], 1),
    ([], [], ["nat"], 1),
    (["toy", "toy2"], ["beam", "sample_topk"], ["nat"], 4),
]


def shaped_config(tmp_path, teachers, methods, students, shards):
    return write_config(
        tmp_path / "cfg.yaml", TOY,
        teacher_sizes={"toy2": {"d_model": 48, "ffn": 96, "layers": 2, "heads": 4}},
        students={"nat_mask": {"kind": "nat", "model": {"d_model": 32, "ffn": 64, "encoder_layers": 1,
                                                         "decoder_layers": 1, "heads": 2,
                                                         "decoder_input": "mask"}}},
        grid={"teachers": teachers, "methods": methods, "students": students},
        distill={"shards": shards},
    )


@pytest.mark.parametrize("teachers,methods,students,shards", SHAPES)
def test_dry_run_plans_exactly_the_grid(tmp_path, teachers, methods, students, shards):
    cfg = shaped_config(tmp_path, teachers, methods, students, shards)
    proc = snakemake(tmp_path, "-n", configfile=cfg)
    assert job_counts(proc.stdout) == expected_jobs(teachers, methods, students, shards)


def rule_commands(output: str) -> dict[str, set[str]]:
    commands, rule = {}, None
    for line in output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
        elif line.startswith("Shell command:") and rule:
            command = line.removeprefix("Shell command:").strip()
            if command != "None":  # a rule with only inputs, like `all`
                commands.setdefault(rule, set()).add(command)
    return commands


def test_multiway_dry_run_adds_language_mix_jobs(tmp_path):
    proc = snakemake(tmp_path, "-n", configfile=TOY_MULTIWAY)
    assert job_counts(proc.stdout) == expected_jobs(["toy"], ["beam"], ["nat"], multiway=True)


@pytest.mark.parametrize("multiway", [False, True])
def test_every_rule_runs_an_existing_cli_verb_with_valid_arguments(tmp_path, multiway):
    cfg = TOY_MULTIWAY if multiway else shaped_config(tmp_path, *SHAPES[3])
    proc = snakemake(tmp_path, "-n", "-p", configfile=cfg)
    commands = rule_commands(proc.stdout)
    all_rules = set(snakemake(tmp_path, "--list-rules", configfile=cfg).stdout.split())
    assert set(commands) == all_rules - {"all"}, "a rule without a shell command, or never planned"
    parser = cli.parser()
    for rule, cmds in commands.items():
        for cmd in cmds:
            words = shlex.split(cmd)
            assert words[:3] == ["python", "-m", "kdgrid"], (rule, cmd)
            assert words[3] in cli.VERBS, f"rule {rule} calls unknown verb {words[3]!r}"
            args = words[3: words.index("2>")] if "2>" in words else words[3:]
            parser.parse_args(args)  # exits (fails the test) on an unknown or missing option


# -- a real run ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("toyrun")
    proc = snakemake(work, "--cores", "2", "--show-failed-logs", configfile=TOY)
    return work, proc


def test_toy_grid_end_to_end_has_a_number_in_every_cell(toy_run):
    work, _ = toy_run
    rows = list(csv.DictReader(open(work / "results/toy/grid.csv")))
    assert [r["student"] for r in rows] == ["nat", "C(d)", "F(d)"]
    assert list(rows[0]) == ["student", "raw", "toy.beam", "toy.greedy"]
    for value in list(rows[0].values())[1:]:  # a BLEU in every cell
        assert 0.0 <= float(value) <= 100.0
    assert rows[1]["student"] == "C(d)" and rows[2]["student"] == "F(d)"
    c_raw, c_beam = float(rows[1]["raw"]), float(rows[1]["toy.beam"])
    assert c_raw > 0.5 and float(rows[2]["raw"]) == 0.0 and float(rows[2]["toy.beam"]) > 0.0
    assert c_beam < c_raw  # even a barely trained teacher's beam output is simpler than raw data
    md = (work / "results/toy/grid.md").read_text()
    assert "| nat |" in md and "BLEU signature: `nrefs:1" in md and "| complexity C(d) |" in md
    assert (work / "results/toy/plots/bleu_vs_complexity.png").read_bytes()[:4] == b"\x89PNG"
    assert (work / "results/toy/grid.png").read_bytes()[:4] == b"\x89PNG"
    log = (work / "results/toy/logs/train_teacher/toy.log").read_text()
    assert re.search(r"train 40/40 \(100%\) .* tok/s .* ETA", log)
    # nothing left to do afterwards
    assert "Nothing to be done" in snakemake(work, "-n", configfile=TOY).stdout


def test_single_cell_rerun_touches_only_that_cell(toy_run):
    work, _ = toy_run
    models = {p: p.stat().st_mtime_ns for p in (work / "results/toy").rglob("model.pt")}
    cell = "results/toy/students/nat/toy.beam/scores.json"
    proc = snakemake(work, "--forcerun=train_student", "--cores", "2", cell, configfile=TOY)
    assert job_counts(proc.stdout + proc.stderr) == {"train_student": 1, "evaluate_student": 1}
    changed = {p.relative_to(work).as_posix() for p, t in models.items() if p.stat().st_mtime_ns != t}
    assert changed == {"results/toy/students/nat/toy.beam/model.pt"}
    # same seed, same data: the retrained cell reproduces its score
    rows = [r for r in csv.DictReader(open(work / "results/toy/grid.csv")) if r["student"] == "nat"]
    again = snakemake(work, "--cores", "2", configfile=TOY)
    assert job_counts(again.stdout + again.stderr) == {"aggregate": 1, "all": 1}
    assert [r for r in csv.DictReader(open(work / "results/toy/grid.csv")) if r["student"] == "nat"] == rows


def test_multiway_toy_grid_end_to_end(tmp_path):
    snakemake(tmp_path, "--cores", "2", configfile=TOY_MULTIWAY)
    out = tmp_path / "results/toy_multiway"
    md = (out / "grid.md").read_text()
    assert "BLEU signature: `nrefs:3" in md  # one reference per language
    assert "| AT toy |" in md and "| nat on raw |" in md and "| nat on toy.beam |" in md
    assert (out / "plots/language_mix.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "data/train.src").read_text().splitlines()) == 3 * 150
    assert set((out / "data/train.lang").read_text().split()) == {"m0", "m1", "m2"}


def test_every_shipped_config_dry_runs(tmp_path):
    """Every config in configs/ plans a DAG (keeps the Snakefile from rotting under them). Local
    inputs are stood in for: the shared Multi30k copies or, where absent, tiny placeholder files."""
    import yaml

    stand_in = tmp_path / "stand_in.txt"
    stand_in.write_text("a\n")
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        files = cfg["corpus"].get("files", {})
        for spec in files.values():  # local sides -> a file that exists
            for key in ("src", "tgt"):
                side = spec.get(key)
                if isinstance(side, str):
                    spec[key] = str(stand_in)
                elif isinstance(side, dict) and "url" not in side:
                    spec[key] = {lang: str(stand_in) if isinstance(s, str) else s for lang, s in side.items()}
        local = tmp_path / path.name
        local.write_text(yaml.safe_dump(cfg))
        proc = snakemake(tmp_path, "-n", configfile=local)
        counts = job_counts(proc.stdout)
        g = cfg["grid"]
        assert counts["train_student"] == len(g["students"]) * (1 + len(g["teachers"]) * len(g["methods"])), path


def test_full_roster_dry_run_plans_every_student(tmp_path):
    proc = snakemake(tmp_path, "-n", configfile=TOY_STUDENTS)
    assert job_counts(proc.stdout) == expected_jobs(["toy"], ["beam"], ALL_STUDENTS)


def test_a_rescoring_teacher_is_trained_even_when_the_grid_distills_with_none(tmp_path):
    cfg = write_config(tmp_path / "rescore.yaml", TOY, grid={"teachers": [], "methods": [], "students": ["nat"]},
                       students={"nat": {"decode": {"length_beam": 3, "rescore": "toy"}}})
    proc = snakemake(tmp_path, "-n", "-p", configfile=cfg)
    counts = job_counts(proc.stdout)
    assert counts["train_teacher"] == 1 and "distill" not in counts and "evaluate_teacher" not in counts
    assert "--rescorer results/toy/teachers/toy/model.pt" in proc.stdout
    assert '"rescore"' not in proc.stdout  # the option travels as a file, not as a decode option


def test_every_student_kind_runs_through_the_workflow(tmp_path):
    snakemake(tmp_path, "--cores", "2", "--show-failed-logs", configfile=TOY_STUDENTS)
    rows = list(csv.DictReader(open(tmp_path / "results/toy_students/grid.csv")))
    assert [r["student"] for r in rows] == [*ALL_STUDENTS, "C(d)", "F(d)"]
    for row in rows[: len(ALL_STUDENTS)]:
        for column in ("raw", "toy.beam"):  # a BLEU in every cell
            assert 0.0 <= float(row[column]) <= 100.0, (row["student"], column)
    for student in ALL_STUDENTS:
        scores = json.loads((tmp_path / f"results/toy_students/students/{student}/raw/scores.json").read_text())
        assert scores["decode"]["sentences"] == 30
    flowseq = json.loads((tmp_path / "results/toy_students/students/flowseq/raw/scores.json").read_text())
    assert flowseq["decode_options"]["rescorer"] == "results/toy_students/teachers/toy/model.pt"
    assert flowseq["decode_options"]["samples"] == 3
