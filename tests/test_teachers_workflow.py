"""Teachers this grid does not train itself, through the workflow: an ensemble of trained sizes
(teacher_sizes.<name>.ensemble) is made from its members' files, decodes with torch, distils and
is scored like any teacher, and its column is charged its members' training."""

from __future__ import annotations

import csv
import json
import sys

import pytest
import yaml
from conftest import ROOT, TOY, job_counts, snakemake, write_config

sys.path.insert(0, str(ROOT / "workflow"))
from config_check import ConfigError, check  # noqa: E402

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
TOY2 = {"d_model": 32, "ffn": 64, "layers": 1, "heads": 2, "train": {"seed": 2}}


def ensemble_config(tmp_path, teachers, **extra):
    return write_config(tmp_path / "ens.yaml", TOY,
                        teacher_sizes={"toy2": TOY2, "both": {"ensemble": ["toy", "toy2"], "combine": "prob_mean"}},
                        grid={"teachers": teachers, "methods": ["beam"], "students": ["nat"]}, **extra)


def test_an_ensemble_plans_its_members_and_decodes_with_torch(tmp_path):
    cfg = ensemble_config(tmp_path, ["toy", "both"], decoding={"backend": "ctranslate2"})
    proc = snakemake(tmp_path, "-n", "-p", configfile=cfg)
    counts = job_counts(proc.stdout)
    # toy2 is trained for the ensemble only: not evaluated, no column of its own
    assert counts["train_teacher"] == 2 and counts["ensemble_teacher"] == 1
    assert counts["evaluate_teacher"] == 2 and counts["distill"] == 2 and counts["train_student"] == 3
    lines = proc.stdout.splitlines()
    ensemble = next(line for line in lines if "kdgrid ensemble" in line)
    assert "--members results/toy/teachers/toy/model.pt results/toy/teachers/toy2/model.pt" in ensemble
    assert '"combine":"prob_mean"' in ensemble
    distills = {t: next(line for line in lines if "kdgrid distill" in line and f"teachers/{t}/model.pt" in line)
                for t in ("toy", "both")}
    # the ensemble's options name no backend: torch, the verbs' default
    assert '"backend":"ctranslate2"' in distills["toy"] and '"backend"' not in distills["both"]


def merged(override: dict) -> dict:
    from test_config import TOY_CFG
    from test_config import merged as merge

    return merge(TOY_CFG, {"teacher_sizes": {"toy2": TOY2}}, override)


BAD = [
    ({"teacher_sizes": {"both": {"ensemble": ["toy", "nope"]}}, "grid": {"teachers": ["both"]}},
     r"teacher_sizes.both.ensemble\[1\]: 'nope' is not defined under teacher_sizes"),
    ({"teacher_sizes": {"a": {"ensemble": ["toy"]}, "b": {"ensemble": ["a", "toy2"]}}, "grid": {"teachers": ["b"]}},
     r"teacher_sizes.b.ensemble\[0\]: 'a' is itself an ensemble"),
    ({"teacher_sizes": {"m": {"d_model": 32, "ffn": 64, "layers": 1, "heads": 2, "experts": 2},
                        "b": {"ensemble": ["toy", "m"]}}},
     r"teacher_sizes.b.ensemble\[1\]: 'm' is a mixture-of-experts teacher"),
    ({"teacher_sizes": {"b": {"ensemble": ["toy", "toy"]}}}, r"teacher_sizes.b.ensemble: lists toy more than once"),
    ({"teacher_sizes": {"b": {"ensemble": ["toy", "toy2"], "combine": "max"}}},
     r"teacher_sizes.b.combine: 'max' is not one of"),
    ({"teacher_sizes": {"b": {"ensemble": ["toy", "toy2"]}},
      "students": {"nat": {"kd": {"teacher": "b"}}}},
     r"students.nat.kd.teacher: 'b' is an ensemble teacher .* name one of its members \(toy, toy2\)"),
    ({"teacher_sizes": {"b": {"ensemble": ["toy", "toy2"]}},
      "students": {"nat": {"init": {"from": "b"}}}}, r"students.nat.init.from: 'b' is an ensemble teacher"),
    ({"teacher_sizes": {"b": {"ensemble": ["toy", "toy2"]}},
      "students": {"nat": {"decode": {"length_beam": 3, "rescore": "b"}}}},
     r"students.nat.decode.rescore: 'b' is an ensemble teacher"),
    ({"teacher_sizes": {"b": {"ensemble": ["toy", "toy2"]}},
      "methods": {"ban": {"kind": "ban", "size": "teacher"}}, "grid": {"teachers": ["b"], "methods": ["beam", "ban"]}},
     r"methods.ban.size: 'b' is an ensemble teacher"),
    ({"teacher_sizes": {"b": {"ensemble": ["toy", "toy2"]}}, "grid": {"teachers": ["b"], "teacher_seeds": [1, 2]}},
     r"grid.teacher_seeds: teacher 'b' is an ensemble"),
    # a size of defaults.yaml's name: the user's keys merge into it
    ({"teacher_sizes": {"tiny": {"ensemble": ["toy", "toy2"]}}},
     r"teacher_sizes.tiny: an ensemble or imported teacher under the name of a trained size .* a name of its own"),
]


