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


def test_grid_md_shows_each_moe_experts_column_their_mean_and_spread_and_the_ban_sizes():
    from kdgrid import grid_section5

    columns = ["raw", "m.beam", "m.moe0", "m.moe1", "m.moe2", "m.mix_mixbest", "t.ban2"]
    bleus = {"raw": 5.0, "m.beam": 20.0, "m.moe0": 20.0, "m.moe1": 22.0, "m.moe2": 27.0, "m.mix_mixbest": 24.5,
             "t.ban2": 18.0}
    metrics = [{"data": c, "complexity": 1.0 + i / 10, "faithfulness": 2.0} for i, c in enumerate(columns)]
    g = grid.build([cell("nat", c, b) for c, b in bleus.items()], TEACHERS, ["nat"], columns, data_metrics=metrics)
    info = {"m.moe0": {"kind": "moe", "teacher": "m", "method": "moe", "expert": 0},
            "m.moe1": {"kind": "moe", "teacher": "m", "method": "moe", "expert": 1},
            "m.moe2": {"kind": "moe", "teacher": "m", "method": "moe", "expert": 2},
            "m.mix_mixbest": {"kind": "moe", "teacher": "m", "method": "mix", "expert": "mixture_best"},
            "m.beam": {"kind": "beam", "teacher": "m", "method": "beam", "expert": "prior"},
            "t.ban2": {"kind": "ban", "teacher": "t", "method": "ban", "round": 2, "size": "student"}}
    md = grid_section5.markdown(g, info)
    assert ("| | m.moe0 (expert 0) | m.moe1 (expert 1) | m.moe2 (expert 2) | experts: mean ± sd | "
            "m.mix_mixbest (mixture-best) | m.beam (prior's expert) |") in md
    # BLEU 20, 22, 27: mean 23.00, sample sd sqrt(((-3)^2 + (-1)^2 + 4^2) / 2) = sqrt(13) = 3.61
    assert "| nat | 20.00 | 22.00 | 27.00 | 23.00 ± 3.61 (n=3) | 24.50 | 20.00 |" in md
    assert "| C(d) | 1.200 | 1.300 | 1.400 | 1.300 ± 0.100 (n=3) | 1.500 | 1.100 |" in md
    assert "| t.ban2 | t | 2 | student |" in md
    assert grid_section5.markdown(grid.build([cell("nat", "raw", 1.0)], TEACHERS, ["nat"], ["raw"]), {}) == ""


def test_the_teachers_table_says_which_expert_decoded_an_moe_teacher():
    moe = "prior: per sentence the most likely expert under p(k|x) (uniform: expert 0 for every sentence)"
    teachers = [{"teacher": "m", "split": "test", "bleu": 30.0, "parameters": 99, "decode": {"moe_expert": moe}}]
    md = grid.markdown(grid.build([cell("nat", "raw", 10.0)], teachers, ["nat"], ["raw"]), "title")
    assert f"| torch; {moe} |" in md
