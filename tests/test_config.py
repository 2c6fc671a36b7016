"""Config validation: every bad value is reported with its key, before anything runs."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TOY, snakemake, write_config

sys.path.insert(0, str(ROOT / "workflow"))
from config_check import ConfigError, check  # noqa: E402

from kdgrid.models import configs as model_configs  # noqa: E402

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def merged(*layers: dict) -> dict:
    def merge(a, b):
        for k, v in b.items():
            a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a

    cfg = yaml.safe_load((ROOT / "workflow" / "defaults.yaml").read_text())
    for layer in layers:
        cfg = merge(cfg, copy.deepcopy(layer))  # never share (and later mutate) a layer's dicts
    return cfg


TOY_CFG = yaml.safe_load(TOY.read_text())


@pytest.mark.parametrize("config_file", [ROOT / "config.yaml", TOY, *sorted((ROOT / "configs").glob("*.yaml")),
                                         *sorted((ROOT / "tests" / "configs").glob("*.yaml"))])
def test_shipped_configs_are_valid(config_file):
    check(merged(yaml.safe_load(Path(config_file).read_text())), SCHEMA, [str(config_file)])


BAD = [
    ({"methods": {"ban": {"kind": "ban", "rounds": 1}}, "grid": {"methods": ["beam", "ban"]}},
     r"methods.ban.rounds: 1 is less than the minimum of 2"),
    ({"metrics": {"floor": 1e-4}}, r"metrics.floor: moved to metrics.faithfulness.floor"),
    ({"students": {"nat": {"kind": "nat", "model": {}, "decode": {"adaptive": False}}}},
     r"students.nat.decode.adaptive: kind 'nat' does not iterate"),
    ({"students": {"nat": {"kind": "nat", "model": {}, "decode": {"method": "lookahead"}}}},
     r"students.nat.decode.method: kind 'nat' has one way to decode; decode.method is for kinds transformer, dat"),
    ({"students": {"nat": {"kind": "dat", "model": {}, "decode": {"method": "beam"}}}},
     r"students.nat.decode.method: kind 'dat' decodes by lookahead, greedy, joint_viterbi, sample, not 'beam'"),
    ({"students": {"nat": {"kind": "dat", "model": {}, "decode": {"length_beam": 3}}}},
     r"students.nat.decode.length_beam: kind 'dat' does not take it; its decode options are method, beta"),
    ({"students": {"nat": {"kind": "dat", "model": {}, "decode": {"viterbi_beta": 0.5}}}},
     r"students.nat.decode.viterbi_beta: applies to method joint_viterbi; this student decodes by lookahead"),
    ({"students": {"nat": {"kind": "cmlm", "model": {}, "decode": {"top_p": 0.5}}}},
     r"students.nat.decode.top_p: a DA-Transformer option \(kind dat\); kind 'cmlm' does not take it"),
    ({"distill": {"shards": 301}}, r"distill.shards: 301 shards for 300 training sentences; use at most 300"),
    ({"metrics": {"faithfulness": {"smoothing": "laplace"}}},
     r"metrics.faithfulness.smoothing: 'laplace' is not one of"),
    ({"grid": {"teachers": ["huge"]}}, r"grid.teachers\[0\]: 'huge' is not defined under teacher_sizes"),
    ({"grid": {"methods": ["beam", "nucleus"]}}, r"grid.methods\[1\]: 'nucleus' is not defined under methods"),
    ({"grid": {"students": ["levt2"]}}, r"grid.students\[0\]: 'levt2' is not defined under students"),
    ({"grid": {"students": ["nat", "nat"]}}, r"grid.students: .*non-unique"),
    ({"grid": {"students": []}}, r"grid.students: \[\] should be non-empty"),
    ({"methods": {"beam": {"kind": "beam", "beam": 0}}}, r"methods.beam.beam: 0 is less than the minimum of 1"),
    ({"methods": {"wide": {"kind": "beem"}}}, r"methods.wide.kind: 'beem' is not one of"),
    ({"vocab": {"size": -5}}, r"vocab.size: -5 is less than the minimum of 16"),
    ({"teacher_sizes": {"toy": {"d_model": 30, "heads": 4}}},
     r"teacher_sizes.toy.heads: d_model 30 is not divisible by heads 4"),
    ({"teacher_sizes": {"bad.name": {"d_model": 8, "ffn": 8, "heads": 2, "layers": 1}}},
     r"teacher_sizes: name 'bad.name' may only use"),
    ({"techers": {}}, r"\(top level\): unknown keys are not allowed \('techers' was unexpected\)"),
    ({"student": {"train": {"max_updates": 0, "max_epochs": 0}}}, r"student.train: set max_updates or max_epochs"),
    ({"student": {"train": {"lr": -1}}}, r"student.train.lr: -1 is less than or equal to the minimum of 0"),
    ({"corpus": {"synthetic": {"min_len": 9, "max_len": 5}}}, r"corpus.synthetic.max_len: 5 is below min_len 9"),
    ({"corpus": {"source": "files"}}, r"corpus.files: source is 'files' but train, valid, test"),
    ({"distill": {"shards": 0}}, r"distill.shards: 0 is less than the minimum of 1"),
    ({"students": {"nat": {"kind": "nat", "model": {"heads": 3}}}},
     r"students.nat.model.heads: d_model 32 is not divisible by heads 3"),
    ({"students": {"nat": {"decode": {"length_beam": 3, "rescore": "huge"}}}},
     r"students.nat.decode.rescore: 'huge' is not defined under teacher_sizes"),
    ({"students": {"nat": {"decode": {"rescore": "toy"}}}},
     r"students.nat.decode.rescore: one candidate per sentence \(length_beam 1\) leaves nothing"),
    ({"grid": {"students": ["levt"]}, "students": {"levt": {"decode": {"rescore": "toy"}}}},
     r"students.levt.decode.rescore: kind 'levt' keeps one candidate per sentence"),
    ({"grid": {"students": ["at_student"]}, "students": {"at_student": {"decode": {"rescore": "toy"}}}},
     r"students.at_student.decode.rescore: kind 'transformer' is autoregressive"),
    ({"students": {"nat": {"decode": {"samples": 3, "rescore": "toy"}}}},
     r"students.nat.decode.samples: kind 'nat' draws no samples"),
    ({"grid": {"teachers": [], "methods": []}, "teacher_sizes": {"odd": {"d_model": 30, "heads": 4, "ffn": 8}},
      "students": {"nat": {"decode": {"length_beam": 2, "rescore": "odd"}}}},
     r"teacher_sizes.odd.heads: d_model 30 is not divisible by heads 4"),
    # the section-5 methods (kdgrid.methods.kinds)
    ({"grid": {"methods": ["interpolate"]}, "methods": {"interpolate": {"nbest": 8, "beam": 4}}},
     r"methods.interpolate.nbest: 8 is more than beam 4: the n-best list comes from the beam"),
    ({"grid": {"methods": ["ban"]}, "methods": {"ban": {"size": "huge"}}},
     r"methods.ban.size: 'huge' is neither 'student', 'teacher' nor defined under teacher_sizes"),
    ({"grid": {"methods": ["ban"]}, "methods": {"ban": {"size": "odd"}},
      "teacher_sizes": {"odd": {"d_model": 30, "heads": 4, "ffn": 8, "layers": 1}}},
     r"teacher_sizes.odd.heads: d_model 30 is not divisible by heads 4"),  # a BAN size is trained: checked
    ({"grid": {"methods": ["moe"]}},
     r"methods.moe: kind 'moe' decodes with a mixture-of-experts teacher, but none of grid.teachers \(toy\)"),
    ({"grid": {"teachers": ["toy", "mix"], "methods": ["moe"]}, "methods": {"moe": {"expert": 3}},
      "teacher_sizes": {"mix": {"d_model": 32, "ffn": 64, "heads": 2, "layers": 1, "experts": 3}}},
     r"methods.moe.expert: 3 but teacher mix has 3 experts \(0..2\)"),
    ({"grid": {"methods": ["beam"]}, "methods": {"beam": {"nbest": 3}}},
     r"methods.beam.nbest: only kind 'interpolate' takes nbest \(this method's kind is 'beam'\)"),
    ({"grid": {"methods": ["ban"]}, "methods": {"ban": {"temperature": 2.0}}},
     r"methods.ban.temperature: kind 'ban' takes no temperature"),
    ({"grid": {"methods": ["ban", "ban2"]}, "methods": {"ban": {"from": "ban2"}, "ban2": {"kind": "beam"}}},
     r"methods.ban2: its column 'ban2' is also a column of method 'ban'"),
    # corpus.files.tests: named test sets beside the primary one
    ({"corpus": {"files": {"tests": {"extra": {"src": "a", "tgt": "b"}}}}},
     r"corpus.files.tests: the synthetic corpus has one test set; more test sets need corpus.source: files"),
    ({"corpus": {"source": "files",
                 "files": {s: {"src": "a", "tgt": "b"} for s in ("train", "valid", "test", "tests")}}},
     r"corpus.files.tests.src: .* is not valid under any of the given schemas|corpus.files.tests"),
    ({"corpus": {"source": "files", "files": {**{s: {"src": "a", "tgt": "b"} for s in ("train", "valid", "test")},
                                              "tests": {"test": {"src": "a", "tgt": "b"}}}}},
     r"corpus.files.tests: .*'test'"),
    ({"corpus": {"source": "files", "multiway": True,
                 "files": {**{s: {"src": "a", "tgt": {"de": "b", "fr": "c"}} for s in ("train", "valid", "test")},
                           "tests": {"extra": {"src": "a", "tgt": "b"}}}}},
     r"corpus.files.tests: more test sets need a single-target corpus"),
    # grid.teacher_seeds: the teachers' own seed among them; no size named like a replica
    ({"grid": {"teacher_seeds": [2, 3]}}, r"grid.teacher_seeds: \[2, 3\] lacks teacher toy's own seed 1 .*add 1"),
    ({"teacher_sizes": {"toy-seed2": {"d_model": 8, "ffn": 8, "heads": 2, "layers": 1}}},
     r"teacher_sizes: 'toy-seed2' ends like a teacher replica's name"),
    ({"corpus": {"source": "files", "test_name": "t17",
                 "files": {**{s: {"src": "a", "tgt": "b"} for s in ("train", "valid", "test")},
                           "tests": {"t17": {"src": "a", "tgt": "b"}}}}},
     r"corpus.test_name: 't17' is also a name under corpus.files.tests"),
]


@pytest.mark.parametrize("override,message", BAD)
def test_bad_config_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        check(merged(TOY_CFG, override), SCHEMA, ["toy.yaml"])


def test_rescoring_counts_the_models_own_default_candidates():
    """A new CMLM variant without decode options decodes the model's default 5 lengths, so
    rescoring it is fine; a FlowSeq with 4 samples of one length too."""
    check(merged(TOY_CFG, {"grid": {"students": ["cmlm_r", "flow"]},
                           "students": {"cmlm_r": {"kind": "cmlm", "model": {}, "decode": {"rescore": "toy"}},
                                        "flow": {"kind": "flowseq", "model": {},
                                                 "decode": {"samples": 4, "rescore": "toy"}}}}),
          SCHEMA, ["toy.yaml"])


def test_the_rescorable_kinds_take_a_rescorer():
    """Each kind the config check lets rescore (kdgrid.models.configs.RESCORABLE) is that kind's
    model, and its generate() takes a rescorer."""
    import inspect

    from kdgrid.models.registry import MODELS

    for kind, (config_class, _) in model_configs.RESCORABLE.items():
        assert MODELS[kind].config_class is config_class, kind
        assert "rescorer" in inspect.signature(MODELS[kind].generate).parameters, kind


def test_the_section5_kinds_shape_the_grid():
    """A section-5 method left at its defaults (defaults.yaml names only the kind) resolves to
    kdgrid.methods.kinds' defaults; a ban method yields its rounds from 2 on; its jobs never see
    the options that shape the grid."""
    from kdgrid.methods import kinds as method_kinds

    defaults = yaml.safe_load((ROOT / "workflow" / "defaults.yaml").read_text())["methods"]
    assert method_kinds.resolved(defaults["interpolate"]) == {"kind": "interpolate", "nbest": 5, "beam": 5,
                                                               "lenpen": 1.0, "metric": "bleu"}
    assert method_kinds.resolved({"kind": "interpolate", "nbest": 8})["beam"] == 8  # beam defaults to nbest
    # a ban method's round 1 is its `from` method's column: it yields rounds 2 .. R only
    assert method_kinds.columns("ban", {"kind": "ban", "rounds": 3}) == ["ban2", "ban3"]
    assert method_kinds.columns("ban", {"kind": "ban", "rounds": 1}) == []
    assert [method_kinds.round_column("ban", {"kind": "ban", "from": "b4"}, r) for r in (1, 2)] == ["b4", "ban2"]
    assert not {"rounds", "from", "size"} & set(
        method_kinds.distill_options({"kind": "ban", "rounds": 3, "from": "beam", "size": "x"}))


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as e:
        check(merged(TOY_CFG, {"vocab": {"size": 1}, "distill": {"shards": 0}}), SCHEMA, ["x.yaml"])
    assert "vocab.size" in str(e.value) and "distill.shards" in str(e.value)
    assert "from x.yaml" in str(e.value)


def test_config_error_surfaces_in_a_dry_run_without_traceback(tmp_path):
    cfg = write_config(tmp_path / "bad.yaml", TOY, grid={"teachers": ["toy", "huge"]})
    proc = snakemake(tmp_path, "-n", configfile=cfg, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "grid.teachers[1]: 'huge' is not defined under teacher_sizes" in out
    assert "Traceback" not in out
    assert not (tmp_path / "results").exists()


def test_corpus_sides_are_checked():
    files = {"train": {"src": "a", "tgt": {"url": "ftp-nope", "sha256": "abc"}},
             "valid": {"src": "a", "tgt": "b"}, "test": {"sacrebleu": "wmt14/full", "langpair": "english"}}
    with pytest.raises(ConfigError) as e:
        check(merged(TOY_CFG, {"corpus": {"source": "files", "files": files}}), SCHEMA, ["x.yaml"])
    text = str(e.value)
    assert "corpus.files.test.langpair: 'english' does not match" in text
    assert "corpus.files.train.tgt" in text
    assert "sha256" in text or "url" in text


BODY = ("d_model", "ffn", "encoder_layers", "decoder_layers", "heads", "dropout", "attention_dropout", "pre_norm")


@pytest.mark.parametrize("config_file", [ROOT / "config.yaml", *sorted((ROOT / "configs").glob("*.yaml"))],
                         ids=lambda p: p.name)
def test_the_students_of_a_shipped_grid_share_one_body(config_file):
    """Student comparisons are confounded unless every student has the same size and dropout; a
    student that differs on purpose says so with `variant: <why>`."""
    cfg = merged(yaml.safe_load(Path(config_file).read_text()))
    bodies = {name: {k: cfg["students"][name]["model"].get(k) for k in BODY}
              for name in cfg["grid"]["students"] if "variant" not in cfg["students"][name]}
    distinct = {str(sorted(b.items())) for b in bodies.values()}
    assert len(distinct) <= 1, f"{config_file.name}: students differ in their body: {bodies}"


def test_shards_are_checked_against_a_prepared_corpus(tmp_path):
    """A files corpus: its size is known once prepared (stats.json), and checked from then on."""
    cfg = merged(yaml.safe_load((ROOT / "configs" / "multi30k.yaml").read_text()), {"distill": {"shards": 40_000}})
    check(cfg, SCHEMA, ["x"])  # size unknown before prepare
    with pytest.raises(ConfigError, match=r"distill.shards: 40000 shards for 28998 training sentences"):
        check(cfg, SCHEMA, ["x"], train_sentences=28998)


def test_the_conda_env_pins_what_requirements_txt_pins():
    """envs/kdgrid.yaml (cluster users) and requirements.txt (make) must not drift: every package the
    workflow's jobs import is pinned in both, to the same version (test and lint tools aside)."""
    import re

    from conftest import ROOT

    def pins(text):
        return dict(re.findall(r"^\s*(?:-\s*)?([A-Za-z0-9_.-]+)==([^\s#]+)", text, re.M))

    env = pins((ROOT / "envs" / "kdgrid.yaml").read_text())
    req = pins((ROOT / "requirements.txt").read_text())
    tools = {"pytest", "pytest-xdist", "ruff", "snakefmt"}
    assert {k: v for k, v in req.items() if k not in tools} == env


