"""The workflow: dry-runs plan exactly the grid, every rule calls a real CLI verb, and a real toy
grid runs end to end, after which one cell can be rerun alone."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shlex
import subprocess

import pytest
from conftest import BIN, ROOT, TOY, job_counts, snakemake, write_config

from kdgrid import cli

TOY_MULTIWAY = ROOT / "tests" / "configs" / "toy_multiway.yaml"
TOY_STUDENTS = ROOT / "tests" / "configs" / "toy_students.yaml"
ALL_STUDENTS = ["nat", "inat", "cmlm", "levt", "inst", "flowseq", "ctc", "dat", "at_student",
                "nat_init", "cmlm_okd", "ctc_glat"]  # training wrappers: the teacher's weights, its
# distribution (online), glancing at the gold target


def expected_jobs(teachers, methods, students, shards=1, multiway=False, columns=None, bans=0, seeds=1):
    """Jobs of a grid. `columns`: its distilled columns where they are not teachers x methods (a
    ban method yields one per round, a moe method none for teachers without experts); `bans`: the
    Born-Again ATs it trains (rounds >= 2); `seeds`: runs per student (grid.seeds), which multiply
    the student cells and nothing else."""
    t, s = len(teachers), len(students) * seeds
    m = t * len(methods) if columns is None else columns  # distilled columns
    counts = {"prepare": 1, "vocab": 1, "train_teacher": t, "evaluate_teacher": t, "train_ban": bans,
              "distill": m * shards, "gather": m, "encode_distilled": m,
              "train_student": s * (1 + m), "evaluate_student": s * (1 + m),
              "align_raw": 1, "data_metrics_raw": 1, "align_distilled": m, "data_metrics_distilled": m,
              "align_teacher_valid": t, "teacher_valid_metrics": t, "aggregate": 1, "all": 1}
    if multiway:
        counts.update(language_mix_teacher=t, language_mix_student=s * (1 + m))
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
    # every rule planned: the section-5 methods too (train_ban; distill with --ref), an ensemble teacher, an
    # imported teacher and a file method
    # the single-target grid reads files, with a second test set (the rules of corpus.files.tests)
    stand_in = tmp_path / "stand_in.txt"
    stand_in.write_text("a\n")
    side = {"src": str(stand_in), "tgt": str(stand_in)}
    corpus = {} if multiway else {"source": "files", "files": {"train": side, "valid": side, "test": side,
                                                               "tests": {"extra": side}}}
    # an ensemble teacher too (ensemble_teacher), of one member in the multi-way grid, and an imported set
    base = TOY_MULTIWAY if multiway else shaped_config(tmp_path, *SHAPES[3])
    teachers = ["toy"] if multiway else SHAPES[3][0]
    released = {"kind": "file", "tgt": str(stand_in), "sha256": hashlib.sha256(b"a\n").hexdigest(),
                "src": str(stand_in)}
    imported = {"import": {"model": str(stand_in), "sha256": released["sha256"]}}  # (a dry run reads no file)
    cfg = write_config(tmp_path / "every_rule.yaml", base, methods={"released": released}, corpus=corpus,
                       teacher_sizes={"joint": {"ensemble": teachers}, "prev": imported},
                       grid={"teachers": [*teachers, "joint", "prev"],
                             "methods": ["beam", "sample_topk", "interpolate", "ban", "released"]})
    proc = snakemake(tmp_path, "-n", "-p", configfile=cfg)
    commands = rule_commands(proc.stdout)
    all_rules = set(snakemake(tmp_path, "--list-rules", configfile=cfg).stdout.split())
    only_files = {"prepare_test_set", "evaluate_teacher_test_set", "evaluate_student_test_set"} if multiway else set()
    assert set(commands) == all_rules - {"all"} - only_files, "a rule without a shell command, or never planned"
    parser = cli.parser()
    for rule, cmds in commands.items():
        for cmd in cmds:
            words = shlex.split(cmd)
            assert words[0] == "kdgrid", (rule, cmd)  # the Snakefile's shell function
            assert words[1] in cli.VERBS, f"rule {rule} calls unknown verb {words[1]!r}"
            args = words[1: words.index("2>")] if "2>" in words else words[1:]
            parser.parse_args(args)  # exits (fails the test) on an unknown or missing option


def test_the_ctranslate2_keys_reach_the_autoregressive_jobs_only(tmp_path):
    cfg = write_config(tmp_path / "ct2.yaml", TOY, decoding={"backend": "ctranslate2", "ct2_search": "fast"})
    commands = rule_commands(snakemake(tmp_path, "-n", "-p", configfile=cfg).stdout)
    for rule in ("distill", "evaluate_teacher"):
        assert all('"ct2_search":"fast"' in c and '"backend":"ctranslate2"' in c for c in commands[rule]), rule
    nat = [c for c in commands["evaluate_student"] if "students/nat/" in c]
    assert nat and not any("ct2_search" in c or "backend" in c for c in nat)


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
    assert "| faithfulness F(d) (floor 1e-10) |" in md and "| source types F(d) dropped |" in md
    assert (work / "results/toy/plots/bleu_vs_complexity.png").read_bytes()[:4] == b"\x89PNG"
    assert (work / "results/toy/grid.png").read_bytes()[:4] == b"\x89PNG"
    # the answer per student: a section of grid.md, a plot per student, the recommendations table
    answer = md[md.index("## Answer per student"):]
    assert "| student | recommended set | BLEU | C(d) | F(d) | runner-up | margin | reason |" in answer
    assert re.search(r"^\| nat \| .+ \|$", answer, re.MULTILINE)
    header, _, c_row = answer.split("simplest first")[1].splitlines()[2:5]
    assert sorted(header.strip("| ").split(" | ")) == ["raw", "toy.beam", "toy.greedy"]
    c_values = [float(v) for v in c_row.removeprefix("| C(d) |").strip("| ").split(" | ")]
    assert len(c_values) == 3 and c_values == sorted(c_values)  # columns ordered by C(d)
    assert (work / "results/toy/plots/students/nat.png").read_bytes()[:4] == b"\x89PNG"
    (rec,) = list(csv.DictReader(open(work / "results/toy/recommendations.csv")))
    assert rec["student"] == "nat" and rec["status"] in ("clear", "tie", "below_copy") and rec["reason"]
    assert float(rec["copy_source_bleu"]) >= 0 and rec["tie_bleu"] == "0.5"
    if rec["status"] == "below_copy":  # a barely trained toy grid may not beat copying: said plainly
        assert "no column beats copying the source" in rec["reason"] and "no recommendation" in rec["reason"]
    else:
        assert rec["best"] in ("raw", "toy.beam", "toy.greedy") and f"| nat | {rec['best']}" in answer
    log = (work / "results/toy/logs/train_teacher/toy.log").read_text()
    assert re.search(r"train 40/40 \(100%\) .* tok/s .* ETA", log)
    # nothing left to do afterwards
    assert "Nothing to be done" in snakemake(work, "-n", configfile=TOY).stdout


def test_toy_run_cost_table_counts_shared_jobs_once(toy_run):
    work, _ = toy_run
    rows = list(csv.DictReader(open(work / "results/toy/costs.csv")))
    assert [(r["scope"], r["student"] or r["data"] or r["teacher"]) for r in rows] == [
        ("cell", "nat"), ("cell", "nat"), ("cell", "nat"), ("data", "raw"), ("data", "toy.beam"),
        ("data", "toy.greedy"), ("teacher", "toy"), ("setup", ""), ("total", "")]
    assert [r["data"] for r in rows[:3]] == ["raw", "toy.beam", "toy.greedy"]
    assert rows[4]["rules"] == "distill; gather; encode_distilled; align_distilled; data_metrics_distilled"
    total = rows[-1]
    # every job but aggregate: one evaluation per cell and per teacher (its splits in one job)
    assert int(total["jobs"]) == 24 == sum(int(r["jobs"]) for r in rows[:-1])
    for key in ("wall_seconds", "gpu_hours"):  # the total is the sum of the rows: nothing counted twice
        assert float(total[key]) == pytest.approx(sum(float(r[key]) for r in rows[:-1]), abs=1e-4)
    assert all(float(r["wall_seconds"]) > 0 for r in rows)
    log = (work / "results/toy/logs/train_student/nat.raw.log").read_text()
    assert re.search(r"kdgrid device: (cpu|cuda:0)$", log, re.MULTILINE)
    md = (work / "results/toy/grid.md").read_text()
    assert "## Compute cost" in md and "| nat | toy.beam | 2 |" in md and "| teacher toy |" in md
    # benchmarks and logs are read, not inputs: deleting one reruns nothing
    for path in ("benchmarks/prepare.tsv", "logs/vocab.log"):
        (work / "results/toy" / path).rename(work / "results/toy" / f"{path}.away")
    try:
        proc = snakemake(work, "-n", configfile=TOY)
        assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-2000:]
    finally:
        for path in ("benchmarks/prepare.tsv", "logs/vocab.log"):
            (work / "results/toy" / f"{path}.away").rename(work / "results/toy" / path)


def test_report_holds_the_grid_plots_tables_and_captions(toy_run):
    """`snakemake --report x.zip` after the run: every result in its category, with its caption."""
    import zipfile

    work, _ = toy_run
    snakemake(work, "--report", "results/toy/report.zip", configfile=TOY)
    with zipfile.ZipFile(work / "results/toy/report.zip") as z:
        names = {n.rsplit("/", 1)[-1]: n for n in z.namelist()}
        html = z.read(names["report.html"]).decode()
        for f in ("grid.md", "grid.csv", "grid.png", "scores.csv", "teachers.csv", "data_metrics.csv",
                  "costs.csv", "bleu_vs_complexity.png", "bleu_vs_complexity.pdf", "recommendations.csv",
                  "recommendations.json"):
            assert z.read(names[f]) == (work / "results/toy" / ("plots/" if "complexity" in f else "") / f).read_bytes()
        assert z.read(names["nat.png"]) == (work / "results/toy/plots/students/nat.png").read_bytes()
    categories = json.loads(re.search(r"var categories = (\{.*\});\n", html).group(1))
    assert categories["Grid"] == {"Tables": ["results/toy/grid.csv", "results/toy/grid.md"],
                                  "Heatmap": ["results/toy/grid.png"]}
    assert set(categories) == {"Grid", "Answer per student", "Students", "Data metrics", "Teachers", "Costs"}
    assert set(categories["Students"]) == {"Scores"}
    answer = categories["Answer per student"]
    assert set(answer) == {"Recommendations", "BLEU vs complexity"}
    assert "results/toy/plots/students/nat.png" in answer["BLEU vs complexity"]
    results = json.loads(re.search(r"var results = (\{.*\});\n", html).group(1))
    assert len(results) == 12 and all(len(r["caption"]) > 200 for r in results.values())
    caption = results["results/toy/recommendations.csv"]["caption"]
    assert re.search(r"tie_bleu</tt> =\s+0.5 BLEU", caption) and re.search(r"select_metric</tt> =\s+bleu", caption)
    assert "kdgrid device:" in results["results/toy/costs.csv"]["caption"]
    assert "Heatmap of student" in results["results/toy/grid.png"]["caption"]
    assert "max_updates</tt>: 40" in results["results/toy/teachers.csv"]["caption"]  # a config value
    assert "knowledge-distillation grid of corpus" in html and "{{" not in html


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
    # the cell's valid scores came with its test scores (one evaluate_student job): only the report reruns
    assert job_counts(again.stdout + again.stderr) == {"aggregate": 1, "all": 1}
    assert [r for r in csv.DictReader(open(work / "results/toy/grid.csv")) if r["student"] == "nat"] == rows


@pytest.mark.slow
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
        runs = len(g["students"]) * len(g.get("seeds") or [1])
        assert counts["train_student"] == runs * (1 + len(distilled_columns(cfg))), path


def distilled_columns(cfg: dict) -> list[str]:
    """A config's distilled columns (kdgrid.methods.kinds: ban rounds, moe only with experts, one
    per expert with `expert: each`)."""
    import yaml

    from kdgrid.methods import kinds as method_kinds

    defaults = yaml.safe_load((ROOT / "workflow" / "defaults.yaml").read_text())
    methods = {k: {**defaults["methods"].get(k, {}), **v} for k, v in {**defaults["methods"],
                                                                         **cfg.get("methods", {})}.items()}
    sizes = {**defaults["teacher_sizes"], **cfg.get("teacher_sizes", {})}
    return [f"{t}.{c}" for t in cfg["grid"]["teachers"] for m in cfg["grid"]["methods"]
            if method_kinds.fits(methods[m], t, sizes[t]) for c in method_kinds.columns(m, methods[m], sizes[t])]


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


def test_jobs_use_snakemakes_interpreter_without_the_venv_on_path(tmp_path):
    """`.venv/bin/snakemake` without an activated venv: the jobs must not pick up whatever
    `python` PATH offers (none here, or one without sentencepiece)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"
    cmd = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           f"--configfile={TOY}", "--cores", "1", "--show-failed-logs", "results/toy/vocab/spm.model"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "results/toy/vocab/spm.model").stat().st_size > 0


