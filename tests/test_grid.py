"""Scores -> grid tables and heatmap; BLEU/chrF by sacrebleu with signatures."""

from __future__ import annotations

import csv

import pytest

from kdgrid import grid, report
from kdgrid.errors import KdgridError
from kdgrid.metrics import bleu


def cell(student, data, b):
    t, _, m = data.partition(".")
    return {"student": student, "data": data, "teacher": t if m else None, "method": m or None,
            "bleu": b, "chrf": b + 10, "bleu_signature": "nrefs:1|sig", "chrf_signature": "chrf|sig",
            "decode": {"sentences_per_second": 100.0, "seconds": 1.0}, "updates": 10}


TEACHERS = [{"teacher": "t", "split": "valid", "bleu": 30.0, "parameters": 1234},
            {"teacher": "t", "split": "test", "bleu": 29.0, "parameters": 1234}]


def test_grid_tables_put_each_score_in_its_cell(tmp_path):
    g = grid.build([cell("nat", "raw", 10.0), cell("nat", "t.beam", 20.5), cell("at", "raw", 30.0)],
                   TEACHERS, ["nat", "at"], ["raw", "t.beam"])
    grid.write_csv(g, tmp_path / "grid.csv")
    rows = list(csv.reader(open(tmp_path / "grid.csv")))
    assert rows == [["student", "raw", "t.beam"], ["nat", "10.0", "20.5"], ["at", "30.0", ""]]
    md = grid.markdown(g, "title")
    assert "| nat | 10.00 | 20.50 |" in md and "| at | 30.00 | — |" in md
    assert "| t | 1,234 | 30.00 | 29.00 |" in md
    grid.write_long_csv(g, tmp_path / "long.csv")
    long = list(csv.DictReader(open(tmp_path / "long.csv")))
    assert [(r["student"], r["data"], r["method"]) for r in long] == [
        ("nat", "raw", ""), ("nat", "t.beam", "beam"), ("at", "raw", "")]
    report.heatmap(g, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"


def test_the_teachers_table_says_which_code_decoded_each_teacher():
    ct2 = {"backend": "ctranslate2", "compute_type": "int8", "ct2_search": "fast", "used": "ctranslate2"}
    teachers = [*TEACHERS, {"teacher": "u", "split": "valid", "bleu": 31.0, "parameters": 99},
                {"teacher": "u", "split": "test", "bleu": 30.0, "parameters": 99, "decode": {"backend": ct2}},
                {"teacher": "v", "split": "test", "bleu": 30.0, "parameters": 99,
                 "decode": {"backend": {**ct2, "used": "torch"}}},  # asked for CTranslate2, fell back
                {"teacher": "w", "split": "test", "bleu": 30.0, "parameters": 99, "decode": {"backend": ct2},
                 "decode_options": {"method": "greedy"}}]  # ct2_search changes beam search only
    md = grid.markdown(grid.build([cell("nat", "raw", 10.0)], teachers, ["nat"], ["raw"]), "title")
    rows = {line.split(" | ")[0]: line for line in md.splitlines()
            if line.startswith(("| t |", "| u |", "| v |", "| w |"))}
    assert rows["| t"].endswith("| torch |")  # scores from before the backend existed
    assert rows["| u"].endswith("| CTranslate2 (int8, fast search) |")
    assert rows["| v"].endswith("| torch |")
    assert rows["| w"].endswith("| CTranslate2 (int8) |")


def test_scores_outside_the_grid_are_an_error():
    with pytest.raises(KdgridError, match="'cmlm' on 'raw' are not part of this grid"):
        grid.build([cell("cmlm", "raw", 1.0)], [], ["nat"], ["raw"])


def test_bleu_and_chrf_hand_checked():
    refs = ["the cat sat on the mat .", "a dog ran in the park ."]
    perfect = bleu.score(refs, refs)
    assert perfect["bleu"] == 100.0 and perfect["chrf"] == 100.0
    assert perfect["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert bleu.score(["x y z w v", "q r s t u"], refs)["bleu"] == 0.0
    # hyp "the cat sat on a rug ." vs ref "the cat sat on the mat ." (7 tokens each, tok 13a):
    # 1-grams 5/7 (the cat sat on .), 2-grams 3/6 (the cat, cat sat, sat on), 3-grams 2/5,
    # 4-grams 1/4; brevity penalty 1 -> BLEU = 100 * exp(mean(log p)) = 43.47
    import math

    expected = 100 * math.exp(sum(math.log(p) for p in (5 / 7, 3 / 6, 2 / 5, 1 / 4)) / 4)
    got = bleu.score(["the cat sat on a rug ."], ["the cat sat on the mat ."])["bleu"]
    assert got == pytest.approx(expected, abs=0.01)
    with pytest.raises(KdgridError, match="2 hypotheses but 1 references"):
        bleu.score(["a", "b"], ["a"])


def test_streamed_bleu_equals_sacrebleu_on_the_whole_corpus(tmp_path):
    from kdgrid import synthetic
    from kdgrid.corpus import write_lines

    pairs = synthetic.generate(synthetic.SyntheticSpec(seed=1, train=500, valid=1, test=1, vocab_size=30))["train"]
    hyps = [t for _, t in pairs[1:]] + [pairs[0][1]]  # shifted: partial n-gram overlap
    refs = [t for _, t in pairs]
    write_lines(tmp_path / "h", hyps)
    write_lines(tmp_path / "r", refs)
    whole = bleu.score(hyps, refs)["bleu"]
    assert 0 < whole < 100
    assert bleu.streamed_bleu(tmp_path / "h", tmp_path / "r", chunk=37)["bleu"] == whole
