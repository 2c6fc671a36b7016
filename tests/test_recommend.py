"""The answer per student on made-up grids, every number checked by hand: best set, runner-up and
margin, ties, columns and teachers that do not beat copying the source, missing cells, and the
outputs (CSV, JSON, grid.md section, plots)."""

from __future__ import annotations

import csv
import json

import pytest

from kdgrid import grid, recommend, report


def cell(student, data, b):
    t, _, m = data.partition(".")
    return {"student": student, "data": data, "teacher": t if m else None, "method": m or None,
            "bleu": b, "chrf": b + 10, "bleu_signature": "nrefs:1|sig", "chrf_signature": "chrf|sig",
            "decode": {"sentences_per_second": 100.0, "seconds": 1.0}, "updates": 10}


def metrics(data, c, f):
    t, _, m = data.partition(".")
    return {"data": data, "teacher": t if m else None, "method": m or None, "complexity": c, "faithfulness": f}


def teachers(**test_bleu):
    return [{"teacher": t, "split": "test", "bleu": b, "parameters": 100} for t, b in test_bleu.items()]


# C(d): the small teacher a's beam set is the simplest, raw the most complex. Columns are generic:
# a Born-Again round and an interpolated set sit beside beam.
COLUMNS = ["raw", "a.beam", "b.beam", "a.ban2", "b.interpolate"]
C = {"raw": 2.0, "a.beam": 1.0, "b.beam": 1.5, "a.ban2": 0.8, "b.interpolate": 1.8}
F = {"raw": 0.0, "a.beam": 0.4, "b.beam": 0.3, "a.ban2": 0.6, "b.interpolate": 0.1}
BLEU = {  # weak nat peaks on the simple a.beam, cmlm in between on b.beam, strong levt on b.interpolate
    "nat": {"raw": 10.0, "a.beam": 15.0, "b.beam": 14.0, "a.ban2": 12.0, "b.interpolate": 11.0},
    "cmlm": {"raw": 14.0, "a.beam": 18.0, "b.beam": 19.2, "a.ban2": 17.0, "b.interpolate": 16.0},
    "levt": {"raw": 16.0, "a.beam": 19.0, "b.beam": 19.3, "a.ban2": 18.0, "b.interpolate": 20.0},
}


def make(bleu=BLEU, columns=COLUMNS, c=C, copy=2.0, teacher_bleu=None):
    g = grid.build([cell(s, d, b) for s, row in bleu.items() for d, b in row.items()],
                   teachers(**(teacher_bleu or {"a": 20.0, "b": 25.0})), list(bleu), columns,
                   data_metrics=[metrics(d, c[d], F[d]) for d in columns if d in c])
    if copy is not None:
        g["copy_source"] = {"bleu": copy, "chrf": 30.0}
    return g


def by_student(ans):
    return {a["student"]: a for a in ans["students"]}