def test_a_seeded_grid_plans_each_student_cell_once_per_seed_and_nothing_more(tmp_path):
    """grid.seeds [1, 2, 3]: 3x the student cells (train, evaluate on test and valid), the teachers
    and distilled sets once; seed 1 (the students' own seed) keeps the single-seed paths and
    commands, the others are runs <student>.seed<N> trained with their seed."""
    single = snakemake(tmp_path, "-n", "-p", configfile=TOY).stdout
    cfg = write_config(tmp_path / "seeds.yaml", TOY, grid={"seeds": [1, 2, 3]})
    proc = snakemake(tmp_path, "-n", "-p", configfile=cfg)
    assert job_counts(proc.stdout) == expected_jobs(["toy"], ["beam", "greedy"], ["nat"], seeds=3)
    trains = {re.search(r"--out (\S+)", c).group(1): c for c in rule_commands(proc.stdout)["train_student"]}
    runs = ("nat", "nat.seed2", "nat.seed3")
    assert sorted(trains) == sorted(f"results/toy/students/{run}/{d}/model.pt" for run in runs
                                    for d in ("raw", "toy.beam", "toy.greedy"))
    for out, cmd in trains.items():
        seed = 1 if "/nat/" in out else int(re.search(r"seed(\d)", out).group(1))
        assert json.loads(shlex.split(cmd)[shlex.split(cmd).index("--train-params") + 1])["seed"] == seed
    # the seed-1 run is the single-seed grid's cell: the very same commands
    for rule in ("train_student", "evaluate_student"):
        assert set(rule_commands(single)[rule]) <= set(rule_commands(proc.stdout)[rule]), rule
    # seeds without the student's own: every run is a <student>.seed<N> run
    for seeds, own in (([2, 3], 1), ([1, 2], 7)):
        cfg = write_config(tmp_path / "other.yaml", TOY, grid={"seeds": seeds}, student={"train": {"seed": own}})
        outs = [re.search(r"--out (\S+)", c).group(1) for c in
                rule_commands(snakemake(tmp_path, "-n", "-p", configfile=cfg).stdout)["train_student"]]
        assert sorted({o.split("/")[3] for o in outs}) == [f"nat.seed{n}" for n in seeds]
