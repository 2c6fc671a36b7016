"""Several test sets (corpus.files.tests): config checks, the prepare_test_set verb (files and a
sacrebleu set), the agreement statement, and a real run of a files corpus with a second test set."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest
from conftest import ROOT, job_counts, snakemake, write_config

from kdgrid import cli, importers, selection, synthetic, test_sets

TOY = ROOT / "tests" / "configs" / "toy.yaml"


def _files_corpus(tmp_path: Path) -> dict:
    """The toy's synthetic corpus written as files, and a second test set drawn with another seed."""
    spec = synthetic.SyntheticSpec(seed=3, train=300, valid=40, test=40, vocab_size=40, modes=2, min_len=4, max_len=8)
    other = synthetic.SyntheticSpec(seed=4, train=1, valid=1, test=30, vocab_size=40, modes=2, min_len=4, max_len=8)
    files = {}
    for name, pairs in [*synthetic.generate(spec).items(), ("extra", synthetic.generate(other)["test"])]:
        split = {}
        for i, side in enumerate(("src", "tgt")):
            path = tmp_path / f"{name}.{side}"
            path.write_text("".join(p[i] + "\n" for p in pairs))
            split[side] = str(path)
        files[name] = split
    return {"train": files["train"], "valid": files["valid"], "test": files["test"], "tests": {"extra": files["extra"]}}


def test_prepare_test_set_reads_files_and_normalizes(tmp_path):
    src, tgt = tmp_path / "s.gz", tmp_path / "t"
    with gzip.open(src, "wt") as f:
        f.write("a  b\nc\n")
    tgt.write_text("x\ny   z\n")
    out_src, out_tgt = tmp_path / "o.src", tmp_path / "o.tgt"
    assert cli.main(["prepare_test_set", "--split", json.dumps({"src": str(src), "tgt": str(tgt)}),
                     "--src", str(out_src), "--tgt", str(out_tgt)]) == 0
    assert out_src.read_text() == "a b\nc\n" and out_tgt.read_text() == "x\ny z\n"


def test_prepare_test_set_takes_a_sacrebleu_set(tmp_path, monkeypatch):
    src, ref = tmp_path / "newstest.en", tmp_path / "newstest.de"
    src.write_text("one\ntwo\n")
    ref.write_text("eins\nzwei\n")
    asked = []
    monkeypatch.setattr(importers, "sacrebleu_split", lambda spec: asked.append(spec) or (src, ref))
    out_src, out_tgt = tmp_path / "o.src", tmp_path / "o.tgt"
    split = {"sacrebleu": "wmt13", "langpair": "en-de"}
    assert cli.main(["prepare_test_set", "--split", json.dumps(split), "--src", str(out_src),
                     "--tgt", str(out_tgt)]) == 0
    assert asked == [split] and out_tgt.read_text() == "eins\nzwei\n"