def test_best_runner_up_margin_and_the_capacity_complexity_reason():
    ans = recommend.answer(make())
    nat, cmlm, levt = (by_student(ans)[s] for s in ("nat", "cmlm", "levt"))
    assert (nat["status"], nat["best"], nat["runner_up"]) == ("clear", "a.beam", "b.beam")
    assert nat["margin"] == pytest.approx(1.0) and nat["tie"] is False
    assert (nat["best_complexity"], nat["best_faithfulness"], nat["best_teacher"]) == (1.0, 0.4, "a")
    assert nat["best_distilled"] is True and nat["gain_over_raw"] == pytest.approx(5.0)
    assert nat["reason"] == ("weakest on raw data (BLEU 10.00 vs 14.00–16.00) and peaks on a simpler set than "
                             "the other students (C 1.000 vs 1.500–1.800); distilled, simpler than raw "
                             "(C 1.000 vs 2.000), +5.00 BLEU over raw; 1.00 BLEU ahead of b.beam")
    assert (cmlm["best"], cmlm["runner_up"], round(cmlm["margin"], 2)) == ("b.beam", "a.beam", 1.2)
    assert cmlm["reason"].startswith("peaks between the other students in complexity (C 1.500 vs 1.000–1.800)")
    assert (levt["best"], levt["runner_up"], round(levt["margin"], 2)) == ("b.interpolate", "b.beam", 0.7)
    assert levt["reason"].startswith("strongest on raw data (BLEU 16.00 vs 10.00–14.00) and peaks on a more "
                                     "complex set than the other students (C 1.800 vs 1.000–1.500)")
    # raw BLEU 10 < 14 < 16 and best C 1.0 < 1.5 < 1.8: perfectly rank-correlated, but 3 students
    # are too few to test (5 needed): the value is shown, no support is claimed
    assert ans["summary"]["spearman"] == pytest.approx(1.0) and ans["summary"]["tested"] is False
    assert ans["summary"]["text"].startswith("n = 3: too few to test")
    assert "expects" not in ans["summary"]["text"]
    assert ans["teachers_below_copy"] == {} and ans["raw_complexity"] == 2.0
    # points are ordered by C(d), simplest first
    assert [p["data"] for p in nat["points"]] == ["a.ban2", "a.beam", "b.beam", "b.interpolate", "raw"]


def test_a_margin_under_the_threshold_is_a_tie_and_the_threshold_is_a_parameter():
    bleu = {"nat": {**BLEU["nat"], "b.beam": 14.7}}  # a.beam 15.0 leads b.beam by 0.3
    nat = recommend.answer(make(bleu))["students"][0]
    assert (nat["status"], nat["best"], nat["tie"]) == ("tie", "a.beam", True)
    assert nat["margin"] == pytest.approx(0.3)
    assert "tie: only 0.30 BLEU ahead of b.beam (< 0.5), within noise" in nat["reason"]
    nat = recommend.answer(make(bleu), tie_bleu=0.2)["students"][0]
    assert (nat["status"], nat["tie"]) == ("clear", False)
    assert recommend.TIE_BLEU == 0.5


def test_no_column_beats_copying_the_source_no_recommendation():
    bleu = {"nat": {"raw": 1.0, "a.beam": 2.5, "b.beam": 0.3, "a.ban2": 0.2, "b.interpolate": 0.1},
            "cmlm": {"raw": 1.0, "a.beam": 3.0, "b.beam": 0.3, "a.ban2": 0.2, "b.interpolate": 0.1}}
    ans = recommend.answer(make(bleu, copy=2.75, teacher_bleu={"a": 0.92, "b": 3.5}))
    nat, cmlm = ans["students"]
    assert nat["status"] == "below_copy" and nat["best"] is None and nat["runner_up"] is None
    assert nat["reason"] == ("no column beats copying the source (2.75 BLEU); its best, a.beam, scores 2.50; "
                             "no recommendation")
    # 3.00 is above copying, but by 0.25 < 0.5: within noise, still no recommendation
    assert cmlm["status"] == "below_copy"
    assert cmlm["reason"].startswith("no column beats copying the source (2.75 BLEU) by the noise threshold "
                                     "of 0.5 BLEU; its best, a.beam, scores 3.00")
    # teacher a (0.92) is below copying; b (3.50) beats it by 0.75
    assert ans["teachers_below_copy"] == {"a": 0.92}
    assert all(p["beats_copy"] is False for p in nat["points"])
    assert "nothing to correlate" in ans["summary"]["text"]


