"""Distillation of the training sources by a teacher: one shard per job, resumable by chunks (the
gather that checks the shards before joining them is kdgrid.shards, which imports no torch)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from kdgrid import methods
from kdgrid.checkpoint import load_for_decoding
from kdgrid.corpus import iter_lines, read_lines, write_lines
from kdgrid.ct2 import for_decoding
from kdgrid.decoding_backend import split_options
from kdgrid.errors import KdgridError, read_json, write_json
from kdgrid.importers import sha256_of
from kdgrid.progress import Progress, log


def _sha256_lines(lines) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8") + b"\n")
    return h.hexdigest()


def chunk_seed(seed: int, shard: int, chunk: int) -> int:
    """Sampling seed of one chunk of one shard: the lines do not depend on which chunks a
    previous, interrupted run already finished."""
    return (int(seed) * 100_003 + shard) * 10_007 + chunk


def distill_shard(model_path, vocab_path, src, out, shard: int, shards: int, chunk: int,
                  params: dict, device, threads: int = 1, ref=None) -> None:
    """Translate shard `shard` of `shards` of `src` into `out`, chunk by chunk, with the method
    `params["kind"]` (kdgrid.methods); `ref` holds the real targets, for methods that read them.
    Finished chunks are kept beside the output (OUT.parts/), so a killed or preempted job
    resumes where it stopped and writes the very lines an uninterrupted run would."""
    if not 0 <= shard < shards:
        raise KdgridError(f"--shard {shard} is outside 0..{shards - 1}")
    if chunk <= 0:
        raise KdgridError(f"--chunk must be positive, got {chunk}")
    missing = [k for k in ("kind", "max_tokens") if k not in params]
    if missing:
        raise KdgridError(f"--params: missing key(s) {', '.join(missing)}")
    kind = params["kind"]
    backend, opts = split_options({k: v for k, v in params.items() if k not in ("kind", "max_tokens")})
    methods.check(kind, opts)
    if methods.needs_reference(kind) and ref is None:
        raise KdgridError(f"--ref: method kind {kind!r} compares its candidates with the real targets; "
                          "give the training targets (data/train.tgt) with --ref")
    if ref is not None and not methods.needs_reference(kind):
        raise KdgridError(f"--ref: method kind {kind!r} does not read the real targets; leave --ref out")
    model, _, vocab = load_for_decoding(model_path, vocab_path, device)
    model = for_decoding(model, vocab, backend["backend"], device, backend["compute_type"], threads,
                         backend["ct2_search"])
    lines = read_lines(src)
    refs = read_lines(ref) if ref is not None else None
    if refs is not None and len(refs) != len(lines):
        raise KdgridError(f"{ref} has {len(refs)} lines but {src} has {len(lines)}; --ref must be the "
                          "training targets of these sources")
    lo, hi = shard * len(lines) // shards, (shard + 1) * len(lines) // shards
    lines = lines[lo:hi]
    refs = refs[lo:hi] if refs is not None else None
    chunks = [(c, lines[c * chunk:(c + 1) * chunk]) for c in range(-(-len(lines) // chunk))]

    parts = Path(f"{out}.parts")
    key = {"model_sha256": sha256_of(model_path), "params": params, "shard": [shard, shards],
           "chunk": chunk, "lines": [lo, hi], "src_sha256": _sha256_lines(lines)}
    if refs is not None:
        key["ref_sha256"] = _sha256_lines(refs)
    if parts.exists():
        try:
            same = read_json(parts / "key.json") == key
        except KdgridError:
            same = False
        if not same:
            log(f"{parts}: left by a run with other inputs or settings; starting this shard over")
            shutil.rmtree(parts)
    if not parts.exists():
        parts.mkdir(parents=True)
        write_json(parts / "key.json", key)

    done = {c for c, _ in chunks if (parts / f"{c:06d}.txt").exists()}
    if done:
        log(f"resuming shard {shard}: {len(done)} of {len(chunks)} chunks already done in {parts}")
    progress = Progress(f"distill shard {shard + 1}/{shards}", len(lines), unit="sent",
                        done=sum(len(lines_) for c, lines_ in chunks if c in done))
    try:
        for c, lines_ in chunks:
            if c in done:
                continue
            chunk_opts = dict(opts)
            if "seed" in opts:
                chunk_opts["seed"] = chunk_seed(opts["seed"], shard, c)
            chunk_refs = refs[c * chunk:(c + 1) * chunk] if refs is not None else None
            texts = methods.distill(model, vocab, lines_, chunk_refs, kind, chunk_opts, params["max_tokens"],
                                    threads, what=f"distill shard {shard + 1}/{shards} chunk {c + 1}/{len(chunks)}")
            if len(texts) != len(lines_):
                raise KdgridError(f"shard {shard} chunk {c}: {len(texts)} translations for "
                                  f"{len(lines_)} sentences")
            write_lines(parts / f"{c:06d}.txt", texts)
            progress.step(len(lines_), tokens=len(lines_))
            progress.report(f"chunk {c + 1}/{len(chunks)}")
        write_lines(out, (line for c, _ in chunks for line in iter_lines(parts / f"{c:06d}.txt")))
    except KdgridError:
        # What "nothing left behind" means for OUT.parts/: the chunks are kept only when a rerun
        # can use them. A kill, a preemption, Ctrl-C or a crash (anything but a KdgridError) stops
        # a run that a rerun of the same inputs would finish, so the chunks stay for it to resume.
        # A KdgridError here is a bad input found while translating: decoding is a function of
        # what the key holds (model, options, sources, seeds), so a rerun with the same key fails
        # the same way, and the fix (other options, another model) changes the key, which would
        # discard these chunks anyway. So they go now, and a failed job leaves neither OUT nor
        # OUT.parts/. (A KdgridError before the key was checked, e.g. an unreadable model, leaves
        # the chunks of an earlier run alone: they may still fit once the input is fixed.)
        shutil.rmtree(parts, ignore_errors=True)
        raise
    shutil.rmtree(parts)
