"""The section-5 methods through the workflow (Zhou et al. 2020: tune the data to the student):
dry runs plan each method's jobs, a Born-Again round trains on the previous round's set, only
interpolation reads the references, a moe method makes columns only for teachers with experts,
and a real toy run distills, measures and scores every new column; raising the round count then
runs only the new round. Also the config checks of the section-5 methods and MoE teacher sizes
(a ban method's `from`, a moe method's expert; `each` makes one column per expert and
`mixture_best` says so in its column's name), and a Born-Again AT of the students' body by default."""

from __future__ import annotations

import copy
import csv
import json
import re
import shlex
import sys

import pytest
import sacrebleu
import yaml
from conftest import ROOT, TOY, job_counts, snakemake, write_config
from test_workflow import expected_jobs, rule_commands

sys.path.insert(0, str(ROOT / "workflow"))
from config_check import ConfigError, check  # noqa: E402

TOY_S5 = ROOT / "tests" / "configs" / "toy_section5.yaml"
# the columns of toy_section5.yaml: the moe method skips the teacher without experts
S5_COLUMNS = ["toy.beam", "toy.interpolate", "toy.ban2", "toy_moe.beam", "toy_moe.interpolate", "toy_moe.ban2",
              "toy_moe.moe0", "toy_moe.moe1"]


def section5(tmp_path, name="cfg.yaml", **overrides):
    return write_config(tmp_path / name, TOY_S5, **overrides)


def planned(tmp_path, cfg) -> dict[str, list[list[str]]]:
    """{rule: [the words of each planned job's command]} of a dry run."""
    proc = snakemake(tmp_path, "-n", "-p", configfile=cfg)
    return {rule: sorted(shlex.split(c) for c in cmds) for rule, cmds in rule_commands(proc.stdout).items()}