def test_a_best_set_from_a_teacher_below_copy_is_flagged_and_a_lone_column_above_copy_is_named():
    bleu = {"nat": {"raw": 1.0, "a.beam": 6.0, "b.beam": 2.0, "a.ban2": 0.2, "b.interpolate": 0.1}}
    nat = recommend.answer(make(bleu, copy=2.75, teacher_bleu={"a": 0.92, "b": 30.0}))["students"][0]
    assert (nat["status"], nat["best"], nat["runner_up"]) == ("clear", "a.beam", "b.beam")
    assert nat["margin"] == pytest.approx(4.0)
    assert nat["reason"] == ("distilled, simpler than raw (C 1.000 vs 2.000), +5.00 BLEU over raw; "
                             "4.00 BLEU ahead of b.beam; the only column that beats copying the source; "
                             "but its teacher a does not beat copying the source (0.92 vs 2.75 BLEU)")


def test_missing_cells_and_missing_metrics_are_skipped_not_ranked():
    bleu = {"nat": {"raw": 10.0, "a.beam": 15.0}, "cmlm": {"raw": 20.0}, "levt": {}}
    c = {"raw": 2.0, "b.beam": 1.5}  # a.beam has no data metrics yet
    ans = recommend.answer(make(bleu, c=c, copy=None))
    nat, cmlm, levt = ans["students"]
    assert nat["missing"] == ["b.beam", "a.ban2", "b.interpolate"]
    assert (nat["best"], nat["best_complexity"], nat["runner_up"]) == ("a.beam", None, "raw")
    # by C(d); columns without it last, in grid order
    assert [p["data"] for p in nat["points"]] == ["b.beam", "raw", "a.beam", "a.ban2", "b.interpolate"]
    assert nat["reason"] == ("distilled, +5.00 BLEU over raw; 5.00 BLEU ahead of raw; "
                             "not scored yet: b.beam, a.ban2, b.interpolate")  # the missing columns named
    assert (cmlm["best"], cmlm["runner_up"], cmlm["best_distilled"]) == ("raw", None, False)
    assert cmlm["reason"] == ("raw data beats every distilled set; the only scored column; "
                              "not scored yet: a.beam, b.beam, a.ban2, b.interpolate")
    assert (levt["status"], levt["best"]) == ("no_scores", None)
    assert levt["reason"] == "no scores; no recommendation"
    assert ans["copy_source_bleu"] is None and all(p["beats_copy"] is None for p in nat["points"])


def test_a_tied_student_is_no_peer_in_the_others_reasons():
    bleu = {**BLEU, "cmlm": {**BLEU["cmlm"], "b.beam": 18.3}}  # cmlm: b.beam 18.3 vs a.beam 18.0, a tie
    ans = recommend.answer(make(bleu))
    nat, cmlm, levt = (by_student(ans)[s] for s in ("nat", "cmlm", "levt"))
    assert (cmlm["status"], cmlm["best"]) == ("tie", "b.beam")
    # nat's and levt's only peer is each other: cmlm's raw 14.00 and C 1.500 appear nowhere
    assert nat["reason"].startswith("weakest on raw data (BLEU 10.00 vs 16.00) and peaks on a simpler set than "
                                    "the other students (C 1.000 vs 1.800);")
    assert levt["reason"].startswith("strongest on raw data (BLEU 16.00 vs 10.00) and peaks on a more complex "
                                     "set than the other students (C 1.800 vs 1.000);")
    # the tied student's own reason still compares it with the clear ones
    assert cmlm["reason"].startswith("peaks between the other students in complexity (C 1.500 vs 1.000–1.800)")
    assert ans["summary"]["students"] == ["nat", "levt"]
    assert ans["summary"]["text"] == ("n = 2: too few to test (students with a clear recommendation, a raw-data "
                                      "score and a best set's C(d); 5 needed)")


