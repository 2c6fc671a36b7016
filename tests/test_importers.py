"""Corpus import: URLs with checksums (a real local HTTP server), sacrebleu sets (an offline cache),
cleaning counts, the multi-way layout, and the real Multi30k files when the project has them."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading

import pytest
import yaml
from conftest import ROOT, SHARED_DATA

from kdgrid import importers
from kdgrid.corpus import read_lines, write_lines
from kdgrid.errors import KdgridError

CLEAN = {"normalize": "NFC", "drop_empty": True, "max_words": 250, "max_ratio": 3.0, "dedup": False}


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_url_with_checksum_is_downloaded_once_and_verified(tmp_path, http_server):
    root, base = http_server
    with gzip.open(root / "train.de.gz", "wt", encoding="utf-8") as f:
        f.write("ein Haus\nzwei Häuser\n")
    cache = tmp_path / "cache"
    path = importers.fetch(f"{base}/train.de.gz", sha(root / "train.de.gz"), cache)
    assert read_lines(path) == ["ein Haus", "zwei Häuser"]
    (root / "train.de.gz").unlink()  # cached: no second download needed
    assert importers.fetch(f"{base}/train.de.gz", sha(path), cache) == path


def test_checksum_mismatch_and_failed_download_are_clear(tmp_path, http_server):
    root, base = http_server
    (root / "a.txt").write_text("x\n")
    with pytest.raises(KdgridError, match=r"a.txt: sha256 mismatch \(expected 0000"):
        importers.fetch(f"{base}/a.txt", "0" * 64, tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())  # nothing half-trusted left behind
    with pytest.raises(KdgridError, match=r"missing.txt: download failed"):
        importers.fetch(f"{base}/missing.txt", "0" * 64, tmp_path / "cache")


def test_sacrebleu_test_set_from_an_offline_cache(tmp_path):
    cache = tmp_path / "sacrebleu"
    folder = cache / "wmt14" / "full"
    folder.mkdir(parents=True)
    for field, lines in {"src": ["a house .", "two houses ."], "ref": ["ein Haus .", "zwei Häuser ."],
                         "docid": ["d1", "d1"], "genre": ["news", "news"], "origlang": ["en", "en"]}.items():
        write_lines(folder / f"wmt14_full.en-de.{field}", lines)
    write_lines(tmp_path / "tr.en", ["a"])
    write_lines(tmp_path / "tr.de", ["b"])
    split = {"sacrebleu": "wmt14/full", "langpair": "en-de"}
    params = {"source": "files", "clean": CLEAN,
              "files": {"train": {"src": str(tmp_path / "tr.en"), "tgt": str(tmp_path / "tr.de")},
                        "valid": split, "test": split}}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "kdgrid", "prepare", "--params", json.dumps(params),
         "--train", out / "tr.s", out / "tr.t", "--valid", out / "va.s", out / "va.t",
         "--test", out / "te.s", out / "te.t", "--stats", out / "stats.json"],
        capture_output=True, text=True, env={**os.environ, "SACREBLEU": str(cache)})
    assert proc.returncode == 0, proc.stderr
    assert read_lines(out / "te.t") == ["ein Haus .", "zwei Häuser ."]


def test_cleaning_steps_are_switches_with_counts():
    rows = [("ﬁne", "gut", None), ("", "leer", None), ("a " * 300, "lang", None),
            ("one two three four", "x", None), ("ok .", "gut .", None), ("ok .", "gut .", None)]
    rows = [(importers.normalize(s, "NFKC"), importers.normalize(t, "NFKC"), lang) for s, t, lang in rows]
    assert rows[0][0] == "fine"  # NFKC unfolds the ligature
    kept, counts = importers.clean_train(rows, {**CLEAN, "dedup": True}, "here")
    assert counts == {"read": 6, "empty": 1, "too_long": 1, "length_ratio": 1, "duplicates": 1, "kept": 2}
    kept, counts = importers.clean_train(rows, {**CLEAN, "max_words": 0, "max_ratio": 0}, "here")
    assert counts == {"read": 6, "empty": 1, "kept": 5}
    with pytest.raises(KdgridError, match="empty corpus after cleaning"):
        importers.clean_train([("", "x", None)], CLEAN, "here")


def test_valid_and_test_are_never_filtered(tmp_path):
    for name, lines in {"s": ["a", "", "b c"], "t": ["x", "y", ""]}.items():
        write_lines(tmp_path / name, lines)
    pair = {"src": str(tmp_path / "s"), "tgt": str(tmp_path / "t")}
    data = importers.load({"source": "files", "clean": CLEAN,
                           "files": {"train": pair, "valid": pair, "test": pair}}, tmp_path)
    assert len(data["train"]["src"]) == 1 and len(data["test"]["src"]) == 3


def test_synthetic_multiway_layout():
    params = {"source": "synthetic", "multiway": True,
              "synthetic": {"seed": 2, "train": 50, "valid": 7, "test": 9, "vocab_size": 30, "modes": 3}}
    data = importers.load(params, None)
    train, test = data["train"], data["test"]
    assert len(train["src"]) == 150 and sorted(set(train["lang"])) == ["m0", "m1", "m2"]
    assert train["src"][:50] == train["src"][50:100]  # each source once per language, no signal
    assert sorted(test["refs"]) == ["m0", "m1", "m2"] and all(len(r) == 9 for r in test["refs"].values())
    assert test["tgt"][1] == test["refs"]["m1"][1]  # valid/test targets cycle through the languages


# -- the real Multi30k files -----------------------------------------------------------------
MULTI30K = SHARED_DATA / "multi30k"
needs_multi30k = pytest.mark.skipif(not (MULTI30K / "train.en.gz").exists(),
                                    reason=f"Multi30k not found at {MULTI30K} (the project's shared data)")


def test_multi30k_config_checksums_match_the_files_it_names():
    """The URLs' sha256 in configs/ are the checksums of the shared copies (same git blobs)."""
    if not (MULTI30K / "train.en.gz").exists():
        pytest.skip(f"Multi30k not found at {MULTI30K}")
    cfg = yaml.safe_load((ROOT / "configs" / "multi30k_multiway.yaml").read_text())
    local = {"train": "train", "valid": "val", "test": "test2016"}
    for split, spec in cfg["corpus"]["files"].items():
        sides = {"en": spec["src"], **spec["tgt"]}
        for lang, side in sides.items():
            assert side["sha256"] == sha(MULTI30K / f"{local[split]}.{lang}.gz"), (split, lang)


@needs_multi30k
def test_multi30k_multiway_import(tmp_path):
    cfg = yaml.safe_load((ROOT / "configs" / "multi30k_multiway.yaml").read_text())["corpus"]
    override = yaml.safe_load((ROOT / "configs" / "local" / "multi30k_multiway_shared.yaml").read_text())
    for split, spec in override["corpus"]["files"].items():  # paths there are relative to the repo root
        cfg["files"][split] = {"src": str(ROOT / spec["src"]),
                               "tgt": {lang: str(ROOT / p) for lang, p in spec["tgt"].items()}}
    data = importers.load({**cfg, "clean": CLEAN}, tmp_path)
    assert data["stats"]["train"]["read"] == 3 * 29000
    assert sorted(set(data["train"]["lang"])) == ["cs", "de", "fr"]
    assert [len(data[s]["src"]) for s in ("valid", "test")] == [1014, 1000]
    assert data["test"]["refs"]["de"][0].startswith("Ein Mann mit einem orangefarbenen Hut")
