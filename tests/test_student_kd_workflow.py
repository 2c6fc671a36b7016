"""Students that learn from a teacher (issue 13): copy-weight init, word-level KD and online KD are
student variants, new rows of the grid. Dry runs plan their teacher once and pass it, with the
wrapper options, to `kdgrid train`; plain students keep their command; bad options are config
errors that name the key."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys

import pytest
import yaml
from conftest import ROOT, TOY, job_counts, snakemake, write_config
from test_config import SCHEMA, merged
from test_workflow import expected_jobs, rule_commands

sys.path.insert(0, str(ROOT / "workflow"))
from config_check import ConfigError, check  # noqa: E402

from kdgrid.kd.specs import GLANCE_KINDS, INIT_KINDS, KD_KINDS  # noqa: E402

TOY_KD = ROOT / "tests" / "configs" / "toy_student_kd.yaml"
TOY_KD_CFG = yaml.safe_load(TOY_KD.read_text())
STUDENTS = TOY_KD_CFG["grid"]["students"]
DEEP = "results/toy_student_kd/teachers/toy_deep/model.pt"  # the students' teacher, outside the grid
INIT = {"init": {"from": "toy_deep", "layers": "every_other"}}
FKL = {"teacher": "toy_deep", "loss": "fkl", "alpha": 0.5, "temperature": 1.0}
# per student: its --wrap object (None: no flag) and its --init-teacher / --kd-teacher files
WRAPS = {
    "nat": (None, None, None),
    "nat_init": (INIT, DEEP, None),
    "nat_fkl": ({"kd": FKL}, None, DEEP),
    "nat_init_mix": ({"init": {"from": "toy_deep", "layers": "last"},
                      "kd": {**FKL, "loss": "mix", "mix_weight": 0.3}}, DEEP, DEEP),
    "at_rkl": ({"kd": {**FKL, "loss": "rkl", "alpha": 0.7, "temperature": 2.0}}, None, DEEP),
    "cmlm_okd": ({"kd": {**FKL, "online": {"rank": 4, "lr": 0.001, "lambda": 1.0}}}, None, DEEP),
}


def train_student_jobs(output: str) -> dict[str, list[str]]:
    """{output model: input files} of every planned train_student job (the dry run's job blocks)."""
    jobs, block = {}, None
    for line in output.splitlines():
        if re.match(r"^(?:local)?rule \w+:", line):
            block = {} if line.startswith("rule train_student:") else None
        elif block is not None and re.match(r"^\s+(input|output): ", line):
            key, _, value = line.strip().partition(": ")
            block[key] = value.split(", ")
            if key == "output":
                jobs[block["output"][0]] = block.get("input", [])
    return jobs


def flag(words: list[str], name: str):
    return words[words.index(name) + 1] if name in words else None


@pytest.fixture(scope="module")
def kd_dry_run(tmp_path_factory):
    return snakemake(tmp_path_factory.mktemp("kd"), "-n", "-p", configfile=TOY_KD).stdout


def test_every_variant_is_a_row_and_its_teacher_is_trained_once(kd_dry_run):
    expected = expected_jobs(["toy"], ["beam"], STUDENTS)
    expected["train_teacher"] += 1  # toy_deep: trained for the students, never evaluated nor distilled
    assert job_counts(kd_dry_run) == expected
    assert sorted(STUDENTS) == sorted(WRAPS)


def test_each_variant_passes_its_wrap_and_teacher_files(kd_dry_run):
    commands = rule_commands(kd_dry_run)["train_student"]
    inputs = train_student_jobs(kd_dry_run)
    seen = set()
    for cmd in commands:
        words = shlex.split(cmd)
        out = flag(words, "--out")
        student, data = out.split("/")[-3:-1]
        wrap, init, kd = WRAPS[student]
        assert (json.loads(flag(words, "--wrap")) if "--wrap" in words else None) == wrap, cmd
        assert (flag(words, "--init-teacher"), flag(words, "--kd-teacher")) == (init, kd), cmd
        teachers = [f for f in inputs[out] if "/teachers/" in f]
        assert teachers == [f for f in (init, kd) if f], (out, inputs[out])  # inputs: built before the job
        seen.add((student, data))
    assert seen == {(s, d) for s in STUDENTS for d in ("raw", "toy.beam")}


def test_the_report_and_cost_table_take_variants_as_rows(kd_dry_run):
    (cmd,) = rule_commands(kd_dry_run)["aggregate"]
    grid = json.loads(flag(shlex.split(cmd), "--params"))
    assert grid["students"] == STUDENTS and grid["columns"] == ["raw", "toy.beam"]
    assert grid["costs"]["teachers"] == ["toy", "toy_deep"]  # the students' teacher: its own cost row
    assert list(grid["teacher_sizes"]) == ["toy"]  # the teacher table: the grid's teachers


# The train_student command of tests/configs/toy.yaml's nat on raw data, before training wrappers.
PLAIN_NAT_RAW = (
    "kdgrid train --kind nat --model-params '{\"attention_dropout\":0.0,\"d_model\":32,\"decoder_layers\":1,"
    "\"dropout\":0.1,\"encoder_layers\":1,\"ffn\":64,\"heads\":2,\"pre_norm\":true}' --train-params "
    "'{\"bf16\":\"auto\",\"compile\":false,\"label_smoothing\":0.1,\"log_every\":10,\"lr\":0.003,\"max_epochs\":0,"
    "\"max_tokens\":1024,\"max_updates\":30,\"seed\":1,\"update_freq\":1,\"valid_every\":15,\"warmup_updates\":10}' "
    "--labels '{\"data\":\"raw\",\"method\":null,\"role\":\"student\",\"student\":\"nat\",\"teacher\":null}' "
    "--vocab results/toy/vocab/spm.model --train-src results/toy/vocab/train.src.npz "
    "--train-tgt results/toy/vocab/train.tgt.npz --valid-src results/toy/vocab/valid.src.npz "
    "--valid-tgt results/toy/vocab/valid.tgt.npz --out results/toy/students/nat/raw/model.pt "
    "--work-dir results/toy/students/nat/raw/train --threads 1 --gpus 0 2> results/toy/logs/train_student/nat.raw.log"
)


def test_a_plain_students_command_is_unchanged(tmp_path):
    proc = snakemake(tmp_path, "-n", "-p", configfile=TOY)
    assert PLAIN_NAT_RAW in rule_commands(proc.stdout)["train_student"]
    assert "--wrap" not in proc.stdout and "teachers/toy/model.pt" not in " ".join(
        " ".join(i) for i in train_student_jobs(proc.stdout).values())


@pytest.mark.parametrize("grid_teachers,methods,trained", [([], [], 1), (["toy_deep"], ["beam"], 1),
                                                           (["toy", "toy_deep"], ["beam"], 2)])
def test_the_students_teacher_is_trained_once_whatever_the_grid_distills_with(tmp_path, grid_teachers, methods,
                                                                                trained):
    cfg = write_config(tmp_path / "cfg.yaml", TOY_KD, grid={"teachers": grid_teachers, "methods": methods})
    counts = job_counts(snakemake(tmp_path, "-n", configfile=cfg).stdout)
    assert counts["train_teacher"] == trained
    assert counts.get("evaluate_teacher", 0) == len(grid_teachers)  # only the grid's are evaluated
    assert counts["train_student"] == len(STUDENTS) * (1 + len(grid_teachers) * len(methods))


def test_one_variant_cell_reruns_alone(tmp_path):
    proc = snakemake(tmp_path, "-n", "results/toy_student_kd/students/cmlm_okd/toy.beam/scores.json",
                     configfile=TOY_KD)
    assert job_counts(proc.stdout) == {"prepare": 1, "vocab": 1, "train_teacher": 2, "distill": 1, "gather": 1,
                                       "encode_distilled": 1, "train_student": 1, "evaluate_student": 1}


def test_the_train_verb_accepts_the_wrapped_commands(kd_dry_run):
    """Every planned command parses with `kdgrid train`'s flags (src/kdgrid/cli.py)."""
    from kdgrid import cli

    parser = cli.parser()
    (verbs,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    train = verbs.choices["train"]
    assert {"--wrap", "--init-teacher", "--kd-teacher"} <= set(train._option_string_actions)
    for cmd in rule_commands(kd_dry_run)["train_student"]:
        words = shlex.split(cmd)
        parser.parse_args(words[1: words.index("2>")])


def test_the_core_accepts_every_planned_wrap(kd_dry_run):
    import kdgrid.kd as kd

    for cmd in rule_commands(kd_dry_run)["train_student"]:
        words = shlex.split(cmd)
        if "--wrap" in words:
            kd.parse_wrap(json.loads(flag(words, "--wrap")))  # raises on an unknown key or a bad value


def test_init_and_kd_kinds_follow_the_models():
    """init copies the Transformer body every listed kind builds on; KD kinds are real kinds."""
    from kdgrid.models.layers import EncoderDecoder
    from kdgrid.models.registry import MODELS

    schema = yaml.safe_load(SCHEMA.read_text())
    kinds = schema["properties"]["students"]["additionalProperties"]["properties"]["kind"]["enum"]
    assert set(INIT_KINDS) == {k for k in kinds if issubclass(MODELS[k], EncoderDecoder)}
    assert set(KD_KINDS) <= set(kinds) and set(GLANCE_KINDS) <= set(kinds)


WIDE = {"wide": {"d_model": 64, "ffn": 128, "layers": 2, "heads": 4}}
BAD = [
    ({"students": {"nat_fkl": {"kd": {"teacher": "huge"}}}},
     r"students.nat_fkl.kd.teacher: 'huge' is not defined under teacher_sizes \(defined: .*toy, toy_deep\)"),
    ({"students": {"nat_init": {"init": {"from": "huge"}}}},
     r"students.nat_init.init.from: 'huge' is not defined under teacher_sizes \(defined: .*toy, toy_deep\)"),
    ({"students": {"levt_kd": {"kind": "levt", "model": {}, "kd": {"teacher": "toy"}}},
      "grid": {"students": ["levt_kd"]}},
     r"students.levt_kd.kd: kind 'levt' has no token distribution .* kinds cmlm, nat, transformer"),
    ({"teacher_sizes": WIDE, "students": {"nat_init": {"init": {"from": "wide"}}}},
     r"students.nat_init.init.from: student nat_init \(d_model 32, ffn 64, heads 2\) and teacher size wide "
     r"\(d_model 64, ffn 128, heads 4\) differ in width"),
    ({"students": {"nat_init": {"model": {"encoder_layers": 3}}}},
     r"students.nat_init.init.from: student nat_init has 3 encoder layers but teacher size toy_deep has 2"),
    ({"students": {"nat_init": {"init": {"from": "toy"}, "model": {"decoder_layers": 2}}}},
     r"students.nat_init.init.from: student nat_init has 2 decoder layers but teacher size toy has 1"),
    ({"students": {"bare": {"kind": "nat", "model": {"d_model": 32}, "init": {"from": "toy"}}},
      "grid": {"students": ["bare"]}},
     r"students.bare.init.from: .* set students.bare.model.ffn, heads, encoder_layers, decoder_layers "
     r"\(teacher size toy: ffn 64, heads 2, encoder_layers 1, decoder_layers 1\)"),
    ({"students": {"nat_fkl": {"kd": {"mix_weight": 0.2}}}},
     r"students.nat_fkl.kd.mix_weight: only loss 'mix' .* loss is 'fkl'"),
    ({"students": {"nat_fkl": {"kd": {"loss": "js"}}}}, r"students.nat_fkl.kd.loss: 'js' is not one of"),
    ({"students": {"nat_fkl": {"kd": {"alpha": 1.5}}}},
     r"students.nat_fkl.kd.alpha: 1.5 is greater than the maximum of 1"),
    ({"students": {"nat_fkl": {"kd": {"temperature": 0}}}},
     r"students.nat_fkl.kd.temperature: 0 is less than or equal to the minimum of 0"),
    ({"students": {"cmlm_okd": {"kd": {"online": {"rank": 0}}}}},
     r"students.cmlm_okd.kd.online.rank: 0 is less than the minimum of 1"),
    ({"students": {"cmlm_okd": {"kd": {"online": {"lambda": -1}}}}},
     r"students.cmlm_okd.kd.online.lambda: -1 is less than the minimum of 0"),
    ({"students": {"nat_init": {"init": {"layers": "middle"}}}},
     r"students.nat_init.init.layers: 'middle' is not one of \['every_other', 'first', 'last', 'even'\]"),
    ({"students": {"nat_fkl": {"kd": {"temprature": 2.0}}}},
     r"students.nat_fkl.kd: unknown keys .*'temprature' was unexpected"),
    ({"students": {"no_from": {"kind": "nat", "model": {}, "init": {"layers": "first"}}}},
     r"students.no_from.init: 'from' is a required property"),
    ({"teacher_sizes": {"odd": {"d_model": 30, "ffn": 8, "heads": 4, "layers": 1}},
      "students": {"nat_fkl": {"kd": {"teacher": "odd"}}}},  # a students' teacher is trained: checked
     r"teacher_sizes.odd.heads: d_model 30 is not divisible by heads 4"),
    ({"students": {"nat_init": {"model": {"pre_norm": False}}}},
     r"students.nat_init.init.from: the student's pre_norm is False but the teachers' "
     r"\(teacher.architecture.pre_norm\) is True"),
    ({"students": {"cmlm_glat": {"kind": "cmlm", "model": {}, "glance": {}}}, "grid": {"students": ["cmlm_glat"]}},
     r"students.cmlm_glat.glance: kind 'cmlm' cannot glance .* glance is for kinds ctc, dat, nat"),
    ({"students": {"nat_fkl": {"glance": {}}}}, r"students.nat_fkl: glance and kd do not compose"),
    ({"students": {"glat": {"kind": "nat", "model": {}, "glance": {"p_start": 1.5}}}, "grid": {"students": ["glat"]}},
     r"students.glat.glance.p_start: 1.5 is greater than the maximum of 1"),
    ({"students": {"glat": {"kind": "nat", "model": {}, "glance": {}, "train": {"max_updates": 0, "max_epochs": 2}}},
      "grid": {"students": ["glat"]}}, r"students.glat.glance.anneal_updates: the student's training stops by epochs"),
    ({"students": {"glat": {"kind": "nat", "model": {}, "glance": {}}}, "grid": {"students": ["glat"]},
      "compute": {"compile": True}}, r"students.glat.glance: compute.compile does not go with glancing"),
]


@pytest.mark.parametrize("override,message", BAD)
def test_bad_wrapper_config_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        check(merged(TOY_KD_CFG, override), SCHEMA, ["toy_student_kd.yaml"])


def test_a_variant_outside_the_grid_is_not_checked():
    check(merged(TOY_KD_CFG, {"students": {"levt_kd": {"kind": "levt", "model": {}, "kd": {"teacher": "huge"}}}}),
          SCHEMA, ["toy_student_kd.yaml"])


def test_a_wrapper_error_stops_the_dry_run_with_its_key(tmp_path):
    cfg = write_config(tmp_path / "bad.yaml", TOY_KD, teacher_sizes=WIDE,
                       students={"nat_init": {"init": {"from": "wide"}}})
    proc = snakemake(tmp_path, "-n", configfile=cfg, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert "students.nat_init.init.from: student nat_init (d_model 32, ffn 64, heads 2) and teacher size wide" in out

