"""The filter's verbs and table on their own: noise injection for prepare, the mean ± std table,
labelled sets, and errors that name the flag or file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kdgrid.cli_filter import inject_noise
from kdgrid.corpus import read_lines, write_lines
from kdgrid.errors import KdgridError
from kdgrid.filter_table import markdown, rows


def kdgrid(*args):
    return subprocess.run([sys.executable, "-m", "kdgrid", *map(str, args)], capture_output=True, text=True)


def sentences(n, offset=0):
    return [f"w{i + offset} a{i % 7} b{i % 5} c{i % 3}" for i in range(n)]


def test_inject_noise_turns_the_share_into_noise_and_counts_it():
    train = {"src": sentences(100), "tgt": sentences(100, 1000), "lang": None}
    before = list(zip(train["src"], train["tgt"]))
    kinds, stats = inject_noise(train, {"share": 0.2, "kinds": {"copy": 0.5, "shuffled": 0.5}, "seed": 1})
    assert stats["per_kind"] == {"clean": 80, "copy": 10, "shuffled": 10} and len(kinds) == 100
    for (s, t), kind, s2, t2 in zip(before, kinds, train["src"], train["tgt"]):
        assert s2 == s and (t2 == t) == (kind == "clean")
        if kind == "copy":
            assert t2 == s
    with pytest.raises(KdgridError, match="corpus.noise: .*shares must sum to 1"):
        inject_noise(train, {"share": 0.2, "kinds": {"copy": 0.5}, "seed": 1})


def score(labels, method, seed, acc, f1):
    return {"labels": labels, "method": method, "seed": seed, "accuracy": acc, "macro_f1": f1,
            "classes": ["clean", "noisy"]}


def test_the_table_gives_mean_and_std_over_seeds_with_the_teacher_first():
    teacher = {"binary": {"classes": ["clean", "noisy"], "accuracy": 0.9, "macro_f1": 0.8}}
    table = rows([teacher], [score("binary", "lelp", 2, 0.7, 0.6), score("binary", "labels", 1, 0.5, 0.4),
                             score("binary", "lelp", 1, 0.5, 0.4)])
    assert [r["classifier"] for r in table] == ["teacher head", "student labels", "student lelp"]
    lelp = table[2]
    assert lelp["n"] == 2 and lelp["accuracy_mean"] == pytest.approx(0.6)
    assert lelp["accuracy_std"] == pytest.approx(0.1414, abs=1e-4)  # sample std
    assert "| binary | student lelp | 2 | 2 | 60.0 ± 14.1 | 50.0 ± 14.1 |" in markdown(table, "t")
    with pytest.raises(KdgridError, match="seed"):
        rows([teacher], [score("binary", "kd", 1, 0.5, 0.5), score("binary", "kd", 1, 0.6, 0.5)])


def test_filter_labels_samples_and_labels_both_splits(tmp_path):
    for name, lines in (("tr.s", sentences(60)), ("tr.t", sentences(60, 500)), ("va.s", sentences(20)),
                        ("va.t", sentences(20, 900)), ("noise", ["clean"] * 50 + ["copy"] * 10)):
        write_lines(tmp_path / name, lines)
    out = [tmp_path / f"out.{x}" for x in ("ts", "tt", "tl", "vs", "vt", "vl")]
    params = {"kinds": {"clean": 0.5, "copy": 0.25, "truncated": 0.25}, "train_pairs": 40, "valid_pairs": 0, "seed": 3}
    proc = kdgrid("filter_labels", "--train", tmp_path / "tr.s", tmp_path / "tr.t", "--valid", tmp_path / "va.s",
                  tmp_path / "va.t", "--train-noise", tmp_path / "noise", "--params", json.dumps(params),
                  "--train-out", *out[:3], "--valid-out", *out[3:], "--info", tmp_path / "info.json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["classes"] == ["clean", "truncated", "copy"]
    assert info["train"]["pairs"] == 40 and info["train"]["usable"] == 50 and info["valid"]["pairs"] == 20
    assert info["train"]["per_class"] == {"clean": 20, "truncated": 10, "copy": 10}
    assert len(read_lines(out[2])) == 40 and set(read_lines(out[5])) == {"clean", "truncated", "copy"}
    # the noisy rows (50..59, all 'w5x' sources) are never sampled
    assert not any(s.startswith("w5") and len(s.split()[0]) == 3 for s in read_lines(out[0]))

    write_lines(tmp_path / "noise", ["clean"] * 3)
    proc = kdgrid("filter_labels", "--train", tmp_path / "tr.s", tmp_path / "tr.t", "--valid", tmp_path / "va.s",
                  tmp_path / "va.t", "--train-noise", tmp_path / "noise", "--params", json.dumps(params),
                  "--train-out", *out[:3], "--valid-out", *out[3:], "--info", tmp_path / "info2.json")
    assert proc.returncode == 2 and "--train-noise" in proc.stderr and "3 lines" in proc.stderr
    assert not (tmp_path / "info2.json").exists()


def test_filter_apply_names_a_missing_model(tmp_path):
    proc = kdgrid("filter_apply", "--model", tmp_path / "none.pt", "--vocab", tmp_path / "spm.model",
                  *[x for o in ("--train-src", "--train-tgt", "--train-src-ids", "--train-tgt-ids", "--out-src",
                                "--out-tgt", "--out-src-ids", "--out-tgt-ids", "--report")
                    for x in (o, tmp_path / o.strip("-"))], "--threshold", "0.5")
    assert proc.returncode == 2 and "spm.model" in proc.stderr and "Traceback" not in proc.stderr
