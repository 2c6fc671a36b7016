"""The answer per student chooses on valid and lets paired tests on the test hypotheses decide
ties (kdgrid.selection, kdgrid.recommend): hand-made hypothesis files with known outcomes."""

from __future__ import annotations

import random

import pytest

from kdgrid import grid, recommend, selection
from kdgrid.corpus import write_lines

WORDS = [f"w{i}" for i in range(50)]


def refs(n=120, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(n)]


def drop_word(lines):
    return [" ".join(line.split()[1:]) for line in lines]


def cell(tmp_path, student, data, hyp_lines, ref_lines, valid_bleu, seed=1, run=None):
    from kdgrid.metrics import bleu

    path = tmp_path / f"{run or student}.{data}.hyp"
    write_lines(path, hyp_lines)
    scores = bleu.score(hyp_lines, [ref_lines])
    return {"student": run or student, "data": data, "teacher": None if data == "raw" else data.split(".")[0],
            "method": None, **scores, "decode": {"sentences_per_second": 1.0, "seconds": 1.0}, "hyp": str(path),
            "seed": seed}, {"student": run or student, "data": data, "bleu": valid_bleu}


def build(tmp_path, columns, runs=None):
    ref = refs()
    cells, valids = [], []
    for data, (hyps, valid_bleu) in columns.items():
        for k, h in enumerate(hyps if isinstance(hyps[0], list) else [hyps]):
            run = None if k == 0 else f"nat.seed{k + 1}"
            c, v = cell(tmp_path, "nat", data, h, ref, valid_bleu[k] if isinstance(valid_bleu, list) else valid_bleu,
                        seed=k + 1, run=run)
            cells.append(c)
            valids.append(v)
    runs = runs or {"nat": ["nat", 1], "nat.seed2": ["nat", 2], "nat.seed3": ["nat", 3]}
    g = grid.build(cells, [], ["nat"], list(columns), runs=runs, valid_cells=valids)
    return g, ref


def test_a_column_the_test_set_cannot_tell_from_the_chosen_one_is_a_tie_and_the_cheapest_wins(tmp_path):
    ref = refs()
    near = list(ref)
    near[0] = "completely different words here"  # one sentence of 120 differs: not significant
    g, ref = build(tmp_path, {"raw": (drop_word(ref), 30.0), "a.beam": (ref, 50.0), "b.beam": (near, 49.0)})
    sel = selection.analyse(g, [ref])["nat"]
    assert (sel["chosen"], sel["runner_up"], sel["selected_on"]) == ("a.beam", "b.beam", "valid")
    assert sel["tests"]["raw"]["verdict"] == "worse" and sel["tests"]["raw"]["p_value"] < 0.01
    assert sel["tests"]["b.beam"]["verdict"] == "tied" and sel["tests"]["b.beam"]["p_value"] >= 0.05
    costs = {"raw": 0.01, "a.beam": 2.0, "b.beam": 0.5}
    ans = recommend.answer(g, selection={"nat": sel}, cost_of=costs.get)
    (a,) = ans["students"]
    assert (a["status"], a["best"], a["tied"], a["recommended"]) == ("tie", "a.beam", ["b.beam"], "b.beam")
    assert a["recommended_cost_hours"] == 0.5 and "the cheapest of them is b.beam" in a["reason"]
    assert "| nat | b.beam (tie with a.beam) |" in recommend.markdown(ans)


def test_a_significant_lead_is_clear_and_selection_uses_valid_not_the_test_maximum(tmp_path):
    ref = refs()
    # c.beam has the best TEST score but a lower valid score: the choice is a.beam, reported on test
    g, ref = build(tmp_path, {"raw": (drop_word(drop_word(drop_word(ref))), 30.0),
                              "a.beam": (drop_word(drop_word(ref)), 50.0), "c.beam": (ref, 45.0)})
    sel = selection.analyse(g, [ref])["nat"]
    assert sel["chosen"] == "a.beam" and sel["tests"]["c.beam"]["verdict"] == "better"
    (a,) = recommend.answer(g, selection={"nat": sel})["students"]
    assert a["best"] == "a.beam" and a["best_bleu"] == g["cells"]["nat"]["a.beam"]["bleu"] < a["top_bleu"]
    assert a["top"] == "c.beam" and a["status"] == "disagree" and a["better_on_test"] == ["c.beam"]
    assert "valid and test disagree" in a["reason"]
    # without c.beam the lead over raw is significant: clear
    g2, _ = build(tmp_path, {"raw": (drop_word(drop_word(drop_word(ref))), 30.0), "a.beam": (ref, 50.0)})
    (b,) = recommend.answer(g2, selection=selection.analyse(g2, [ref]))["students"]
    assert (b["status"], b["best"], b["tied"], b["tie_rule"]) == ("clear", "a.beam", [], "paired")
    assert b["runner_up_p"] < 0.05 and b["margin_ci"][0] > 0


