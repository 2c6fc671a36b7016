"""Every student kind through the workflow (its own module, so that `make test`'s two workers run
it beside test_workflow.py's toy grid instead of after it)."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import snakemake, write_config
from test_workflow import ALL_STUDENTS, TOY_STUDENTS


@pytest.mark.slow
def test_every_student_kind_runs_through_the_workflow(tmp_path):
    """Every kind trains, decodes and is scored on the raw column (a distilled column is the same
    cell on other targets, run for real by toy_run); the teacher is still trained, for flowseq's
    rescoring, nat_init's weights and cmlm_okd's distribution."""
    cfg = write_config(tmp_path / "roster.yaml", TOY_STUDENTS, grid={"methods": []})
    snakemake(tmp_path, "--cores", "2", "--show-failed-logs", configfile=cfg)
    rows = list(csv.DictReader(open(tmp_path / "results/toy_students/grid.csv")))
    assert [r["student"] for r in rows] == [*ALL_STUDENTS, "C(d)", "F(d)"]
    assert list(rows[0]) == ["student", "raw"]
    for row in rows[: len(ALL_STUDENTS)]:  # a BLEU in every cell
        assert 0.0 <= float(row["raw"]) <= 100.0, row["student"]
    for student in ALL_STUDENTS:
        scores = json.loads((tmp_path / f"results/toy_students/students/{student}/raw/scores.json").read_text())
        assert scores["decode"]["sentences"] == 30
    # CTC's pairs without an alignment are counted in its record and shown, not hidden
    ctc = json.loads((tmp_path / "results/toy_students/students/ctc/raw/scores.json").read_text())["infeasible_pairs"]
    assert ctc["train_pairs"] > 0 and 0 <= ctc["train"] <= ctc["train_pairs"] and "upsample" in ctc["rule"]
    md = (tmp_path / "results/toy_students/grid.md").read_text()
    table = md[md.index("Training pairs a student cannot learn from"):].split("\n\n")[1].splitlines()
    assert [row.split(" | ")[0] for row in table[2:]] == ["| ctc", "| dat", "| ctc_glat"]
    share = f"{ctc['train']:,} of {ctc['train_pairs']:,} ({100 * ctc['train'] / ctc['train_pairs']:.1f}%)"
    assert table[2] == f"| ctc | {share} |"
    glance = json.loads((tmp_path / "results/toy_students/students/ctc_glat/raw/scores.json").read_text())
    assert glance["wrapper"]["glance"]["p_start"] == 0.5 and "probability" in glance["wrapper"]["glance"]["sampling"]
    dat = json.loads((tmp_path / "results/toy_students/students/dat/raw/scores.json").read_text())
    assert "bos and eos" in dat["infeasible_pairs"]["rule"] and dat["wrapper"]["glance"]["p_end"] == 0.1
    assert "best path" in dat["wrapper"]["glance"]["sampling"] and dat["decode_options"]["method"] == "lookahead"
    assert "the reference's" in dat["choices"]["loss_norm"] and "off" in dat["choices"]["force_emit"]
    flowseq = json.loads((tmp_path / "results/toy_students/students/flowseq/raw/scores.json").read_text())
    assert flowseq["decode_options"]["rescorer"] == "results/toy_students/teachers/toy/model.pt"
    assert flowseq["decode_options"]["samples"] == 3
