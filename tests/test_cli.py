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


def test_one_evaluate_job_scores_each_split_as_a_job_of_its_own_would(tmp_path, one_torch_thread):
    """`evaluate` with two splits (a cell's test and valid, one job in the workflow) writes for each
    the hypotheses and scores that a call with that split alone writes, its own labels included."""
    import torch

    from kdgrid import cli, vocab
    from kdgrid.checkpoint import save_model
    from kdgrid.models import build

    lines = [f"w{i} w{i + 1} w{(3 * i) % 7}" for i in range(12)]
    write_lines(tmp_path / "a.src", lines[:7])
    write_lines(tmp_path / "a.tgt", lines[1:8])
    write_lines(tmp_path / "b.src", lines[5:])
    write_lines(tmp_path / "b.tgt", lines[4:11])
    v = vocab.train([tmp_path / "a.src", tmp_path / "b.tgt"], tmp_path / "spm.model", 40)
    cfg = {"d_model": 16, "ffn": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, **v.model_ids()}
    torch.manual_seed(0)
    save_model(tmp_path / "m.pt", build("transformer", cfg), {"vocab_sha256": v.sha256, "model_config": cfg})
    common = ["evaluate", "--model", str(tmp_path / "m.pt"), "--vocab", str(tmp_path / "spm.model"),
              "--params", json.dumps({"method": "greedy", "max_tokens": 64, "max_len_b": 4})]

    def files(split, out):
        return {"src": tmp_path / f"{split}.src", "ref": tmp_path / f"{split}.tgt",
                "hyp": tmp_path / out / f"{split}.hyp", "scores": tmp_path / out / f"{split}.json",
                "labels": json.dumps({"split": split})}

    def run(out, *splits):
        args = list(common)
        for key in ("src", "ref", "hyp", "scores", "labels"):
            args += [f"--{key}", *[str(files(s, out)[key]) for s in splits]]
        assert cli.main(args) == 0

    run("one", "a")
    run("one", "b")
    run("both", "a", "b")
    for split in ("a", "b"):
        alone, together = (json.loads((tmp_path / o / f"{split}.json").read_text()) for o in ("one", "both"))
        for record in (alone, together):  # timings differ from run to run
            record["decode"] = {k: v for k, v in record["decode"].items() if "second" not in k}
        assert together == alone and together["split"] == split
        assert (tmp_path / "both" / f"{split}.hyp").read_text() == (tmp_path / "one" / f"{split}.hyp").read_text()
    bad = cli.main([*common, "--src", str(tmp_path / "a.src"), str(tmp_path / "b.src"), "--ref",
                    str(tmp_path / "a.tgt"), "--hyp", str(tmp_path / "h"), "--scores", str(tmp_path / "s1"),
                    str(tmp_path / "s2"), "--labels", "{}", "{}"])
    assert bad == 2 and not (tmp_path / "s1").exists()