def test_a_multiway_split_is_refused_with_the_reason(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("x\n")
    b.write_text("y\n")
    split = {"src": str(a), "tgt": {"de": str(b), "fr": str(b)}}
    assert cli.main(["prepare_test_set", "--split", json.dumps(split), "--src", str(tmp_path / "o1"),
                     "--tgt", str(tmp_path / "o2")]) == 2
    assert "not multiway" in capsys.readouterr().err


def _answer(status, recommended, tied=(), top="raw"):
    return {"student": "nat", "status": status, "recommended": recommended, "best": "t.beam", "best_bleu": 20.0,
            "tied": list(tied), "better_on_test": [], "top": top, "top_bleu": 21.0}


def test_agreement_needs_the_same_status_and_recommendation_on_every_set():
    same = test_sets.agreement({"a": {"students": [_answer("clear", "t.beam")]},
                                "b": {"students": [_answer("clear", "t.beam", top="t.greedy")]}})
    assert same["nat"]["agrees"] is True  # the test maximum may move: the answer is the valid choice's
    tie = test_sets.agreement({"a": {"students": [_answer("clear", "t.beam")]},
                               "b": {"students": [_answer("tie", "t.greedy", tied=["t.greedy"])]}})
    assert tie["nat"]["agrees"] is False
    md = test_sets.agreement_markdown(tie)
    assert "| nat | no | clear |" in md and "tie: t.beam, t.greedy; cheapest t.greedy" in md
    assert "agrees across the 2 test sets for 0 of 1 students" in md


def test_runs_pair_by_student_seed_and_teacher_seed():
    raw = [(None, 1), (None, 2)]
    distilled = [(1, 1), (1, 2), (2, 1), (2, 2)]  # (teacher seed, student seed)
    assert selection._seed_pairs(raw, raw) == [(0, 0, 1), (1, 1, 2)]
    assert selection._seed_pairs(raw, distilled) == [(0, 0, "1/t1"), (0, 2, "1/t2"), (1, 1, "2/t1"), (1, 3, "2/t2")]
    assert selection._seed_pairs(distilled, distilled) == [(0, 0, "1/t1"), (1, 1, "2/t1"), (2, 2, "1/t2"),
                                                          (3, 3, "2/t2")]


# -- a real run ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sets_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("setsrun")
    cfg = write_config(work / "sets.yaml", TOY, corpus={"name": "toysets", "source": "files",
                                                        "files": _files_corpus(work), "test_name": "main"},
                       grid={"methods": ["greedy"], "seeds": [1, 2], "teacher_seeds": [1, 2]})
    return work, cfg, snakemake(work, "--cores", "2", "--show-failed-logs", configfile=cfg)


def test_every_student_and_teacher_is_scored_on_each_test_set(sets_run):
    work, cfg, proc = sets_run
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["prepare_test_set"] == 1 and counts["evaluate_teacher_test_set"] == counts["train_teacher"] == 2
    # raw, toy.greedy and toy-seed2.greedy x 2 student seeds
    assert counts["evaluate_student_test_set"] == counts["evaluate_student"] == counts["train_student"] == 6
    out = work / "results/toysets"
    assert len((out / "data/tests/extra.src").read_text().splitlines()) == 30
    scores = json.loads((out / "students/nat.seed2/toy.greedy/tests/extra.scores.json").read_text())
    assert scores["test_set"] == "extra" and scores["seed"] == 2 and 0 <= scores["bleu"] <= 100
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert sorted({r["test_set"] for r in rows}) == ["extra", "main"] and len(rows) == 12
    md = (out / "grid.md").read_text()
    assert "Student BLEU on main (rows" in md and "## Test set extra" in md and "Teachers on extra: toy BLEU" in md
    assert "## The answer on every test set" in md and "agrees across the 2 test sets for" in md
    rec = json.loads((out / "recommendations.json").read_text())
    assert set(rec["test_sets"]) == {"extra"} and set(rec["agreement"]["nat"]["sets"]) == {"main", "extra"}
    # the same valid choice on every set
    assert rec["test_sets"]["extra"]["selection"]["nat"]["chosen"] == rec["selection"]["nat"]["chosen"]
    assert rec["test_sets"]["extra"]["selection"]["nat"]["selected_on"] == "valid"


def test_dropping_a_test_set_reruns_only_the_report(sets_run):
    work, cfg, _ = sets_run
    import yaml

    plain = yaml.safe_load(cfg.read_text())
    del plain["corpus"]["files"]["tests"]
    path = work / "plain.yaml"
    path.write_text(yaml.safe_dump(plain))
    dry = snakemake(work, "-n", configfile=path)
    assert job_counts(dry.stdout + dry.stderr) == {"aggregate": 1, "all": 1}


def test_teacher_replicas_fold_into_their_teachers_columns(sets_run):
    work, _, _ = sets_run
    out = work / "results/toysets"
    assert (out / "teachers/toy-seed2/model.pt").exists() and (out / "distill/toy-seed2.greedy/train.tgt").exists()
    assert next(csv.reader(open(out / "grid.csv"))) == ["student", "raw", "toy.greedy"]  # one column per method
    assert [r["data"] for r in csv.DictReader(open(out / "data_metrics.csv"))] == ["raw", "toy.greedy",
                                                                                  "toy-seed2.greedy"]
    rows = [r for r in csv.DictReader(open(out / "scores.csv"))
            if r["test_set"] == "main" and r["data"] == "toy.greedy"]
    assert sorted((r["teacher_seed"], r["seed"], r["trained_on"]) for r in rows) == [
        ("1", "1", "toy.greedy"), ("1", "2", "toy.greedy"),
        ("2", "1", "toy-seed2.greedy"), ("2", "2", "toy-seed2.greedy")]
    own = {r["trained_on"]: r["complexity"] for r in rows}
    metrics = {m["data"]: m for m in csv.DictReader(open(out / "data_metrics.csv"))}
    assert all(own[d] == metrics[d]["complexity"] for d in own)  # each run's own set's C(d)
    md = (out / "grid.md").read_text()
    assert "2/4 runs per cell" in md and "× `grid.teacher_seeds`" in md
    c_row = next(line for line in md.splitlines() if line.startswith("| complexity C(d) |"))
    assert c_row.count("±") == 1  # the distilled column, over its two teachers' sets
    rec = json.loads((out / "recommendations.json").read_text())
    (test,) = rec["selection"]["nat"]["tests"].values()
    assert sorted(p["seed"] for p in test["per_seed"]) == ["1/t1", "1/t2", "2/t1", "2/t2"]
