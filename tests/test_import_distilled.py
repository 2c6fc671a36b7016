"""Distilled sets from elsewhere (methods.<name>.kind: file): `kdgrid import_distilled` checks a
released set against the grid's training sources (by its own sources, line by line, or by the
sha256 of the sources it was made from); the grid run that trains on one is in test_teachers_workflow.py."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys

import pytest
from conftest import ROOT, TOY, job_counts, snakemake, write_config

from kdgrid import cli

sys.path.insert(0, str(ROOT / "workflow"))
from config_check import ConfigError, check  # noqa: E402

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def run_import(tmp_path, params: dict, grid_src=("a b", "c d", "e f")):
    src = write(tmp_path / "train.src", grid_src)
    out, record = tmp_path / "out" / "train.tgt", tmp_path / "out" / "import.json"
    out.parent.mkdir(exist_ok=True)
    code = cli.main(["import_distilled", "--src", str(src), "--params", json.dumps({"method": "rel", **params}),
                     "--download-dir", str(tmp_path / "dl"), "--out", str(out), "--record", str(record)])
    return code, out, record


def test_the_released_sources_align_the_set_line_by_line(tmp_path):
    """Reordered, with a line the grid's cleaning dropped and other whitespace: matched by source."""
    tgt = write(tmp_path / "rel.tgt", ["E F", "X", "A  B", "C D"])
    src = write(tmp_path / "rel.src", ["e   f", "x", "a b", "c d"])
    code, out, record = run_import(tmp_path, {"tgt": str(tgt), "sha256": sha(tgt), "src": str(src)})
    assert code == 0
    assert out.read_text().splitlines() == ["A B", "C D", "E F"]  # normalized as the grid's own lines
    r = json.loads(record.read_text())
    assert r["alignment_check"] == {"kind": "source_echo", "released_pairs": 4, "released_sources_unused": 1,
                                    "conflicting_duplicates": 0, "matched": "by source"}
    assert r["tgt_sha256"] == sha(tgt) and r["sentences"] == 3 and r["empty_targets"] == 0


def test_a_source_released_twice_takes_its_first_target_and_is_counted(tmp_path):
    tgt = write(tmp_path / "rel.tgt", ["A1", "A2", "C", "E", "A1"])
    src = write(tmp_path / "rel.src", ["a b", "a b", "c d", "e f", "a b"])
    code, out, record = run_import(tmp_path, {"tgt": str(tgt), "sha256": sha(tgt), "src": str(src)})
    assert code == 0 and out.read_text().splitlines() == ["A1", "C", "E"]
    assert json.loads(record.read_text())["alignment_check"]["conflicting_duplicates"] == 1


def test_the_same_sources_in_the_same_order_keep_each_lines_own_target(tmp_path):
    """Another grid's sampled set: a source twice with two targets keeps both (matched by line)."""
    tgt = write(tmp_path / "rel.tgt", ["A1", "C", "A2"])
    src = write(tmp_path / "rel.src", ["a b", "c d", "a b"])
    code, out, record = run_import(tmp_path, {"tgt": str(tgt), "sha256": sha(tgt), "src": str(src)},
                                   grid_src=("a b", "c d", "a b"))
    assert code == 0 and out.read_text().splitlines() == ["A1", "C", "A2"]
    assert json.loads(record.read_text())["alignment_check"]["matched"] == "by line"


def test_a_set_made_from_other_sources_is_refused_and_writes_nothing(tmp_path, capsys):
    tgt = write(tmp_path / "rel.tgt", ["A", "C"])
    src = write(tmp_path / "rel.src", ["a b", "c d"])
    code, out, record = run_import(tmp_path, {"tgt": str(tgt), "sha256": sha(tgt), "src": str(src)})
    assert code == 2 and not out.exists() and not record.exists()
    err = capsys.readouterr().err
    assert "1 of 3 training sources have no line in the released sources (first: line 3, 'e f')" in err


def test_the_sources_hash_check(tmp_path, capsys):
    tgt = tmp_path / "rel.tgt.gz"
    with gzip.open(tgt, "wt") as f:
        f.write("A\nC\nE\n")
    grid_src = write(tmp_path / "probe.src", ["a b", "c d", "e f"])
    code, out, record = run_import(tmp_path, {"tgt": str(tgt), "sha256": sha(tgt), "src_sha256": sha(grid_src)})
    assert code == 0 and out.read_text().splitlines() == ["A", "C", "E"]
    assert json.loads(record.read_text())["alignment_check"] == {"kind": "source_sha256", "src_sha256": sha(grid_src)}
    code, *_ = run_import(tmp_path, {"tgt": str(tgt), "sha256": sha(tgt), "src_sha256": "0" * 64})
    assert code == 2 and "methods.rel.src_sha256 says the set was made from 000" in capsys.readouterr().err
    short = write(tmp_path / "short.tgt", ["A", "C"])
    code, *_ = run_import(tmp_path, {"tgt": str(short), "sha256": sha(short), "src_sha256": sha(grid_src)})
    assert code == 2 and "short.tgt has 2 lines but" in capsys.readouterr().err