def test_seeds_pool_and_per_seed_tests_are_reported(tmp_path):
    ref = refs()
    worse = drop_word(ref)
    g, ref = build(tmp_path, {"raw": ([worse, worse, worse], [30.0, 31.0, 29.0]),
                              "a.beam": ([ref, ref, ref], [50.0, 48.0, 52.0])})
    assert g["cells"]["nat"]["a.beam"]["n"] == 3 and g["cells"]["nat"]["a.beam"]["valid"]["bleu"] == 50.0
    assert g["cells"]["nat"]["raw"]["valid"]["bleu_sd"] == pytest.approx(1.0)
    sel = selection.analyse(g, [ref])["nat"]
    assert [p["seed"] for p in sel["tests"]["raw"]["per_seed"]] == [1, 2, 3]
    assert all(p["p_value"] < 0.01 for p in sel["tests"]["raw"]["per_seed"])


def test_without_valid_scores_the_choice_falls_back_to_test_and_says_so():
    cells = [{"student": "nat", "data": d, "bleu": b, "chrf": b, "decode": {"sentences_per_second": 1, "seconds": 1}}
             for d, b in (("raw", 10.0), ("a.beam", 20.0))]
    g = grid.build(cells, [], ["nat"], ["raw", "a.beam"])
    order, split = selection.ranking(g, "nat")
    assert (order, split) == (["a.beam", "raw"], "test")
    with pytest.raises(ValueError, match="report.select_metric must be one of"):
        selection.ranking(g, "nat", "meteor")


def test_the_paired_tests_section_lists_every_column_with_intervals(tmp_path):
    ref = refs()
    g, ref = build(tmp_path, {"raw": (drop_word(ref), 30.0), "a.beam": (ref, 50.0)})
    md = selection.markdown(selection.analyse(g, [ref]), g)
    assert "## Paired tests on the test set" in md and "**nat** (chosen: a.beam, on valid)" in md
    row = next(line for line in md.splitlines() if line.startswith("| raw |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[3]) < 0 and cells[6] == "worse" and cells[7].startswith("1: ")
    assert selection.markdown({"nat": {"tests": None}}, g) == ""


def test_a_seed_that_reverses_the_pooled_verdict_makes_a_tie(tmp_path):
    ref = refs()
    good, bad = ref, drop_word(drop_word(ref))
    # a.beam wins in seeds 1 and 2, raw in seed 3: pooled a.beam is ahead, but the seeds disagree
    g, ref = build(tmp_path, {"raw": ([bad, bad, good], [30.0, 30.0, 30.0]), "a.beam": ([good, good, bad], [40.0] * 3)})
    sel = selection.analyse(g, [ref])["nat"]
    t = sel["tests"]["raw"]
    assert t["p_value"] < 0.05 and t["diff"] < 0  # pooled: raw worse
    assert [p["diff"] < 0 for p in t["per_seed"]] == [True, True, False]
    assert t["verdict"] == "tied"
    # the answer says why: every p is small, the seeds disagree in direction (not "p >= 0.05")
    assert all(p["p_value"] < 0.05 for p in t["per_seed"])
    a = recommend.answer(g, selection=selection.analyse(g, [ref]))["students"][0]
    assert a["tied_by_sign"] == ["raw"]
    assert "raw differs significantly in every seed but not in the same direction" in a["reason"]
    assert "not told apart" not in a["reason"]
    # every seed agreeing: worse
    g2, _ = build(tmp_path, {"raw": ([bad] * 3, [30.0] * 3), "a.beam": ([good, good, good], [40.0] * 3)})
    assert selection.analyse(g2, [ref])["nat"]["tests"]["raw"]["verdict"] == "worse"


@pytest.mark.parametrize("test", ["bs", "ar"])
def test_ter_selects_the_lowest_and_both_tests_decide(tmp_path, test):
    ref = refs()
    g, ref = build(tmp_path, {"raw": (drop_word(drop_word(ref)), 30.0), "a.beam": (ref, 50.0)})
    for cell, v in ((g["cells"]["nat"]["raw"], 20.0), (g["cells"]["nat"]["a.beam"], 60.0)):
        cell["valid"]["ter"] = v  # valid TER: raw lower (better), though its BLEU is lower too
    sel = selection.analyse(g, [ref], metric="ter", test=test, resamples=200)["nat"]
    assert sel["chosen"] == "raw" and sel["test"] == test
    t = sel["tests"]["a.beam"]
    assert t["diff"] < 0 and t["verdict"] == "better"  # a.beam's test TER is lower: better on test
