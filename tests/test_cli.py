"""Bad input through the CLI: one clear line naming file/line, exit code 2, no output left behind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kdgrid.corpus import write_lines


def kdgrid(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kdgrid", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def prepare_files(tmp_path, src_lines, tgt_lines, raw_src: bytes | None = None):
    files = {}
    for split in ("train", "valid", "test"):
        s, t = tmp_path / f"{split}.s", tmp_path / f"{split}.t"
        write_lines(s, src_lines)
        write_lines(t, tgt_lines)
        files[split] = {"src": str(s), "tgt": str(t)}
    if raw_src is not None:
        (tmp_path / "train.s").write_bytes(raw_src)
    out = tmp_path / "out"
    clean = {"normalize": "NFC", "drop_empty": True, "max_words": 250, "max_ratio": 3.0, "dedup": False}
    params = json.dumps({"source": "files", "files": files, "clean": clean})
    proc = kdgrid("prepare", "--params", params, "--train", out / "tr.s", out / "tr.t",
                  "--valid", out / "va.s", out / "va.t", "--test", out / "te.s", out / "te.t",
                  "--stats", out / "stats.json")
    return proc, out


def assert_clean_failure(proc, *fragments, out=None):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for f in fragments:
        assert f in proc.stderr, proc.stderr
    if out is not None:
        assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_prepare_from_files(tmp_path):
    proc, out = prepare_files(tmp_path, ["a b", " c  d "], ["x", "y"])
    assert proc.returncode == 0, proc.stderr
    assert (out / "tr.s").read_text() == "a b\nc d\n"
    assert json.loads((out / "stats.json").read_text())["splits"]["train"]["kept"] == 2


@pytest.mark.parametrize("src,tgt,raw,fragments", [
    (["a", "b", "c"], ["x", "y"], None, ["train.s: has 3 lines but", "train.t has 2"]),
    ([], [], None, ["empty corpus"]),
    (["", " "], ["x", "y"], None, ["empty corpus after cleaning"]),
    (["a"], ["x"], b"ok\n\xc3\x28 bad\n", ["train.s: line 2: invalid UTF-8"]),
])
def test_prepare_rejects_bad_corpora(tmp_path, src, tgt, raw, fragments):
    proc, out = prepare_files(tmp_path, src, tgt, raw)
    assert_clean_failure(proc, *fragments, out=out)


def test_gather_rejects_missing_lines(tmp_path):
    write_lines(tmp_path / "src", ["a", "b", "c", "d"])
    write_lines(tmp_path / "0.tgt", ["w", "x"])
    write_lines(tmp_path / "1.tgt", ["y"])
    proc = kdgrid("gather", "--src", tmp_path / "src", "--shards", tmp_path / "0.tgt", tmp_path / "1.tgt",
                  "--out", tmp_path / "out.tgt")
    assert_clean_failure(proc, "shards hold 3 lines but", "has 4", "1.tgt: 1")
    assert not (tmp_path / "out.tgt").exists()
    write_lines(tmp_path / "1.tgt", ["y", "z"])
    proc = kdgrid("gather", "--src", tmp_path / "src", "--shards", tmp_path / "0.tgt", tmp_path / "1.tgt",
                  "--out", tmp_path / "out.tgt")
    assert proc.returncode == 0 and (tmp_path / "out.tgt").read_text() == "w\nx\ny\nz\n"


def test_bad_params_and_missing_model(tmp_path):
    proc = kdgrid("distill", "--model", tmp_path / "none.pt", "--vocab", tmp_path / "v", "--src",
                  tmp_path / "s", "--out", tmp_path / "o", "--params", "{not json")
    assert_clean_failure(proc, "--params: not valid JSON")
    proc = kdgrid("distill", "--model", tmp_path / "none.pt", "--vocab", tmp_path / "v", "--src",
                  tmp_path / "s", "--out", tmp_path / "o", "--params", '{"kind": "beam", "max_tokens": 10}')
    assert_clean_failure(proc, "none.pt: model file not found")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    proc = kdgrid("evaluate", "--model", tmp_path / "junk.pt", "--vocab", tmp_path / "v", "--src", "s",
                  "--ref", "r", "--hyp", tmp_path / "h", "--scores", tmp_path / "sc", "--params", '{"max_tokens": 10}')
    assert_clean_failure(proc, "junk.pt: not a readable model file")


@pytest.mark.parametrize(("params", "torch_threads"), [({"backend": "ctranslate2"}, 1), ({}, 3),
                                                         ({"backend": "torch"}, 3)])
def test_a_job_decoding_with_ctranslate2_gives_torch_one_thread(params, torch_threads):
    """torch's pool at more than one thread slowed CTranslate2's own threads ~6x at batch 1
    (cli._decoding_threads); a model that falls back to torch gets the job's threads back."""
    import torch

    from kdgrid import cli
    from kdgrid.ct2 import for_decoding

    before = torch.get_num_threads()
    try:
        cli._decoding_threads(params, 3)
        assert torch.get_num_threads() == torch_threads
        nat = type("NAT", (), {"kind": "nat"})()  # CTranslate2 takes plain Transformers only
        assert for_decoding(nat, None, "ctranslate2", "cpu", threads=3) is nat
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