@pytest.mark.parametrize("override,message", BAD)
def test_bad_ensembles_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        check(merged(override), SCHEMA, ["toy.yaml"])


def test_an_ensemble_as_the_filters_teacher_is_refused_by_name():
    from test_filter_workflow import SMALL_FILTER

    with pytest.raises(ConfigError, match=r"filter.teacher: 'b' is an ensemble teacher .* embed sentence pairs"):
        cfg = {"teacher_sizes": {"b": {"ensemble": ["toy", "toy2"]}}, "filter": {**SMALL_FILTER, "teacher": "b"}}
        check(merged(cfg), SCHEMA, ["toy.yaml"])


def test_a_typo_in_a_trained_size_still_names_the_key():
    """teacher_sizes takes a trained size or an ensemble: a misspelt key of a trained size is
    reported as that size's, not as 'not valid under any of the given schemas'."""
    with pytest.raises(ConfigError, match=r"teacher_sizes.toy2: unknown keys .*'layer'"):
        check(merged({"teacher_sizes": {"toy2": {"layer": 2}}}), SCHEMA, ["toy.yaml"])
    ok = merged({"teacher_sizes": {"b": {"ensemble": ["toy", "toy2"]}}, "grid": {"teachers": ["toy", "b"]}})
    check(ok, SCHEMA, ["toy.yaml"])
    assert yaml.safe_dump(ok)


# -- teachers trained elsewhere (teacher_sizes.<name>.import) ----------------------------------
def run(*args):
    import subprocess

    from conftest import env

    return subprocess.run([sys.executable, "-m", "kdgrid", *map(str, args)], capture_output=True, text=True, env=env())


def in_process(*args):
    from kdgrid import cli

    assert cli.main([str(a) for a in args]) == 0


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory):
    """A kdgrid model file of another corpus with its own vocabulary inside, as `kdgrid train`
    writes them (untrained: an import reads files, not skill)."""
    from conftest import encoded_toy_corpus

    from kdgrid.checkpoint import save_model
    from kdgrid.models import build
    from kdgrid.vocab import Vocab

    d = encoded_toy_corpus(tmp_path_factory.mktemp("elsewhere"), in_process, pairs=60, vocab_size=60, pieces=80)
    vocab = Vocab.load(d / "spm.model")
    torch_seed()
    model = build("transformer", {**vocab.model_ids(), "d_model": 32, "ffn": 64, "heads": 2, "encoder_layers": 1,
                                  "decoder_layers": 1})
    save_model(d / "model.pt", model, {"teacher": "cpu_x", "vocab_sha256": vocab.sha256, "vocab_model": vocab.proto,
                                       "updates": 0})
    return d


def torch_seed():
    import torch

    torch.manual_seed(0)


def sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_verb_imports_a_kdgrid_teacher_with_its_own_vocabulary(elsewhere, tmp_path):
    from kdgrid.checkpoint import load_for_decoding, load_model

    model = elsewhere / "model.pt"
    out, vocab = tmp_path / "t" / "model.pt", tmp_path / "t" / "spm.model"
    spec = {"teacher": "prev", "model": str(model), "sha256": sha(model)}
    proc = run("import_teacher", "--params", json.dumps(spec), "--out", out, "--vocab-out", vocab,
               "--labels", '{"teacher": "prev"}')
    assert proc.returncode == 0, proc.stderr
    assert vocab.read_bytes() == (elsewhere / "spm.model").read_bytes()  # the vocabulary it was trained with
    imported, meta, _ = load_for_decoding(out, vocab)
    original, _ = load_model(model)
    assert meta["teacher"] == "prev" and meta["imported"]["sha256"] == sha(model)
    assert all(torch_equal(a, b) for a, b in zip(imported.state_dict().values(), original.state_dict().values()))
    # a changed file, and a model that is no teacher, are errors that say so; nothing is written
    bad = {**spec, "sha256": "0" * 64}
    proc = run("import_teacher", "--params", json.dumps(bad), "--out", tmp_path / "x.pt", "--vocab-out", tmp_path / "x")
    assert proc.returncode == 2 and "but teacher_sizes.prev.import.sha256 is 000" in proc.stderr
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "x").exists()


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def test_a_model_that_is_no_teacher_or_carries_no_vocabulary_is_refused(elsewhere, tmp_path):
    import torch

    from kdgrid.checkpoint import load_model, save_model
    from kdgrid.models import build

    _, meta = load_model(elsewhere / "model.pt")
    nat = tmp_path / "nat.pt"
    save_model(nat, build("nat", {"vocab_size": 80, "pad": 0, "bos": 2, "eos": 3, "mask": 4, "d_model": 16, "ffn": 16,
                                  "encoder_layers": 1, "decoder_layers": 1, "heads": 2}), meta)
    proc = run("import_teacher", "--params", json.dumps({"model": str(nat), "sha256": sha(nat), "teacher": "p"}),
               "--out", tmp_path / "a.pt", "--vocab-out", tmp_path / "a.model")
    assert proc.returncode == 2 and "a model of kind 'nat'; a teacher is one of transformer" in proc.stderr
    bare = tmp_path / "bare.pt"
    model, _ = load_model(elsewhere / "model.pt")
    save_model(bare, model, {k: v for k, v in meta.items() if k != "vocab_model"})
    proc = run("import_teacher", "--params", json.dumps({"model": str(bare), "sha256": sha(bare), "teacher": "p"}),
               "--out", tmp_path / "a.pt", "--vocab-out", tmp_path / "a.model")
    assert proc.returncode == 2 and "carries no vocabulary" in proc.stderr
    assert torch.__version__  # torch imported by the helpers above


def imported_config(tmp_path, model, teachers=("toy", "prev"), **extra):
    return write_config(tmp_path / "imp.yaml", TOY,
                        teacher_sizes={"prev": {"import": {"model": str(model), "sha256": sha(model)}}},
                        grid={"teachers": list(teachers), "methods": ["beam"], "students": ["nat"]}, **extra)


def test_an_imported_teacher_plans_with_its_own_vocabulary(elsewhere, tmp_path):
    proc = snakemake(tmp_path, "-n", "-p", configfile=imported_config(tmp_path, elsewhere / "model.pt"))
    counts = job_counts(proc.stdout)
    assert counts["import_teacher"] == 1 and counts["train_teacher"] == 1 and counts["distill"] == 2
    lines = proc.stdout.splitlines()
    for verb in ("kdgrid evaluate", "kdgrid distill"):
        mine = next(line for line in lines if verb in line and "teachers/prev/model.pt" in line)
        assert "--vocab results/toy/teachers/prev/spm.model" in mine
        theirs = next(line for line in lines if verb in line and "teachers/toy/model.pt" in line)
        assert "--vocab results/toy/vocab/spm.model" in theirs


