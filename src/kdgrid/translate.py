"""Translate sentences with any trained model, in length-sorted token-budget batches."""

from __future__ import annotations

import time

import torch

from kdgrid.batching import token_batches
from kdgrid.errors import KdgridError
from kdgrid.progress import Progress, log
from kdgrid.vocab import EOS, PAD, Vocab

# sentencepiece's batch calls start a thread pool per call, even for one line and one thread:
# ~0.1 ms idle and milliseconds on busy cores, more than a short sentence's own decoding at batch 1
# with CTranslate2. Up to this many lines they are encoded and decoded one call per line (the same
# ids and text: one processor, one line at a time).
FEW_LINES = 16


def _encode(vocab: Vocab, lines: list[str], threads: int) -> list[list[int]]:
    if len(lines) <= FEW_LINES:
        return [vocab.sp.encode(line, out_type=int) for line in lines]
    return vocab.encode(lines, threads=threads)


def _decode(vocab: Vocab, ids: list[list[int]]) -> list[str]:
    if len(ids) <= FEW_LINES:
        return [vocab.sp.decode(x) for x in ids]
    return vocab.decode(ids)


def _sources(rows: list[list[int]]) -> torch.Tensor:
    """batching.pad_stack(rows, PAD, suffix=EOS) in one tensor call, not one per row (~20 us a
    row there: a quarter of kdgrid's own time in a 64-sentence CTranslate2 batch)."""
    width = max(map(len, rows)) + 1
    return torch.tensor([row + [EOS] + [PAD] * (width - len(row) - 1) for row in rows], dtype=torch.long)


def _source_rows(rows: list[list[int]]) -> list[list[int]]:
    """The sources as a decoder that takes id lists wants them (kdgrid.ct2: `takes_rows`), eos
    ended, unpadded: no tensor built only to be read back (~0.1 ms a call, 2% of a batch-1 call)."""
    return [row + [EOS] for row in rows]


def translate(model, vocab: Vocab, lines: list[str], options: dict, max_tokens: int = 4096,
              threads: int = 1, what: str = "decode", report_every: float = 15.0):
    """Returns (translations, stats). `options` go to model.generate; a `seed` in them is
    offset per batch so sampling draws fresh random numbers for every batch."""
    out, stats = _generate(model, vocab, lines, options, max_tokens, threads, what, report_every)
    return _decode(vocab, out), stats


def translate_nbest(model, vocab: Vocab, lines: list[str], options: dict, max_tokens: int = 4096,
                    threads: int = 1, what: str = "decode", report_every: float = 15.0):
    """Returns (n-best lists, stats): per sentence [(model score, text), ...], best first, from
    one beam search with `options` holding `nbest` (see kdgrid.search.beam_search)."""
    if not options.get("nbest"):
        raise KdgridError("translate_nbest: the decoding options need nbest >= 1")
    out, stats = _generate(model, vocab, lines, options, max_tokens, threads, what, report_every)
    texts = iter(_decode(vocab, [ids for hyps in out for _, ids in hyps]))
    return [[(score, next(texts)) for score, _ in hyps] for hyps in out], stats


def _generate(model, vocab: Vocab, lines, options, max_tokens, threads, what, report_every):
    """What model.generate returns per sentence (in the order of `lines`), and the stats."""
    # a CTranslate2 decoder (kdgrid.ct2) names its input device; a torch model has its weights'
    device = getattr(model, "device", None) or next(model.parameters()).device
    ids = _encode(vocab, lines, threads)
    lengths = [len(x) for x in ids]
    # one line is one batch: token_batches' sort (~0.05 ms) is a percent of a batch-1 call
    batches = token_batches(lengths, lengths, max_tokens) if len(ids) > 1 else [[0]] * len(ids)
    out: list = [None] * len(ids)
    sources = _source_rows if getattr(model, "takes_rows", False) else _sources
    progress = Progress(what, len(ids), unit="sent")
    last = start = time.perf_counter()
    for number, batch in enumerate(batches):
        src = sources([ids[i] for i in batch])
        src = src.to(device) if torch.is_tensor(src) else src
        opts = dict(options)
        if opts.get("seed") is not None:
            opts["seed"] = int(opts["seed"]) * 1_000_003 + number
        try:
            hyps = model.generate(src, **opts)
        except TypeError as e:  # an option the model's decoder does not take
            if "argument" not in str(e):
                raise
            raise KdgridError(f"decoding options {sorted(opts)} do not fit model kind "
                              f"{model.kind!r}: {e}") from None
        for i, hyp in zip(batch, hyps):
            out[i] = hyp
        progress.step(len(batch), tokens=len(batch))
        if time.perf_counter() - last > report_every:
            progress.report()
            last = time.perf_counter()
    seconds = time.perf_counter() - start
    stats = {"sentences": len(lines), "seconds": round(seconds, 3),
             "sentences_per_second": round(len(lines) / max(seconds, 1e-9), 2),
             "threads": torch.get_num_threads(), "device": getattr(model, "runs_on", None) or str(device)}
    if len(lines) > FEW_LINES:  # a caller of a few lines at a time (batch-1 latency) logs what it needs
        log(f"{what}: {len(lines)} sentences in {seconds:.1f}s ({stats['sentences_per_second']} sent/s)")
    return out, stats