def test_a_student_on_the_same_set_as_a_peer_is_as_simple_not_simpler():
    bleu = {**BLEU, "cmlm": {**BLEU["cmlm"], "a.beam": 20.0}}  # cmlm now peaks on a.beam too (0.80 ahead)
    ans = recommend.answer(make(bleu))
    nat, cmlm, levt = (by_student(ans)[s] for s in ("nat", "cmlm", "levt"))
    assert (nat["best"], cmlm["best"], cmlm["status"]) == ("a.beam", "a.beam", "clear")
    assert nat["reason"].startswith(
        "weakest on raw data (BLEU 10.00 vs 14.00–16.00) and peaks on a set as simple as the simplest of the "
        "other students' (C 1.000 vs 1.000–1.800; a.beam is also the best set of cmlm);")
    # cmlm's raw 14.00 is between 10.00 and 16.00: no raw-data clause
    assert cmlm["reason"].startswith(
        "peaks on a set as simple as the simplest of the other students' (C 1.000 vs 1.000–1.800; a.beam is "
        "also the best set of nat);")
    assert levt["reason"].startswith("strongest on raw data (BLEU 16.00 vs 10.00–14.00) and peaks on a more "
                                     "complex set than the other students (C 1.800 vs 1.000);")


def five_students(tied=()):
    """Raw BLEU 10, 12, 14, 16, 18 and best sets of C 0.8, 1.0, 1.5, 1.8, 2.0 (the last: raw)."""
    bleu = {}
    for i, best in enumerate(["a.ban2", "a.beam", "b.beam", "b.interpolate"]):
        raw = 10.0 + 2 * i
        bleu[f"s{i}"] = {c: raw + 1.0 for c in COLUMNS} | {"raw": raw, best: raw + 5.0}
        if f"s{i}" in tied:  # a runner-up 0.2 behind: a tie
            other = "b.interpolate" if best != "b.interpolate" else "a.beam"
            bleu[f"s{i}"][other] = raw + 4.8
    bleu["s4"] = {c: 16.0 for c in COLUMNS} | {"raw": 18.0}
    return bleu


def test_the_capacity_complexity_summary_needs_five_clear_students():
    ans = recommend.answer(make(five_students()))
    assert [a["best"] for a in ans["students"]] == ["a.ban2", "a.beam", "b.beam", "b.interpolate", "raw"]
    assert all(a["status"] == "clear" for a in ans["students"])
    s = ans["summary"]
    assert s["spearman"] == pytest.approx(1.0) and s["tested"] is True  # both sides ranked 1..5
    assert s["text"] == ("Spearman rank correlation between a student's raw-data BLEU (capacity proxy) and the "
                         "C(d) of its best set: +1.00 over 5 students, two-sided permutation p = 0.017 (exact; "
                         "finding 4 expects it positive: stronger students peak on more complex data)")
    assert s["spearman_p"] == 2 / 120
    # one tie leaves 4 clear students: the value is shown, no test
    ans = recommend.answer(make(five_students(tied=("s1",))))
    assert by_student(ans)["s1"]["status"] == "tie"
    s = ans["summary"]
    assert s["students"] == ["s0", "s2", "s3", "s4"] and s["tested"] is False
    assert s["text"] == ("n = 4: too few to test (students with a clear recommendation, a raw-data score and a "
                         "best set's C(d); 5 needed); Spearman rank correlation of raw-data BLEU with the best "
                         "set's C(d) over them: +1.00 (permutation p = 0.083), not evidence either way")


def test_spearman_hand_checked():
    assert recommend.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ranks x 1,2,3,4 and y 1,3,2,4: 1 - 6*(0+1+1+0)/(4*15) = 0.8
    assert recommend.spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)
    assert recommend.spearman([1, 2, 3], [5, 5, 5]) is None