IMPORT = {"import": {"model": "m.pt", "sha256": "a" * 64}}
BAD_IMPORTS = [
    ({"teacher_sizes": {"p": {"import": {"model": "m.pt"}}}}, r"teacher_sizes.p.import.sha256: model is a local path"),
    ({"teacher_sizes": {"p": {"import": {"model": {"url": "https://x.org/m.pt", "sha256": "b" * 64},
                                         "sha256": "a" * 64}}}},
     r"teacher_sizes.p.import.sha256: model is \{url, sha256\}"),
    ({"teacher_sizes": {"p": IMPORT}, "students": {"nat": {"kd": {"teacher": "p"}}}},
     r"students.nat.kd.teacher: 'p' is an imported teacher .* not usable here"),
    ({"teacher_sizes": {"p": IMPORT, "b": {"ensemble": ["toy", "p"]}}},
     r"teacher_sizes.b.ensemble\[1\]: 'p' is an imported teacher"),
    ({"teacher_sizes": {"p": IMPORT}, "grid": {"teachers": ["p"], "teacher_seeds": [1, 2]}},
     r"grid.teacher_seeds: teacher 'p' is imported"),
    ({"teacher_sizes": {"p": {"import": {"model": "m.pt", "sha256": "a" * 64, "format": "fairseq"}}}},
     r"teacher_sizes.p.import.dict: a fairseq teacher needs its dict"),
    ({"teacher_sizes": {"p": {"import": {"model": "m.pt", "sha256": "a" * 64, "format": "fairseq",
                                         "dict": "dict.txt", "dict_sha256": "b" * 64, "spm": "spm.model"}}}},
     r"teacher_sizes.p.import.spm_sha256: spm is a local path; pin it"),
    ({"teacher_sizes": {"p": {"import": {**IMPORT["import"], "dict": "dict.txt"}}}},
     r"teacher_sizes.p.import.dict: a kdgrid model file carries its vocabulary"),
    ({"teacher_sizes": {"p": {"import": {**IMPORT["import"], "format": "marian"}}}},
     r"teacher_sizes.p.import.format: 'marian' is not one of \['kdgrid', 'fairseq'\]"),
]


@pytest.mark.parametrize("override,message", BAD_IMPORTS)
def test_bad_imports_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        check(merged(override), SCHEMA, ["toy.yaml"])



# -- one toy grid of every teacher and set from elsewhere --------------------------------------
FAIRSEQ = ROOT / "tests" / "data" / "fairseq_tiny"


@pytest.fixture(scope="module")
def elsewhere_run(tmp_path_factory):
    """One toy grid whose teachers and sets all come from elsewhere: an ensemble of two sizes
    (one outside grid.teachers), the tiny fairseq Transformer of tests/data/fairseq_tiny (converted:
    another corpus and vocabulary, through the import_teacher job as a kdgrid file goes), and a
    released set (the grid's own targets, words reversed, with its sources shuffled)."""
    import random

    d = tmp_path_factory.mktemp("elsewhere_run")
    snakemake(d, "--cores", "1", "results/toy/data/train.src", configfile=TOY)
    data = d / "results" / "toy" / "data"
    pairs = list(zip(data.joinpath("train.src").read_text().splitlines(),
                     data.joinpath("train.tgt").read_text().splitlines()))
    random.Random(1).shuffle(pairs)
    (d / "rel.src").write_text("".join(s + "\n" for s, _ in pairs))
    (d / "rel.tgt").write_text("".join(" ".join(reversed(t.split())) + "\n" for _, t in pairs))
    fairseq = {"format": "fairseq", **{k: str(FAIRSEQ / f) for k, f in (("model", "pre_norm.pt"), ("dict", "dict.txt"),
                                                                          ("spm", "spm.model"))}}
    fairseq.update({pin: sha(FAIRSEQ / f) for pin, f in (("sha256", "pre_norm.pt"), ("dict_sha256", "dict.txt"),
                                                         ("spm_sha256", "spm.model"))})
    cfg = write_config(d / "elsewhere.yaml", TOY, teacher_sizes={
        "toy2": TOY2, "both": {"ensemble": ["toy", "toy2"], "combine": "prob_mean"},
        "fs": {"import": fairseq}},
        methods={"released": {"kind": "file", "tgt": str(d / "rel.tgt"), "sha256": sha(d / "rel.tgt"),
                              "src": str(d / "rel.src")}},
        grid={"teachers": ["both", "fs"], "methods": ["beam", "released"], "students": ["nat"]})
    snakemake(d, "--cores", "2", configfile=cfg)
    return d / "results" / "toy"


