"""Corpus import: where each split comes from, cleaning, and the multi-way layout.

A side of a split is a local path (plain or .gz) or {url, sha256} (downloaded once into a cache
directory and checked every time); a whole split can also be a sacrebleu test set
{sacrebleu: NAME, langpair: xx-yy}. A target given as a mapping language -> side makes the corpus
multi-way: every source sentence appears once per language in train, with no signal which
language to produce; valid/test keep one row per source and one reference file per language.
Cleaning (train only; valid/test are never filtered) reports what each step removed.
"""

from __future__ import annotations

import hashlib
import unicodedata
import urllib.error
import urllib.request
from pathlib import Path

from kdgrid import corpus, synthetic
from kdgrid.errors import KdgridError, atomic_output
from kdgrid.progress import log


# -- sides -----------------------------------------------------------------------------------
def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, sha256: str, cache_dir) -> Path:
    """Download `url` into cache_dir (once), verify its sha256, return the local path."""
    name = hashlib.sha256(url.encode()).hexdigest()[:12] + "-" + Path(url.split("?")[0]).name
    path = Path(cache_dir) / name
    if path.exists() and sha256_of(path) == sha256:
        return path
    log(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, atomic_output(path, "wb") as out:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise KdgridError(f"{url}: download failed ({e}); check the URL or your connection, "
                          "or point the config at a local copy") from None
    got = sha256_of(path)
    if got != sha256:
        path.unlink()
        raise KdgridError(f"{url}: sha256 mismatch (expected {sha256}, got {got}); the file changed "
                          "upstream or the config's checksum is wrong")
    return path


def side_path(side, cache_dir) -> Path:
    if isinstance(side, str):
        return Path(side)
    return fetch(side["url"], side["sha256"], cache_dir)


def sacrebleu_split(spec: dict) -> tuple[Path, Path]:
    from sacrebleu import utils

    name, langpair = spec["sacrebleu"], spec["langpair"]
    try:
        return Path(utils.get_source_file(name, langpair)), Path(utils.get_reference_files(name, langpair)[0])
    except Exception as e:  # noqa: BLE001 - sacrebleu raises bare Exceptions and download errors
        raise KdgridError(f"sacrebleu test set {name} ({langpair}) is not available: {e}") from None


# -- cleaning --------------------------------------------------------------------------------
def normalize(text: str, form: str) -> str:
    text = unicodedata.normalize(form, text) if form != "none" else text
    return " ".join(text.split())


def clean_train(pairs, clean: dict, where: str):
    """Apply the enabled cleaning steps in order; return kept pairs and per-step counts.
    `pairs` items are (src, tgt, lang) with lang None unless multi-way."""
    counts = {"read": len(pairs)}
    steps = [
        ("empty", clean["drop_empty"], lambda s, t: bool(s) and bool(t)),
        ("too_long", clean["max_words"] > 0,
         lambda s, t: len(s.split()) <= clean["max_words"] and len(t.split()) <= clean["max_words"]),
        ("length_ratio", clean["max_ratio"] > 0,
         lambda s, t: max(len(s.split()), 1) / max(len(t.split()), 1) <= clean["max_ratio"]
         and max(len(t.split()), 1) / max(len(s.split()), 1) <= clean["max_ratio"]),
    ]
    for name, on, keep in steps:
        if on:
            before = len(pairs)
            pairs = [p for p in pairs if keep(p[0], p[1])]
            counts[name] = before - len(pairs)
    if clean["dedup"]:
        seen, kept = set(), []
        for p in pairs:
            if p not in seen:
                seen.add(p)
                kept.append(p)
        counts["duplicates"] = len(pairs) - len(kept)
        pairs = kept
    counts["kept"] = len(pairs)
    if not pairs:
        raise KdgridError(f"{where}: empty corpus after cleaning ({counts})")
    log(f"cleaning {where}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return pairs, counts


# -- splits ----------------------------------------------------------------------------------
def read_split(spec: dict, cache_dir, form: str):
    """(src lines, {lang: tgt lines}); lang is None for an ordinary corpus."""
    if "sacrebleu" in spec:
        src_path, tgt_path = sacrebleu_split(spec)
        tgts = {None: tgt_path}
    else:
        src_path = side_path(spec["src"], cache_dir)
        if isinstance(spec["tgt"], dict) and "url" not in spec["tgt"]:
            tgts = {lang: side_path(side, cache_dir) for lang, side in spec["tgt"].items()}
        else:
            tgts = {None: side_path(spec["tgt"], cache_dir)}
    src = None
    out = {}
    for lang, tgt_path in tgts.items():
        pairs = corpus.read_parallel(src_path, tgt_path)
        if src is None:
            src = [normalize(s, form) for s, _ in pairs]
        out[lang] = [normalize(t, form) for _, t in pairs]
    return src, out


def load(params: dict, cache_dir) -> dict:
    """{'train'|'valid'|'test': {'src': [...], 'tgt': [...], 'lang': [...] | None,
    'refs': {lang: [...]}}, 'stats': {...}} from the `corpus` config block."""
    if params["source"] == "synthetic":
        try:
            spec = synthetic.SyntheticSpec(**params["synthetic"])
        except (TypeError, ValueError) as e:
            raise KdgridError(f"corpus.synthetic: {e}") from None
        raw = synthetic.generate_multiway(spec) if params.get("multiway") else {
            split: (
                [s for s, _ in pairs], {None: [t for _, t in pairs]}
            ) for split, pairs in synthetic.generate(spec).items()}
    elif params["source"] == "files":
        form = params["clean"]["normalize"]
        raw = {split: read_split(params["files"][split], cache_dir, form) for split in corpus.SPLITS}
    else:
        raise KdgridError(f"corpus.source: unknown source {params['source']!r}; use synthetic or files")
    out, stats = {}, {}
    for split in corpus.SPLITS:
        src, tgts = raw[split]
        langs = [lang for lang in tgts]
        if split == "train":
            rows = [(s, t, lang) for lang in langs for s, t in zip(src, tgts[lang])]
            if params["source"] == "files":
                rows, stats[split] = clean_train(rows, params["clean"], "train")
            else:
                stats[split] = {"kept": len(rows)}
            out[split] = {"src": [r[0] for r in rows], "tgt": [r[1] for r in rows],
                          "lang": [r[2] for r in rows] if langs != [None] else None, "refs": {}}
        else:  # one row per source; in multi-way, each row's target cycles through the languages
            tgt = [tgts[langs[i % len(langs)]][i] for i in range(len(src))]
            out[split] = {"src": src, "tgt": tgt, "lang": None,
                          "refs": {lang: tgts[lang] for lang in langs} if langs != [None] else {}}
            stats[split] = {"kept": len(src)}
    out["stats"] = stats
    return out