def test_outputs_csv_json_markdown_and_plots(tmp_path):
    g = make(copy=2.75, teacher_bleu={"a": 0.92, "b": 25.0})
    ans = recommend.answer(g)
    recommend.write_csv(ans, tmp_path / "r.csv")
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert [(r["student"], r["status"], r["best"], r["runner_up"], r["margin"]) for r in rows] == [
        ("nat", "clear", "a.beam", "b.beam", "1.0"), ("cmlm", "clear", "b.beam", "a.beam", "1.2"),
        ("levt", "clear", "b.interpolate", "b.beam", "0.7")]
    assert rows[0]["tie_bleu"] == "0.5" and rows[0]["best_distilled"] == "true"
    recommend.write_json(ans, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["teachers_below_copy"] == {"a": 0.92}
    md = recommend.markdown(ans)
    assert "## Answer per student: capacity ↔ complexity" in md
    assert "| nat | a.beam | 15.00 | 1.000 | 0.400 | b.beam (14.00) | 1.00 | weakest on raw data" in md
    assert "**Teacher a does not beat copying the source**: test BLEU 0.92 vs 2.75" in md
    assert "| | a.ban2 | a.beam | b.beam | b.interpolate | raw |" in md  # ordered by C(d)
    assert "| C(d) | 0.800 | 1.000 | 1.500 | 1.800 | 2.000 |" in md
    assert "| nat | 12.00 | **15.00** | 14.00 | 11.00 | 10.00 |" in md
    assert "n = 3: too few to test" in md and "+1.00 (permutation p = 0.333), not evidence either way" in md
    whole = grid.markdown(g, "t", ans)
    assert "| a | 100 | — | 0.92 † |" in whole and "teachers below it: a" in whole
    low = make({"nat": {d: 1.0 for d in COLUMNS}}, copy=2.75)
    low_ans = recommend.answer(low)
    assert "| nat | 1.00 † | 1.00 † |" in grid.markdown(low, "t", low_ans)
    assert "| nat | none | — |" in recommend.markdown(low_ans)
    for name, a in [("nat", ans["students"][0]), ("low", low_ans["students"][0])]:
        report.student_complexity(a, tmp_path / f"{name}.png", tie_bleu=0.5)
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    report.bleu_vs_complexity(g, tmp_path / "all.png", answer=ans)
    report.heatmap(g, tmp_path / "grid.png", answer=ans)
    assert (tmp_path / "all.png").read_bytes()[:4] == (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"


def test_spearmans_permutation_p_value_by_hand():
    # a perfect ranking of 5: only the identity and its reverse reach |rho| = 1, 2 of 5! = 120
    assert recommend.spearman_p([1, 2, 3, 4, 5], [10, 20, 30, 40, 50]) == 2 / 120
    # of 3: 2 of 6 orderings
    assert recommend.spearman_p([1, 2, 3], [3, 2, 1]) == 2 / 6
    # rho = 0.9 on 5 (one adjacent swap, sum d^2 = 2): orderings with |rho| >= 0.9 are 10 of 120 (the
    # identity, the 4 adjacent swaps, and their 5 reverses)
    assert recommend.spearman([1, 2, 3, 4, 5], [2, 1, 3, 4, 5]) == 0.9
    assert recommend.spearman_p([1, 2, 3, 4, 5], [2, 1, 3, 4, 5]) == 10 / 120
    assert recommend.spearman_p([1, 1, 1], [1, 2, 3]) is None
    # beyond the exact limit: a seeded Monte-Carlo estimate, close to the exact share
    xs = list(range(10))
    assert abs(recommend.spearman_p(xs, xs, draws=2000) - 0.0) < 0.01


def test_complexities_within_the_tolerance_read_as_equal():
    # raw C 2.0; nat's best a.beam has C 1.995: within 0.01 nats, "as complex as" raw, not "simpler"
    bleu = {"nat": {"raw": 10.0, "a.beam": 15.0}}
    ans = recommend.answer(make(bleu, c={"raw": 2.0, "a.beam": 1.995}, copy=None))
    assert "distilled, as complex as raw (C 1.995 vs 2.000)" in ans["students"][0]["reason"]
    ans = recommend.answer(make(bleu, c={"raw": 2.0, "a.beam": 1.995}, copy=None), c_tolerance=0.001)
    assert "distilled, simpler than raw (C 1.995 vs 2.000)" in ans["students"][0]["reason"]
