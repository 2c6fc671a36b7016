"""beam, greedy, sample, sample_topk: the teacher's own decoding of each source (kdgrid.search)."""

from __future__ import annotations

from kdgrid.translate import translate


def distill(model, vocab, lines, refs, kind, options, max_tokens, threads, what):
    texts, _ = translate(model, vocab, lines, {**options, "method": kind}, max_tokens, threads, what=what)
    return texts