def test_an_ensemble_teacher_runs_through_the_grid(elsewhere_run):
    from kdgrid.checkpoint import load_model

    out = elsewhere_run
    teachers = {r["teacher"]: r for r in csv.DictReader((out / "teachers.csv").open())}
    assert list(teachers) == ["both", "fs"] and teachers["both"]["ensemble"] == "toy + toy2 (prob_mean)"
    scores = json.loads((out / "teachers" / "both" / "test.scores.json").read_text())
    assert scores["decode"]["backend"]["used"] == "torch" and scores["bleu"] >= 0
    models = [load_model(out / "teachers" / t / "model.pt")[0] for t in ("toy", "toy2")]
    members = sum(p.numel() for m in models for p in m.parameters())
    assert json.loads((out / "teachers" / "both" / "valid.scores.json").read_text())["parameters"] == members
    grid = {r["student"]: r for r in csv.DictReader((out / "grid.csv").open())}
    assert float(grid["nat"]["both.beam"]) >= 0 and (out / "distill" / "both.beam" / "train.tgt").exists()
    costs = {(r["scope"], r["teacher"]): r for r in csv.DictReader((out / "costs.csv").open())}
    for t in ("toy", "toy2", "both"):  # both members' training and the ensemble's own jobs are charged
        assert float(costs[("teacher", t)]["wall_seconds"]) > 0, t
    assert costs[("teacher", "toy")]["rules"] == "train_teacher"  # a member only: trained, not evaluated
    assert costs[("teacher", "both")]["rules"].startswith("ensemble_teacher; evaluate_teacher")


def test_a_fairseq_teacher_runs_through_the_grid(elsewhere_run):
    from kdgrid.checkpoint import load_model

    out = elsewhere_run
    model, meta = load_model(out / "teachers" / "fs" / "model.pt")
    assert meta["imported"]["format"] == "fairseq" and model.cfg.position_offset == 2
    teachers = {r["teacher"]: r for r in csv.DictReader((out / "teachers.csv").open())}
    assert teachers["fs"]["imported"] == str(FAIRSEQ / "pre_norm.pt") and float(teachers["fs"]["test_bleu"]) >= 0
    costs = {(r["scope"], r["teacher"]): r for r in csv.DictReader((out / "costs.csv").open())}
    assert costs[("teacher", "fs")]["rules"].startswith("import_teacher; evaluate_teacher")
    assert meta["imported"]["conversion"]["filler_symbols"] == 1
    assert (out / "teachers" / "fs" / "spm.model").read_bytes() == meta["vocab_model"]
    grid = {r["student"]: r for r in csv.DictReader((out / "grid.csv").open())}
    assert float(grid["nat"]["fs.beam"]) >= 0
    assert len((out / "distill" / "fs.beam" / "train.tgt").read_text().splitlines()) == \
        len((out / "data" / "train.src").read_text().splitlines())


def test_an_imported_set_runs_through_the_grid(elsewhere_run):
    """The released set comes back in the grid's order, is measured (C(d)) and trained on."""
    out = elsewhere_run
    imported = (out / "distill" / "imported.released" / "train.tgt").read_text().splitlines()
    real = (out / "data" / "train.tgt").read_text().splitlines()
    assert imported == [" ".join(reversed(t.split())) for t in real]
    grid = {r["student"]: r for r in csv.DictReader((out / "grid.csv").open())}
    assert float(grid["nat"]["imported.released"]) >= 0 and float(grid["C(d)"]["imported.released"]) > 0
    costs = {(r["scope"], r["data"]): r for r in csv.DictReader((out / "costs.csv").open())}
    assert costs[("data", "imported.released")]["rules"].startswith("import_distilled; encode_distilled")
