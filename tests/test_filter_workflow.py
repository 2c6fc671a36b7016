"""The corpus filter in the workflow: the jobs a `filter:` section and corpus.clean.filter plan, the
switch of the grid's training pair, commands the CLI accepts, config errors naming their keys, and
plain configs whose commands are exactly those from before the filter existed."""

from __future__ import annotations

import json
import shlex
import sys

import pytest
import yaml
from conftest import ROOT, TOY, job_counts, snakemake, write_config
from test_config import SCHEMA, TOY_CFG, merged
from test_workflow import expected_jobs, rule_commands

from kdgrid import cli

sys.path.insert(0, str(ROOT / "workflow"))
from config_check import ConfigError, check  # noqa: E402
from filter_check import FILTER_DEFAULTS  # noqa: E402

TOY_SECTION5 = ROOT / "tests" / "configs" / "toy_section5.yaml"
SMALL_FILTER = {"teacher": "toy", "train_pairs": 200, "valid_pairs": 40, "head": {"steps": 50},
                "train": {"steps": 20}, "student": {"d_model": 16, "ffn": 32, "layers": 1, "heads": 2}}
CLEAN_FILTER = {"clean": {"filter": {"classifier": "lelp", "threshold": 0.5}}, "noise": {"share": 0.2}}
FILTER_RULES = {"train_filter_teacher", "filter_labels", "filter_teacher", "filter_student", "filter_report"}


def filter_jobs(filtered: bool, students: int) -> dict[str, int]:
    return {"train_filter_teacher": 1, "filter_labels": 1, "filter_teacher": 1, "filter_student": students,
            "filter_report": 1, **({"filter_apply": 1} if filtered else {})}


@pytest.fixture(scope="module")
def filtered_dry_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("filtered")
    cfg = write_config(work / "cfg.yaml", TOY, filter=SMALL_FILTER, corpus=CLEAN_FILTER)
    return snakemake(work, "-n", "-p", configfile=cfg).stdout


def plain_commands(tmp_path, config=TOY) -> dict[str, list[str]]:
    proc = snakemake(tmp_path, "-n", "-p", configfile=config)
    return {rule: sorted(cmds) for rule, cmds in rule_commands(proc.stdout).items()}


@pytest.mark.parametrize("config", [TOY, TOY_SECTION5], ids=["toy", "toy_section5"])
def test_a_plain_config_reads_the_prepared_pair_and_plans_no_filter_job(tmp_path, config):
    """Without a filter section nothing of the filter shows: no job, no path, no option (the
    commands were also checked byte-identical to those before the filter when it was added)."""
    commands = plain_commands(tmp_path, config)
    assert not set(commands) & (FILTER_RULES | {"filter_apply"})
    for rule, cmds in commands.items():
        for cmd in cmds:
            assert "filter" not in cmd and "--train-noise" not in cmd, (rule, cmd)