def test_a_changed_file_and_a_missing_check_are_errors(tmp_path, capsys):
    tgt = write(tmp_path / "rel.tgt", ["A", "C", "E"])
    code, *_ = run_import(tmp_path, {"tgt": str(tgt), "sha256": "f" * 64, "src_sha256": "0" * 64})
    assert code == 2 and f"but methods.rel.sha256 is {'f' * 64}" in capsys.readouterr().err
    code, *_ = run_import(tmp_path, {"tgt": str(tgt), "sha256": sha(tgt)})
    assert code == 2 and "give tgt and one alignment check" in capsys.readouterr().err
    src = write(tmp_path / "rel.src", ["a b", "c d"])
    code, *_ = run_import(tmp_path, {"tgt": str(tgt), "sha256": sha(tgt), "src": str(src)})
    assert code == 2 and "rel.src has 2 lines but" in capsys.readouterr().err


def merged(override: dict) -> dict:
    from test_config import TOY_CFG
    from test_config import merged as merge

    return merge(TOY_CFG, override)


FILE = {"kind": "file", "tgt": "rel.tgt", "sha256": "a" * 64, "src": "rel.src"}
BAD = [
    ({"kind": "file", "src": "rel.src"}, r"methods.rel: kind 'file' needs tgt"),
    ({"kind": "file", "tgt": "rel.tgt", "src": "rel.src"}, r"methods.rel.sha256: tgt is a local path; pin it"),
    ({**FILE, "src_sha256": "b" * 64}, r"methods.rel: give one alignment check"),
    ({k: v for k, v in FILE.items() if k != "src"}, r"methods.rel: give one alignment check"),
    ({**FILE, "teachers": ["toy"]}, r"methods.rel.teachers: a file method makes one column \(imported.rel\)"),
    ({**FILE, "tgt": {"url": "https://x.org/rel.tgt", "sha256": "c" * 64}},
     r"methods.rel.sha256: tgt is \{url, sha256\}, which carries its own checksum"),
    ({"kind": "beam", "src_sha256": "b" * 64}, r"methods.rel.src_sha256: only kind 'file' takes src_sha256"),
]


@pytest.mark.parametrize("spec,message", BAD)
def test_bad_file_methods_name_the_key(spec, message):
    with pytest.raises(ConfigError, match=message):
        check(merged({"methods": {"rel": spec}, "grid": {"methods": ["beam", "rel"]}}), SCHEMA, ["toy.yaml"])


def test_a_grid_of_imported_sets_needs_no_teacher_and_its_name_is_reserved():
    check(merged({"methods": {"rel": FILE}, "grid": {"teachers": [], "methods": ["rel"]}}), SCHEMA, ["toy.yaml"])
    with pytest.raises(ConfigError, match=r"teacher_sizes: 'imported' names the file methods' columns"):
        check(merged({"methods": {"rel": FILE}, "grid": {"methods": ["rel"]},
                      "teacher_sizes": {"imported": {"d_model": 32, "ffn": 64, "layers": 1, "heads": 2}}}),
              SCHEMA, ["toy.yaml"])
    with pytest.raises(ConfigError, match=r"grid.methods: beam decode with a teacher, but grid.teachers is empty"):
        check(merged({"methods": {"rel": FILE}, "grid": {"teachers": [], "methods": ["beam", "rel"]}}),
              SCHEMA, ["toy.yaml"])


def released_config(tmp_path, tgt, src, teachers=()):
    spec = {"kind": "file", "tgt": str(tgt), "sha256": sha(tgt), "src": str(src)}
    return write_config(tmp_path / "rel.yaml", TOY, methods={"released": spec},
                        grid={"teachers": list(teachers), "methods": ["released"], "students": ["nat"]})


def test_an_imported_set_plans_as_a_column_of_no_teacher(tmp_path):
    tgt, src = write(tmp_path / "rel.tgt", ["A"]), write(tmp_path / "rel.src", ["a"])
    proc = snakemake(tmp_path, "-n", "-p", configfile=released_config(tmp_path, tgt, src))
    counts = job_counts(proc.stdout)
    assert counts["import_distilled"] == 1 and "distill" not in counts and "train_teacher" not in counts
    assert counts["train_student"] == 2 and counts["align_distilled"] == 1 and counts["data_metrics_distilled"] == 1
    assert "--out results/toy/distill/imported.released/train.tgt" in proc.stdout
