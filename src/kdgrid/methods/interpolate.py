"""Sequence-level interpolation (Kim & Rush 2016): from the teacher's n-best list, keep per
sentence the candidate closest to the real target, so the distilled set stays simple (a teacher
output) but moves towards the real data (more faithful).

The n-best comes from one batched, cached beam search (kdgrid.search.beam_search with `nbest`).
Closeness is sentence-level BLEU by sacrebleu, smoothed with its `exp` method (sacrebleu's
`sentence_bleu` defaults: exponential decay of the zero n-gram precisions, effective order), or
chrF (`metric: chrf`). Ties go to the candidate with the higher model score (earlier in the list).
Sentence BLEU tokenizes as the reported corpus BLEU does: both take kdgrid.metrics.bleu's TOKENIZE
(through bleu_metric), and `record` says which, for the job's log.
"""

from __future__ import annotations

import json

from sacrebleu.metrics import CHRF

from kdgrid.errors import KdgridError
from kdgrid.methods.kinds import resolved
from kdgrid.metrics.bleu import bleu_metric
from kdgrid.progress import log
from kdgrid.translate import translate_nbest

METRICS = ("bleu", "chrf")
SENTENCE_BLEU = {"smooth_method": "exp", "effective_order": True}  # sacrebleu's sentence_bleu defaults


def scorer(metric: str):
    """The sentence-level metric: a sacrebleu metric object with sentence_score(hyp, [ref])."""
    if metric == "bleu":
        return bleu_metric(**SENTENCE_BLEU)
    if metric == "chrf":
        return CHRF()
    raise KdgridError(f"--params: metric must be one of {', '.join(METRICS)}, got {metric!r}")


def record(metric: str) -> dict:
    """How candidates are compared with the reference, read off the scorer that compares them:
    the metric, its tokenizer (BLEU: kdgrid.metrics.bleu.TOKENIZE, the corpus BLEU's) and settings."""
    m = scorer(metric)
    if metric == "bleu":
        return {"metric": "sentence BLEU (sacrebleu)", "tokenize": m.tokenizer_signature,
                "lowercase": m.lowercase, "smooth_method": m.smooth_method, "effective_order": m.effective_order}
    return {"metric": "sentence chrF (sacrebleu)", "tokenize": "none (character n-grams)",
            "whitespace": m.whitespace, "char_order": m.char_order, "word_order": m.word_order}


def similarities(candidates: list[tuple[float, str]], reference: str, metric) -> list[float]:
    return [metric.sentence_score(text, [reference]).score for _, text in candidates]


def pick(candidates: list[tuple[float, str]], reference: str, metric=None,
         sims: list[float] | None = None) -> int:
    """Index of the candidate with the highest sentence score against `reference`; among equal
    scores the higher model score, then the earlier entry. `candidates`: (model score, text)."""
    if not candidates:
        raise KdgridError("interpolation: a sentence without candidates (an empty n-best list)")
    if sims is None:
        sims = similarities(candidates, reference, metric or scorer("bleu"))
    return max(range(len(candidates)), key=lambda i: (sims[i], candidates[i][0], -i))


def distill(model, vocab, lines, refs, kind, options, max_tokens, threads, what):
    # the options left out take kdgrid.methods.kinds' defaults (beam: nbest), as the workflow plans them
    opts = {k: v for k, v in resolved({"kind": "interpolate", **options}).items() if k != "kind"}
    nbest = opts["nbest"]
    if not 1 <= nbest <= opts["beam"]:
        raise KdgridError(f"--params: nbest {nbest} must be between 1 and the beam size {opts['beam']}")
    if len(refs) != len(lines):
        raise KdgridError(f"interpolation: {len(refs)} references for {len(lines)} sources")
    name = opts.pop("metric")
    metric = scorer(name)
    log(f"{what}: interpolation picks by {json.dumps(record(name))}")
    nbests, _ = translate_nbest(model, vocab, lines, {**opts, "method": "beam"}, max_tokens, threads, what=what)
    out, moved, top_sim, kept_sim = [], 0, 0.0, 0.0
    for cands, ref in zip(nbests, refs):
        sims = similarities(cands, ref, metric)
        best = pick(cands, ref, sims=sims)
        out.append(cands[best][1])
        moved += best != 0
        top_sim, kept_sim = top_sim + sims[0], kept_sim + sims[best]
    if not lines:
        return out
    n = len(lines)
    log(f"{what}: interpolation kept a candidate other than the n-best's first entry for {moved} of "
        f"{len(lines)} sentences; mean sentence {type(metric).__name__} against the reference "
        f"{top_sim / n:.2f} (first entries) -> {kept_sim / n:.2f} (kept); {metric.get_signature()}")
    return out