def option(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words else None


SHAPES = [  # (teachers, methods, ban rounds, distilled columns, Born-Again ATs)
    (["toy"], ["interpolate"], 2, 1, 0),
    (["toy"], ["beam", "ban"], 3, 3, 2),  # round 1 is the beam column: beam, ban2, ban3
    (["toy", "toy_moe"], ["beam", "ban"], 2, 4, 2),  # two teachers: beam and ban2 of each
    (["toy", "toy_moe"], ["moe"], 2, 2, 0),  # toy has no experts: no toy.moe0; toy_moe one per expert
    (["toy", "toy_moe"], ["beam", "interpolate", "ban", "moe"], 2, 8, 2),  # toy_section5.yaml as it is
]


@pytest.mark.parametrize("teachers,methods,rounds,columns,bans", SHAPES)
def test_dry_runs_plan_each_methods_jobs(tmp_path, teachers, methods, rounds, columns, bans):
    cfg = section5(tmp_path, grid={"teachers": teachers, "methods": methods}, methods={"ban": {"rounds": rounds}})
    proc = snakemake(tmp_path, "-n", configfile=cfg)
    assert job_counts(proc.stdout) == expected_jobs(teachers, methods, ["nat"], columns=columns, bans=bans)


def test_the_toy_section5_grid_has_one_column_per_round_and_moe_only_with_experts(tmp_path):
    jobs = planned(tmp_path, TOY_S5)
    outs = sorted(re.search(r"distill/(.+)/train.tgt.npz", option(w, "--output")).group(1)
                  for w in jobs["encode_distilled"])
    assert outs == sorted(S5_COLUMNS)
    kinds = {option(w, "--out"): option(w, "--kind") for w in jobs["train_teacher"]}
    assert kinds == {"results/toy_section5/teachers/toy/model.pt": "transformer",
                     "results/toy_section5/teachers/toy_moe/model.pt": "moe"}
    for k in (0, 1):  # `expert: each`: one job per expert, each with its own number
        (moe,) = [w for w in jobs["distill"] if f"toy_moe.moe{k}/" in option(w, "--out")]
        assert f'"expert":{k}' in option(moe, "--params") and '"kind":"moe"' in option(moe, "--params")
        assert option(moe, "--model") == "results/toy_section5/teachers/toy_moe/model.pt"
    # the MoE teacher's beam column asks for no expert: the model's default, the prior's expert
    (beam,) = [w for w in jobs["distill"] if "toy_moe.beam/" in option(w, "--out")]
    assert "expert" not in option(beam, "--params")
    ban = {option(w, "--out"): w for w in jobs["train_ban"]}["results/toy_section5/bans/toy_moe.ban2/model.pt"]
    assert option(ban, "--kind") == "transformer" and "experts" not in option(ban, "--model-params")  # a plain AT


def test_a_ban_round_trains_on_the_previous_rounds_set(tmp_path):
    cfg = section5(tmp_path, grid={"teachers": ["toy"], "methods": ["beam", "ban"]},
                   methods={"ban": {"rounds": 3, "size": "small_ban"}},
                   teacher_sizes={"small_ban": {"d_model": 16, "ffn": 32, "layers": 1, "heads": 2,
                                                "train": {"max_updates": 7}}})
    jobs = planned(tmp_path, cfg)
    bans = {option(w, "--out"): w for w in jobs["train_ban"]}
    r = "results/toy_section5"
    assert sorted(bans) == [f"{r}/bans/toy.ban2/model.pt", f"{r}/bans/toy.ban3/model.pt"]
    # round 1 is the beam column (`from: beam`): round 2's AT trains on it
    assert option(bans[f"{r}/bans/toy.ban2/model.pt"], "--train-tgt") == f"{r}/distill/toy.beam/train.tgt.npz"
    assert option(bans[f"{r}/bans/toy.ban3/model.pt"], "--train-tgt") == f"{r}/distill/toy.ban2/train.tgt.npz"
    for words in bans.values():  # an AT of the configured size, trained like a teacher of that size
        assert option(words, "--kind") == "transformer"
        assert '"d_model":16' in option(words, "--model-params")
        assert '"max_updates":7' in option(words, "--train-params")
        assert option(words, "--train-src") == f"{r}/vocab/train.src.npz"  # the real sources
    models = {re.search(r"distill/(.+)/shards", option(w, "--out")).group(1): option(w, "--model")
              for w in jobs["distill"]}
    assert models == {"toy.beam": f"{r}/teachers/toy/model.pt", "toy.ban2": f"{r}/bans/toy.ban2/model.pt",
                      "toy.ban3": f"{r}/bans/toy.ban3/model.pt"}
    params = {option(w, "--params") for w in jobs["distill"] if "ban" in option(w, "--out")}
    assert len(params) == 1  # every round decodes alike
    assert not {"rounds", "from", "size"} & set(json.loads(params.pop()))


def test_only_interpolation_reads_the_references(tmp_path):
    cfg = section5(tmp_path, grid={"teachers": ["toy"], "methods": ["beam", "interpolate", "ban"]})
    refs = {re.search(r"distill/(.+)/shards", option(w, "--out")).group(1): option(w, "--ref")
            for w in planned(tmp_path, cfg)["distill"]}
    assert refs == {"toy.beam": None, "toy.interpolate": "results/toy_section5/data/train.tgt", "toy.ban2": None}


def test_a_moe_method_without_an_moe_teacher_is_a_config_error(tmp_path):
    cfg = section5(tmp_path, grid={"teachers": ["toy"], "methods": ["moe"]})
    proc = snakemake(tmp_path, "-n", configfile=cfg, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    assert "methods.moe: kind 'moe' decodes with a mixture-of-experts teacher, but none of grid.teachers (toy)" \
        in proc.stdout + proc.stderr


def test_the_multi30k_section5_grid_reuses_the_other_multi30k_grids_cells(tmp_path):
    """Same settings, same paths, same commands: Snakemake reuses what configs/multi30k.yaml and
    configs/multi30k_students.yaml finished (teachers, beam sets, their students)."""
    def outs(name):
        jobs = planned(tmp_path, ROOT / "configs" / name)
        return {option(w, "--out"): w for rule in ("train_teacher", "distill", "train_student") for w in jobs[rule]}

    s5 = outs("multi30k_section5.yaml")
    shared = {}
    for name in ("multi30k.yaml", "multi30k_students.yaml"):
        other = outs(name)
        for out in set(s5) & set(other):
            assert s5[out] == other[out], out  # the same job: the same command, params and all
            shared[out] = name
    r = "results/multi30k"
    assert {f"{r}/teachers/cpu_s/model.pt", f"{r}/teachers/cpu_m/model.pt", f"{r}/distill/cpu_s.beam/shards/0.tgt",
            f"{r}/distill/cpu_m.beam/shards/0.tgt"} <= set(shared)
    cells = sorted(out.removeprefix(f"{r}/students/").removesuffix("/model.pt")
                   for out in shared if "/students/" in out)
    assert cells == ["at_student/cpu_m.beam", "at_student/raw", "cmlm/cpu_m.beam", "cmlm/raw", "levt/cpu_m.beam",
                     "levt/raw", "nat/cpu_m.beam", "nat/cpu_s.beam", "nat/raw"]
    # beam of cpu_s, cpu_m, cpu_moe, cpu_moe_up; cpu_s's interpolate and ban2; the two moe0 columns:
    # 8 distilled columns + raw
    assert sum("/students/" in out for out in s5) == 4 * 9


def test_the_paper_grid_with_the_section5_methods_plans_its_jobs(tmp_path):
    """configs/wmt14.yaml (its 9 students) plus interpolate, ban (2 rounds) and moe with a 3-expert base teacher, as
    bench/dryrun_speed.py times it (under 5 s): 4 teachers x 6 columns (beam, greedy, sample,
    sample_topk, interpolate, ban2) + the MoE teacher's 7 (and moe, with expert 0)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from dryrun_speed import grid_config

    for side in ("en", "de"):
        (tmp_path / "data" / "wmt14_en_de").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "wmt14_en_de" / f"train.{side}").touch()
    cfg = grid_config(1, tmp_path / "paper_s5.yaml", section5=True)
    counts = job_counts(snakemake(tmp_path, "-n", configfile=cfg).stdout)
    teachers = ["tiny", "small", "base", "big", "base_moe"]
    methods = ["beam", "greedy", "sample", "sample_topk", "interpolate", "ban", "moe"]
    students = ["nat", "inat", "cmlm", "levt", "inst", "flowseq", "ctc", "glat", "ctc_glat", "dat"]
    assert counts == expected_jobs(teachers, methods, students, shards=8, columns=4 * 6 + 7, bans=5)


# -- a real run ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s5_run(tmp_path_factory):
    """toy_section5.yaml through the workflow with its MoE teacher only (about a minute on 2
    cores): every section-5 method makes a column of it (beam, interpolation and Born-Again decode
    the MoE with its prior's expert; a plain AT's interpolation is checked in test_methods.py, and
    the dry runs above plan both teachers)."""
    work = tmp_path_factory.mktemp("s5run")
    snakemake(work, "--cores", "2", "--show-failed-logs", configfile=s5_run_config(work))
    return work


def s5_run_config(work, name="run.yaml", **overrides):
    return write_config(work / name, TOY_S5, **{"grid": {"teachers": ["toy_moe"]}, **overrides})


def test_section5_columns_run_end_to_end(s5_run):
    out = s5_run / "results/toy_section5"
    rows = list(csv.DictReader(open(out / "grid.csv")))
    columns = [c for c in S5_COLUMNS if c.startswith("toy_moe.")]
    assert list(rows[0]) == ["student", "raw", *columns]
    assert [r["student"] for r in rows[:3]] == ["nat", "C(d)", "F(d)"]
    for column in columns:  # a BLEU, a C(d) and an F(d) for every new column
        assert 0.0 <= float(rows[0][column]) <= 100.0 and float(rows[1][column]) >= 0.0
        assert float(rows[2][column]) >= 0.0
    assert (out / "bans/toy_moe.ban2/model.pt").stat().st_size > 0
    log = (out / "logs/distill/toy_moe.interpolate.0.log").read_text()
    assert re.search(r"interpolation kept a candidate other than the n-best's first entry for \d+ of 200", log)
    assert "smooth:exp" in log
    # same beam (3) and lenpen: the beam column is the n-best's first entry, so interpolation is never
    # further from the reference, sentence by sentence
    ref = (out / "data/train.tgt").read_text().splitlines()
    beam = (out / "distill/toy_moe.beam/train.tgt").read_text().splitlines()
    interp = (out / "distill/toy_moe.interpolate/train.tgt").read_text().splitlines()
    assert len(interp) == len(beam) == len(ref) == 200
    for i, b, r in zip(interp, beam, ref):
        assert sacrebleu.sentence_bleu(i, [r]).score >= sacrebleu.sentence_bleu(b, [r]).score
    assert interp != beam


def test_more_rounds_run_only_the_new_round(s5_run):
    more = s5_run_config(s5_run, "more.yaml", methods={"ban": {"rounds": 3}})
    jobs = planned(s5_run, more)
    assert {rule: len(cmds) for rule, cmds in jobs.items()} == {
        "train_ban": 1, "distill": 1, "gather": 1, "encode_distilled": 1, "align_distilled": 1,
        "data_metrics_distilled": 1, "train_student": 1, "evaluate_student": 1,
        "aggregate": 1}
    r = "results/toy_section5"
    assert [option(w, "--train-tgt") for w in jobs["train_ban"]] == [f"{r}/distill/toy_moe.ban2/train.tgt.npz"]
    # and another BAN size retrains the rounds it shapes (2 on), never round 1
    bigger = s5_run_config(s5_run, "size.yaml", methods={"ban": {"size": "toy2"}},
                           teacher_sizes={"toy2": {"d_model": 48, "ffn": 96, "layers": 1, "heads": 2}})
    jobs = planned(s5_run, bigger)
    assert [option(w, "--out") for w in jobs["distill"]] == [f"{r}/distill/toy_moe.ban2/shards/0.tgt"]
    assert len(jobs["train_ban"]) == 1


# -- the config and the workflow ------------------------------------------------------------------
MOE_SIZE = {"d_model": 32, "ffn": 64, "heads": 2, "layers": 1, "experts": 2}


def _check(override: dict):
    def merge(a, b):
        for k, v in b.items():
            a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a

    cfg = yaml.safe_load((ROOT / "workflow" / "defaults.yaml").read_text())
    for layer in (yaml.safe_load(TOY.read_text()), override):
        cfg = merge(cfg, copy.deepcopy(layer))
    check(cfg, ROOT / "workflow" / "schemas" / "config.schema.yaml", ["toy.yaml"])


@pytest.mark.parametrize("size,message", [
    ({**MOE_SIZE, "experts": 1}, r"teacher_sizes.mix.experts: 1 is less than the minimum of 2"),
    ({**MOE_SIZE, "expert_prior": "soft"}, r"teacher_sizes.mix.expert_prior: 'soft' is not one of"),
    ({k: v for k, v in MOE_SIZE.items() if k != "experts"} | {"expert_prior": "learned"},
     r"teacher_sizes.mix.expert_prior: a prior over experts needs experts"),
])
def test_bad_moe_teacher_sizes_name_the_key(size, message):
    _check({"grid": {"teachers": ["toy", "mix"]}, "teacher_sizes": {"mix": {**MOE_SIZE, "experts": 2}}})  # valid
    with pytest.raises(ConfigError, match=message):
        _check({"grid": {"teachers": ["toy", "mix"]}, "teacher_sizes": {"mix": size}})


def test_the_workflow_trains_an_moe_size_as_kind_moe_and_evaluates_it_with_the_priors_expert(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", TOY, teacher_sizes={"mix": {**MOE_SIZE, "expert_prior": "learned"}},
                       grid={"teachers": ["toy", "mix"]})
    out = snakemake(tmp_path, "-n", "-p", "results/toy/teachers/mix/test.scores.json",
                    "results/toy/teachers/toy/test.scores.json", configfile=cfg).stdout
    trains = [line for line in out.splitlines() if "kdgrid train" in line]
    evals = [line for line in out.splitlines() if "kdgrid evaluate" in line]
    mix = [line for line in trains if "teachers/mix/model.pt" in line]
    toy = [line for line in trains if "teachers/toy/model.pt" in line]
    assert len(mix) == len(toy) == 1, out
    assert "--kind moe" in mix[0] and '"experts":2' in mix[0] and '"prior":"learned"' in mix[0]
    assert "--kind transformer" in toy[0] and "experts" not in toy[0]
    assert len(evals) == 2
    assert not any('"expert"' in line for line in evals)  # the model's default: the prior's expert


def test_a_ban_methods_from_must_be_a_beam_method_of_the_grid():
    _check({"grid": {"methods": ["beam", "ban"]}})  # valid: round 1 is the beam column
    with pytest.raises(ConfigError, match=r"methods.ban.from: 'beam' is not a method of kind 'beam' in grid.methods "
                                          r"\(beam-kind methods there: none\)"):
        _check({"grid": {"methods": ["ban"]}})
    with pytest.raises(ConfigError, match=r"methods.ban.from: 'greedy' is not a method of kind 'beam' in "
                                          r"grid.methods \(beam-kind methods there: beam\)"):
        _check({"grid": {"methods": ["beam", "greedy", "ban"]}, "methods": {"ban": {"from": "greedy"}}})
    _check({"grid": {"methods": ["beam4", "ban"]}, "methods": {"beam4": {"kind": "beam", "beam": 4},
                                                              "ban": {"from": "beam4"}}})


def test_moe_columns_one_per_expert_one_expert_or_named_mixture_best(tmp_path):
    grid = {"teachers": ["toy", "mix"], "methods": ["beam", "moe"]}
    sizes = {"mix": {**MOE_SIZE, "experts": 3}}
    _check({"grid": grid, "teacher_sizes": sizes})  # each (the default)
    _check({"grid": grid, "teacher_sizes": sizes, "methods": {"moe": {"expert": "mixture_best"}}})
    with pytest.raises(ConfigError, match=r"methods.moe.expert: 'best' is not one of \['each', 'mixture_best'\]"):
        _check({"grid": grid, "teacher_sizes": sizes, "methods": {"moe": {"expert": "best"}}})
    with pytest.raises(ConfigError, match=r"methods.moe.expert: 3 but teacher mix has 3 experts"):
        _check({"grid": grid, "teacher_sizes": sizes, "methods": {"moe": {"expert": 3}}})
    for expert, columns in (("each", ["mix.moe0", "mix.moe1", "mix.moe2"]), ("mixture_best", ["mix.moe_mixbest"]),
                            (1, ["mix.moe"])):
        cfg = write_config(tmp_path / f"{expert}.yaml", TOY, grid=grid, teacher_sizes=sizes,
                           methods={"moe": {"kind": "moe", "expert": expert, "beam": 3}})
        jobs = planned(tmp_path, cfg)
        made = {re.search(r"distill/(.+)/shards", option(w, "--out")).group(1): json.loads(option(w, "--params"))
                for w in jobs["distill"]}
        assert sorted(c for c in made if c.startswith("mix.moe")) == columns
        for column in columns:
            assert made[column]["expert"] == (int(column[-1]) if expert == "each" else expert)


def test_a_ban_round_is_student_sized_unless_told(tmp_path):
    grid = {"teachers": ["toy"], "methods": ["beam", "ban"]}
    student = {"d_model": 24, "ffn": 48, "encoder_layers": 2, "decoder_layers": 1, "heads": 2}
    sizes = {"toy": {"d_model": 32, "ffn": 64, "layers": 1, "heads": 2, "train": {"max_updates": 9}}}
    ban_params = {}
    for size in ("student", "teacher", None):
        methods = {"ban": {"size": size}} if size else {}
        cfg = section5(tmp_path, f"{size}.yaml", grid=grid, methods=methods, teacher_sizes=sizes,
                       students={"nat": {"model": student}})
        (words,) = planned(tmp_path, cfg)["train_ban"]
        ban_params[size] = (json.loads(option(words, "--model-params")), json.loads(option(words, "--train-params")),
                            json.loads(option(words, "--labels")))
    model, train, labels = ban_params[None]
    assert ban_params["student"] == ban_params[None]  # the default
    assert {k: model[k] for k in student} == student and labels["size"] == "student"
    assert train["max_updates"] == 30  # teacher.train, not the teacher size's own
    model, train, labels = ban_params["teacher"]
    assert (model["d_model"], model["encoder_layers"], train["max_updates"], labels["size"]) == (32, 1, 9, "toy")


def test_a_method_with_teachers_makes_columns_only_for_them(tmp_path):
    methods = ["beam", "interpolate", "ban", "moe"]
    cfg = section5(tmp_path, grid={"teachers": ["toy", "toy_moe"], "methods": methods},
                   methods={"interpolate": {"teachers": ["toy"]}, "ban": {"teachers": ["toy"]}})
    jobs = planned(tmp_path, cfg)
    outs = sorted(re.search(r"distill/(.+)/train.tgt.npz", option(w, "--output")).group(1)
                  for w in jobs["encode_distilled"])
    assert outs == ["toy.ban2", "toy.beam", "toy.interpolate", "toy_moe.beam", "toy_moe.moe0", "toy_moe.moe1"]
    assert [option(w, "--out") for w in jobs["train_ban"]] == ["results/toy_section5/bans/toy.ban2/model.pt"]
    # `teachers` shapes the grid only: the distill job of a kept column is the same as without it
    plain = planned(tmp_path, TOY_S5)
    assert [w for w in jobs["distill"] if "toy.interpolate" in option(w, "--out")] == \
        [w for w in plain["distill"] if "toy.interpolate" in option(w, "--out")]


def test_a_methods_teachers_must_be_grid_teachers_and_cover_a_ban_round_one():
    grid = {"teachers": ["toy"], "methods": ["beam", "ban"]}
    with pytest.raises(ConfigError, match=r"methods.ban.teachers: 'other' not in grid.teachers \(toy\)"):
        _check({"grid": grid, "methods": {"ban": {"teachers": ["other"]}}})
    with pytest.raises(ConfigError, match=r"methods.ban.from: method 'beam' makes no column for teacher\(s\) toy"):
        _check({"grid": {"teachers": ["toy", "mix"], "methods": ["beam", "ban"]}, "teacher_sizes": {"mix": MOE_SIZE},
                "methods": {"beam": {"teachers": ["mix"]}}})
    _check({"grid": grid, "methods": {"ban": {"teachers": ["toy"]}}})


@pytest.mark.parametrize("methods,sizes,students,message", [
    ({"moe": {"expert": "best"}}, {"mix": MOE_SIZE}, {},
     r"methods.moe.expert: 'best' is not one of .*`best` is now `mixture_best`"),
    ({}, {"student": {"d_model": 32, "ffn": 64, "heads": 2, "layers": 1}}, {},
     r"methods.ban.size: 'student' means the students' size here, but teacher_sizes also defines"),
    ({}, {}, {"bare": {"kind": "nat", "model": {"ffn": 64, "encoder_layers": 1, "decoder_layers": 1}}},
     r"methods.ban.size: student \(the default\) trains an AT of the first grid student's body, but "
     r"students.bare.model has no d_model, heads"),
])
def test_moe_and_ban_config_errors_say_what_to_change(methods, sizes, students, message):
    grid = {"teachers": ["toy", "mix"] if "mix" in sizes else ["toy"],
            "methods": ["beam", "ban", "moe"] if methods else ["beam", "ban"], "students": list(students) or ["nat"]}
    with pytest.raises(ConfigError, match=message):
        _check({"grid": grid, "teacher_sizes": sizes, "methods": methods, "students": students})