def test_a_filter_section_adds_the_classifier_comparison_only(tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", TOY, filter={**SMALL_FILTER, "seeds": [1, 2]})
    proc = snakemake(tmp_path, "-n", "-p", configfile=cfg)
    students = 2 * len(FILTER_DEFAULTS["methods"]) * len(FILTER_DEFAULTS["labels"])
    assert job_counts(proc.stdout) == {**expected_jobs(["toy"], ["beam", "greedy"], ["nat"]),
                                       **filter_jobs(False, students)}
    commands = rule_commands(proc.stdout)
    # without corpus.clean.filter the grid's jobs are those of the same config without a filter
    plain = plain_commands(tmp_path / "plain")
    assert {r: sorted(c) for r, c in commands.items() if r not in FILTER_RULES} == plain


def test_clean_filter_switches_the_grids_training_pair(filtered_dry_run):
    students = 3 * 3 * 2
    assert job_counts(filtered_dry_run) == {**expected_jobs(["toy"], ["beam", "greedy"], ["nat"]),
                                            **filter_jobs(True, students)}
    commands = rule_commands(filtered_dry_run)
    for rule in ("train_teacher", "train_student"):
        for cmd in commands[rule]:
            assert "--train-src results/toy/filtered/train.src.npz" in cmd, (rule, cmd)
    raw = [c for c in commands["train_student"] if "--train-tgt results/toy/filtered/train.tgt.npz" in c]
    assert len(raw) == 1  # the raw cell learns the filtered targets
    for rule in ("distill", "align_raw", "data_metrics_raw", "align_distilled", "data_metrics_distilled"):
        for cmd in commands[rule]:
            assert "results/toy/filtered/train.src" in cmd and "data/train.src" not in cmd, (rule, cmd)
    # the cycle is broken: the vocabulary and the filter's own teacher use the unfiltered pair
    (teacher,) = commands["train_filter_teacher"]
    assert "--train-src results/toy/vocab/train.src.npz" in teacher
    (vocab,) = commands["vocab"]
    assert "--train-text results/toy/data/train.src results/toy/data/train.tgt" in vocab
    (apply,) = commands["filter_apply"]
    assert "--model results/toy/filter/students/few/lelp.1/model.pt" in apply and "--threshold 0.5" in apply
    assert "--prior configured --corpus-prior 0.8" in apply  # the default: the configured clean share
    (labels,) = commands["filter_labels"]
    assert '"holdout":["shuffled"]' in labels  # the default held-out kind
    (report,) = commands["filter_report"]
    assert '"corpus_prior":0.8' in report and '"prior":"configured"' in report
    (prepare,) = commands["prepare"]
    assert "--train-noise results/toy/data/train.noise" in prepare and '"filter"' not in prepare


def test_every_filter_rule_runs_a_verb_the_cli_accepts(filtered_dry_run):
    parser = cli.parser()
    commands = rule_commands(filtered_dry_run)
    assert FILTER_RULES | {"filter_apply"} <= set(commands)
    for rule, cmds in commands.items():
        for cmd in cmds:
            words = shlex.split(cmd)
            assert words[0] == "kdgrid" and words[1] in cli.VERBS, (rule, cmd)
            parser.parse_args(words[1: words.index("2>")])


def test_the_cost_table_charges_the_filter_the_grid_trains_behind(filtered_dry_run):
    """aggregate's cost patterns: the filter's jobs, the chosen student classifier's only, are setup."""
    (aggregate,) = rule_commands(filtered_dry_run)["aggregate"]
    words = shlex.split(aggregate)
    patterns = {p["rule"]: p for p in json.loads(words[words.index("--params") + 1])["costs"]["patterns"]}
    for rule in ("train_filter_teacher", "filter_labels", "filter_teacher", "filter_student", "filter_apply"):
        assert patterns[rule]["scope"] == "setup", rule
    student = patterns["filter_student"]
    assert student["benchmark"] == "results/toy/benchmarks/filter_student/{label_set}.{classifier}.{seed}.tsv"
    assert student["wildcards"] == {"label_set": "few", "classifier": "lelp", "seed": "1"}
    assert "filter_report" not in patterns and "wildcards" not in patterns["filter_apply"]


BAD = [
    ({"corpus": {"clean": {"filter": {"classifier": "svm"}}}, "filter": SMALL_FILTER},
     r"corpus.clean.filter.classifier: 'svm' is not one of"),
    ({"corpus": {"clean": {"filter": {"classifier": "lelp", "threshold": 1.5}}}, "filter": SMALL_FILTER},
     r"corpus.clean.filter.threshold: 1.5 is greater than the maximum of 1"),
    ({"filter": {**SMALL_FILTER, "teacher": "huge"}}, r"filter.teacher: 'huge' is not defined under teacher_sizes"),
    ({"corpus": {"clean": {"filter": {"classifier": "kd"}}}}, r"corpus.clean.filter: needs a `filter:` section"),
    ({"corpus": {"clean": {"filter": {"classifier": "kd"}}}, "filter": {**SMALL_FILTER, "methods": ["lelp"]}},
     r"corpus.clean.filter.classifier: 'kd' is not in filter.methods"),
    ({"filter": {**SMALL_FILTER, "kinds": {"clean": 0.5, "copy": 0.4}}}, r"filter.kinds: the shares must sum to 1"),
    ({"corpus": {"noise": {"kinds": {"copy": 0.5, "shuffled": 0.6}}}}, r"corpus.noise.kinds: the shares must sum"),
    ({"corpus": {"noise": {"kinds": {"clean": 0.5, "copy": 0.5}}}}, r"corpus.noise.kinds: .* should not be valid"),
    ({"filter": {**SMALL_FILTER, "lelp": {"S": 65}}}, r"filter.lelp.S: 65 subclasses .* 64 dimensions"),
    ({"filter": {**SMALL_FILTER, "methods": ["svm"]}}, r"filter.methods\[0\]: 'svm' is not one of"),
    ({"filter": {**SMALL_FILTER, "prior": "bayes"}}, r"filter.prior: 'bayes' is not one of \['em', 'configured'"),
    ({"filter": {**SMALL_FILTER, "corpus_prior": {"clean": 1.5}}}, r"filter.corpus_prior.clean: 1.5 is greater"),
    ({"filter": {**SMALL_FILTER, "holdout_kind": "clean"}}, r"filter.holdout_kind: 'clean' is not one of"),
    ({"filter": {**SMALL_FILTER, "kinds": {"clean": 0.5, "copy": 0.5}}},
     r"filter.holdout_kind: 'shuffled' \(the default\) has no share in filter.kinds; .* or set it to null"),
    ({"filter": {**SMALL_FILTER, "holdout_kind": ["misaligned", "truncated", "copy", "shuffled"]}},
     r"filter.holdout_kind: holds out every noise kind"),
]


@pytest.mark.parametrize("layer,message", BAD)
def test_filter_config_errors_name_their_key(layer, message):
    with pytest.raises(ConfigError, match=message):
        check(merged(TOY_CFG, layer), SCHEMA, ["test"])


def test_the_multi30k_filter_config_compares_noisy_filtered_and_clean():
    cfg = yaml.safe_load((ROOT / "configs" / "multi30k_noisy_filter.yaml").read_text())
    base = yaml.safe_load((ROOT / "configs" / "multi30k.yaml").read_text())
    assert cfg["corpus"]["files"] == base["corpus"]["files"] and cfg["corpus"]["noise"]["share"] == 0.2
    assert cfg["corpus"]["clean"]["filter"]["classifier"] == "lelp"
    assert cfg["grid"] == {"teachers": ["cpu_s"], "methods": ["beam"], "students": ["nat"]}
    assert sorted(cfg["filter"].get("methods", FILTER_DEFAULTS["methods"])) == ["kd", "labels", "lelp"]
    check(merged(cfg), SCHEMA, ["multi30k_noisy_filter.yaml"])
    # the noisy baseline: the same run without the filter, under its own name
    noisy = yaml.safe_load((ROOT / "configs" / "multi30k_noisy.yaml").read_text())
    del cfg["filter"], cfg["corpus"]["clean"]
    cfg["corpus"]["name"] = noisy["corpus"]["name"] = "same"
    assert noisy == cfg


@pytest.mark.slow
def test_a_toy_filter_runs_for_real(tmp_path):
    """The filter's rules end to end on the toy corpus (one seed; tiny classifiers, so their scores
    mean nothing here): the table with its held-out kind, the filter's counts with the prior
    correction, and a filtered pair that lines up: the filtered text and ids are, row for row and
    in order, rows of the unfiltered pair, and their injected kinds are the counts reported."""
    from kdgrid.batching import load_ids

    clean = {"clean": {"filter": {"classifier": "lelp", "labels": "binary", "threshold": 0.2}}, "noise": {"share": 0.2}}
    cfg = write_config(tmp_path / "cfg.yaml", TOY, filter={**SMALL_FILTER, "seeds": [1]}, corpus=clean)
    snakemake(tmp_path, "--cores", "2", "results/toy/filter.md", configfile=cfg)
    r = tmp_path / "results" / "toy"
    rows = (r / "filter.csv").read_text().splitlines()
    assert rows[0].startswith("labels,classifier") and len(rows) == 1 + 2 * 4  # per label set: head + 3 methods
    assert "noisy_precision_mean" in rows[0] and "held_out_shuffled_recall_mean" in rows[0]
    applied = json.loads((r / "filtered" / "filter.json").read_text())
    assert applied["kept"] + applied["dropped"] == applied["pairs"] == 300
    assert sum(applied["kept_by_kind"].values()) == applied["kept"] and applied["method"] == "lelp"
    assert applied["prior"]["mode"] == "configured" and applied["prior"]["corpus_clean"] == 0.8  # the default
    assert applied["prior"]["train_clean"] == pytest.approx(0.5) and applied["holdout"] == ["shuffled"]
    assert sum(applied["kept_by_kind_uncorrected"].values()) == applied["kept_uncorrected"]

    text = {name: (r / "data" / f"train.{name}").read_text().splitlines() for name in ("src", "tgt", "noise")}
    kept = {name: (r / "filtered" / f"train.{name}").read_text().splitlines() for name in ("src", "tgt")}
    ids = {side: load_ids(r / "vocab" / f"train.{side}.npz") for side in ("src", "tgt")}
    kept_ids = {side: load_ids(r / "filtered" / f"train.{side}.npz") for side in ("src", "tgt")}
    assert len(kept["src"]) == len(kept["tgt"]) == len(kept_ids["src"]) == len(kept_ids["tgt"]) == applied["kept"]
    rows_kept, i = [], 0  # each kept pair is the next unfiltered row with that very pair
    for pair in zip(kept["src"], kept["tgt"]):
        while (text["src"][i], text["tgt"][i]) != pair:
            i += 1
        rows_kept.append(i)
        i += 1
    for j, i in enumerate(rows_kept):
        for side in ("src", "tgt"):
            assert kept_ids[side][j].tolist() == ids[side][i].tolist(), (side, j, i)
    kinds = [text["noise"][i] for i in rows_kept]
    assert {k: kinds.count(k) for k in set(kinds)} == applied["kept_by_kind"]

    stats = json.loads((r / "data" / "stats.json").read_text())
    assert stats["noise"]["per_kind"]["clean"] == 240
    md = (r / "filter.md").read_text()
    assert "The filter on the training data" in md and "| shuffled (held out of training) |" in md
    assert "shuffled R (held out)" in md and "without the correction kept" in md
    assert "shuffled" not in set((r / "filter" / "labelled" / "train.labels").read_text().split())
    student = json.loads((r / "filter" / "students" / "few" / "lelp.1" / "scores.json").read_text())
    assert student["lelp"]["S"] == 4 and student["lelp"]["null_space"] and 0 <= student["accuracy"] <= 1
    assert student["classes"] == ["clean", "misaligned", "truncated", "copy"] and student["holdout"] == ["shuffled"]
    assert len(student["valid_p_clean"]["shuffled"]) == 5  # 40 valid pairs, 1/8 of them the held-out kind
