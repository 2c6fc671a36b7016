"""Several test sets (corpus.files.tests): config checks, the prepare_test_set verb (files and a
sacrebleu set), the agreement statement, and a real run of a files corpus with a second test set."""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import pytest
from conftest import ROOT, job_counts, snakemake, write_config

from kdgrid import cli, grid, importers, selection, synthetic, test_sets

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


def test_randomization_pairs_a_replicated_column_with_one_that_is_not(tmp_path):
    """Approximate randomization swaps outputs run by run: raw (2 student seeds) against a column of
    2 teacher seeds x 2 student seeds is tested on the runs paired by student seed."""
    refs = ["a b c d", "e f g h", "i j k l"]
    outputs = {"raw": ["a b c d", "e f x h", "i x x l"], "t.beam": ["a b c d", "e f g h", "i j x l"]}
    cells, valid = [], []
    for data, t_seeds in (("raw", [None]), ("t.beam", [1, 2])):
        for t_seed in t_seeds:
            for seed in (1, 2):
                run = "nat" if seed == 1 else "nat.seed2"
                column = data if t_seed in (None, 1) else "t-seed2.beam"
                hyp = tmp_path / f"{run}.{column}.hyp"
                hyp.write_text("\n".join(outputs[data]) + "\n")
                cells.append({"student": run, "data": column, "bleu": 50.0, "chrf": 50.0, "hyp": str(hyp)})
                valid.append({"student": run, "data": column, "bleu": 60.0 if data == "t.beam" else 40.0})
    g = grid.build(cells, [], ["nat"], ["raw", "t.beam"], runs={"nat": ["nat", 1], "nat.seed2": ["nat", 2]},
                   valid_cells=valid, column_replicas={"t.beam": ["t.beam", 1], "t-seed2.beam": ["t.beam", 2]})
    assert g["cells"]["nat"]["t.beam"]["n"] == 4 and g["cells"]["nat"]["raw"]["n"] == 2
    for test in ("ar", "bs"):
        chosen = selection.analyse(g, [refs], test=test, resamples=200)["nat"]
        assert chosen["chosen"] == "t.beam"
        raw = chosen["tests"]["raw"]
        assert raw["diff"] < 0 and sorted(p["seed"] for p in raw["per_seed"]) == ["1/t1", "1/t2", "2/t1", "2/t2"]


def test_replicas_make_their_teachers_columns_and_students_learn_from_the_replica(tmp_path):
    """A method limited to named teachers makes its column for their replicas too, and a student
    that starts from or learns the distribution of the column's teacher uses that replica."""
    cfg = write_config(tmp_path / "kd.yaml", ROOT / "tests/configs/toy_student_kd.yaml",
                       methods={"greedy": {"kind": "greedy", "teachers": ["toy"]}},
                       grid={"methods": ["beam", "greedy"], "students": ["nat_fkl"], "teachers": ["toy", "toy_deep"],
                             "teacher_seeds": [1, 2]})
    commands = [line for line in snakemake(tmp_path, "-n", "-p", configfile=cfg).stdout.splitlines()
                if "kdgrid train --kind nat" in line]
    by_cell = {re.search(r"students/(\S+?)/model.pt", c).group(1): c for c in commands}
    assert sorted(by_cell) == ["nat_fkl/raw", "nat_fkl/toy-seed2.beam", "nat_fkl/toy-seed2.greedy",
                               "nat_fkl/toy.beam", "nat_fkl/toy.greedy", "nat_fkl/toy_deep-seed2.beam",
                               "nat_fkl/toy_deep.beam"]
    kd = {cell: re.search(r"--kd-teacher (\S+)", c).group(1).split("/teachers/")[1] for cell, c in by_cell.items()}
    assert kd["nat_fkl/toy_deep-seed2.beam"] == "toy_deep-seed2/model.pt"  # the column's own teacher replica
    assert kd["nat_fkl/toy_deep.beam"] == kd["nat_fkl/toy-seed2.beam"] == kd["nat_fkl/raw"] == "toy_deep/model.pt"


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
