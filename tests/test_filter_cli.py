"""The filter's verbs and table on their own: noise injection for prepare, the mean ± std table,
labelled sets, and errors that name the flag or file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kdgrid.corpus import read_lines, write_lines
from kdgrid.errors import KdgridError
from kdgrid.filter.noise import inject_noise
from kdgrid.filter.table import applied_markdown, markdown, rows


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


P_CLEAN = {"clean": [0.9, 0.8], "copy": [0.1, 0.2]}  # valid P(clean) by kind: every pair right


def score(labels, method, seed, acc, f1):
    return {"labels": labels, "method": method, "seed": seed, "accuracy": acc, "macro_f1": f1,
            "classes": ["clean", "noisy"], "train_prior": {"clean": 0.5, "noisy": 0.5}, "valid_p_clean": P_CLEAN}


def test_the_table_gives_mean_and_std_over_seeds_with_the_teacher_first():
    teacher = {"binary": {"classes": ["clean", "noisy"], "accuracy": 0.9, "macro_f1": 0.8,
                          "train_prior": {"clean": 0.5, "noisy": 0.5}, "valid_p_clean": P_CLEAN}}
    table = rows([teacher], [score("binary", "lelp", 2, 0.7, 0.6), score("binary", "labels", 1, 0.5, 0.4),
                             score("binary", "lelp", 1, 0.5, 0.4)])
    assert [r["classifier"] for r in table] == ["teacher head", "student labels", "student lelp"]
    lelp = table[2]
    assert lelp["n"] == 2 and lelp["accuracy_mean"] == pytest.approx(0.6)
    assert lelp["accuracy_std"] == pytest.approx(0.1414, abs=1e-4)  # sample std
    assert "| binary | student lelp | 2 | 2 | 60.0 ± 14.1 | 50.0 ± 14.1 |" in markdown(table, "t")
    with pytest.raises(KdgridError, match="seed"):
        rows([teacher], [score("binary", "kd", 1, 0.5, 0.5), score("binary", "kd", 1, 0.6, 0.5)])
    from kdgrid import cli_filter
    from kdgrid.filter import evaluate

    assert cli_filter.LABEL_SETS == evaluate.LABEL_SETS  # the CLI's copy, kept without importing numpy


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


def test_filter_labels_holds_a_kind_out_of_training_only(tmp_path):
    """filter.holdout_kind: the training labels have no pair (and the few-class set no class) of
    the held-out kind; valid keeps it, at its configured share."""
    for name, lines in (("tr.s", sentences(80)), ("tr.t", sentences(80, 500)), ("va.s", sentences(40)),
                        ("va.t", sentences(40, 900))):
        write_lines(tmp_path / name, lines)
    out = [tmp_path / f"out.{x}" for x in ("ts", "tt", "tl", "vs", "vt", "vl")]
    params = {"kinds": {"clean": 0.5, "copy": 0.25, "shuffled": 0.25}, "train_pairs": 0, "valid_pairs": 0,
              "seed": 3, "holdout": ["shuffled"]}

    def labels(params, info):
        return kdgrid("filter_labels", "--train", tmp_path / "tr.s", tmp_path / "tr.t", "--valid", tmp_path / "va.s",
                      tmp_path / "va.t", "--params", json.dumps(params), "--train-out", *out[:3],
                      "--valid-out", *out[3:], "--info", tmp_path / info)

    proc = labels(params, "info.json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["holdout"] == ["shuffled"] and info["classes"] == ["clean", "copy"]
    assert info["train"]["per_class"] == {"clean": 40, "copy": 40}  # copy takes the held-out share
    assert info["valid"]["per_class"] == {"clean": 20, "copy": 10, "shuffled": 10}
    train_labels, train_tgt = read_lines(out[2]), read_lines(out[1])
    assert "shuffled" not in train_labels and set(train_labels) == {"clean", "copy"}
    original = sentences(80, 500)
    assert not any(sorted(t.split()) == sorted(o.split()) and t != o for t, o in zip(train_tgt, original))
    assert read_lines(out[5]).count("shuffled") == 10
    proc = labels({**params, "holdout": ["misaligned"]}, "info2.json")
    assert proc.returncode == 2 and "filter.holdout_kind: held-out kind(s) ['misaligned']" in proc.stderr
    proc = labels({**params, "holdout": ["copy", "shuffled"]}, "info3.json")
    assert proc.returncode == 2 and "leaves no noise kind to learn from" in proc.stderr


def test_filter_apply_writes_exactly_the_rows_the_filter_keeps(tmp_path, monkeypatch):
    """filter_apply's text and id files hold exactly the kept rows, in order, pairs aligned, for a
    student whose P(clean) per row is known (the student is replaced, the rest runs as it is)."""
    from types import SimpleNamespace

    import numpy as np
    from conftest import encoded_toy_corpus

    import kdgrid.filter.apply as apply
    from kdgrid import cli
    from kdgrid.batching import load_ids

    d = encoded_toy_corpus(tmp_path, kdgrid, pairs=16, vocab_size=40, pieces=60)
    src, tgt, ids = read_lines(d / "train.src"), read_lines(d / "train.tgt"), load_ids(d / "src.npz")
    p_clean = np.array([0.9, 0.2, 0.6, 0.45, 0.1, 0.8, 0.5, 0.3, 0.42, 0.7, 0.05, 0.95, 0.97, 0.99, 0.96, 0.98])
    noise = ["clean", "copy", "clean", "shuffled", "copy", "clean", "shuffled", "copy", "clean", "clean",
             "shuffled", "clean", "clean", "clean", "clean", "clean"]
    write_lines(d / "train.noise", noise)
    student = SimpleNamespace(cfg=SimpleNamespace(classes=["clean", "noisy"]))
    meta = {"method": "lelp", "labels": "binary", "train_prior": {"clean": 0.5, "noisy": 0.5}, "holdout": ["shuffled"]}
    monkeypatch.setattr(apply, "load_student", lambda path, sha=None: (student, meta))
    probs = np.stack([p_clean, 1 - p_clean], 1)
    monkeypatch.setattr(apply, "predict_probs", lambda model, s, t, max_tokens=4096: probs)
    raw_rows = [0, 2, 5, 6, 9, 11, 12, 13, 14, 15]  # P(clean) >= 0.5
    # EM estimates a clean share of 0.758 (> the training 0.5): rows 3, 7 and 8 (0.45, 0.3, 0.42)
    # are corrected to 0.72, 0.57 and 0.69, clearly above 0.5; row 1 (0.2 -> 0.44) stays below
    for prior, rows_kept in (("none", raw_rows), ("em", [0, 2, 3, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15])):
        out = tmp_path / prior
        out.mkdir()
        code = cli.main(["filter_apply", "--model", str(d / "model.pt"), "--vocab", str(d / "spm.model"),
                         "--train-src", str(d / "train.src"), "--train-tgt", str(d / "train.tgt"),
                         "--train-src-ids", str(d / "src.npz"), "--train-tgt-ids", str(d / "tgt.npz"),
                         "--out-src", str(out / "s"), "--out-tgt", str(out / "t"), "--out-src-ids", str(out / "s.npz"),
                         "--out-tgt-ids", str(out / "t.npz"), "--report", str(out / "r.json"), "--threshold", "0.5",
                         "--prior", prior, "--train-noise", str(d / "train.noise")])
        assert code == 0
        assert read_lines(out / "s") == [src[i] for i in rows_kept]
        assert read_lines(out / "t") == [tgt[i] for i in rows_kept]
        for name, full in (("s.npz", ids), ("t.npz", load_ids(d / "tgt.npz"))):
            kept = load_ids(out / name)
            assert len(kept) == len(rows_kept)
            for j, i in enumerate(rows_kept):
                np.testing.assert_array_equal(kept[j], full[i])
        report = json.loads((out / "r.json").read_text())
        assert report["kept"] == len(rows_kept) and report["kept_uncorrected"] == len(raw_rows) == 10
        assert report["kept_share_uncorrected"] == pytest.approx(10 / 16) and report["prior"]["mode"] == prior
        assert report["kept_by_kind"] == {k: n for k in ("clean", "copy", "shuffled")
                                          if (n := sum(noise[i] == k for i in rows_kept))}
        assert report["kept_by_kind_uncorrected"] == {"clean": 9, "shuffled": 1} and report["holdout"] == ["shuffled"]
    text = applied_markdown(json.loads((tmp_path / "em" / "r.json").read_text()))
    assert "| shuffled (held out of training) |" in text and "without the correction kept 10 (62.5%)" in text
    assert "Kept 13 of 16 pairs (81.2%)" in text and "(clean 0.758, estimated by EM" in text