def test_the_demo_seeds_config_is_the_demo_grid_on_more_seeds():
    """configs/demo_seeds.yaml promises that after `make demo` only the runs of the new seeds are
    new: every setting but grid.seeds must be config.yaml's (a changed one would retrain the demo's
    own runs), and its seeds must include the demo's (grid.seeds, or else student.train.seed)."""
    demo = yaml.safe_load((ROOT / "config.yaml").read_text())
    seeds = yaml.safe_load((ROOT / "configs" / "demo_seeds.yaml").read_text())
    own = demo["grid"].get("seeds") or [demo.get("student", {}).get("train", {}).get("seed", 1)]
    assert set(own) < set(seeds["grid"].pop("seeds"))
    demo["grid"].pop("seeds", None)
    assert seeds == demo


def test_the_demo_student_kd_config_shares_the_demos_teachers_and_data_settings():
    """configs/demo_student_kd.yaml reads `make demo`'s cpu_s.beam set from results/demo: the corpus,
    vocabulary, teachers, decoding and metrics settings must be config.yaml's, or its run retrains
    and re-aligns what the demo made."""
    demo = yaml.safe_load((ROOT / "config.yaml").read_text())
    kd = yaml.safe_load((ROOT / "configs" / "demo_student_kd.yaml").read_text())
    for key in ("corpus", "vocab", "teacher_sizes", "teacher", "decoding", "metrics"):
        assert kd.get(key) == demo.get(key), key
