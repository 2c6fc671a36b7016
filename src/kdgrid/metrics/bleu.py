"""Corpus BLEU, chrF, chrF++ and TER of detokenized text, by sacrebleu, with their signatures."""

from __future__ import annotations

from sacrebleu.metrics import BLEU, CHRF, TER

from kdgrid.errors import KdgridError

# The sacrebleu tokenizer of every BLEU kdgrid computes: a cell's corpus BLEU (here) and the
# sentence BLEU by which sequence-level interpolation picks its candidates
# (kdgrid.methods.interpolate). One home, so "closest to the reference" and the reported score
# split text the same way. 13a (mteval-v13a) is sacrebleu's default for targets other than
# Chinese, Japanese and Korean; set it here for a corpus in one of those.
TOKENIZE = "13a"


def bleu_metric(**options) -> BLEU:
    """A sacrebleu BLEU with kdgrid's tokenizer (TOKENIZE); `options`: the other BLEU arguments
    (sentence BLEU's smoothing, effective order)."""
    return BLEU(tokenize=TOKENIZE, **options)


# The corpus metrics kdgrid reports, by key, and which direction is better (TER counts edits).
METRICS = ("bleu", "chrf", "chrfpp", "ter")
HIGHER_IS_BETTER = {"bleu": True, "chrf": True, "chrfpp": True, "ter": False}


def sacrebleu_metric(name: str, **options):
    """The sacrebleu metric object of a key in METRICS (BLEU through bleu_metric, for its
    tokenizer); `options`: further constructor arguments (e.g. `references=` to cache them)."""
    if name == "bleu":
        return bleu_metric(**options)
    if name == "chrf":
        return CHRF(**options)
    if name == "chrfpp":
        return CHRF(word_order=2, **options)
    if name == "ter":
        return TER(**options)
    raise KdgridError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")


def score(hypotheses: list[str], references: list[str] | list[list[str]]) -> dict:
    """`references`: one list of lines, or several (multi-reference BLEU, e.g. one per language)."""
    refs = [references] if references and isinstance(references[0], str) else references
    for r in refs:
        if len(hypotheses) != len(r):
            raise KdgridError(f"{len(hypotheses)} hypotheses but {len(r)} references")
    bleu, chrf = bleu_metric(), CHRF()
    b = bleu.corpus_score(hypotheses, refs)
    c = chrf.corpus_score(hypotheses, refs)
    out = {"bleu": round(b.score, 2), "chrf": round(c.score, 2),
           "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature()),
           "bleu_detail": str(b)}
    for name in ("chrfpp", "ter"):  # chrF++ (chrF with word 1- and 2-grams); TER: lower is better
        metric = sacrebleu_metric(name)
        out[name] = round(metric.corpus_score(hypotheses, refs).score, 2)
        out[f"{name}_signature"] = str(metric.get_signature())
    return out


def streamed_bleu(hyp_path, ref_path, chunk: int = 100_000) -> dict:
    """Corpus BLEU of two (possibly huge) files without holding them: sacrebleu scores chunks and
    their sufficient statistics (n-gram matches and totals, lengths) are summed."""
    import itertools

    from kdgrid.corpus import iter_lines

    bleu = bleu_metric()
    correct, total, sys_len, ref_len, n = [0] * 4, [0] * 4, 0, 0, 0
    pairs = zip(iter_lines(hyp_path), iter_lines(ref_path))
    while block := list(itertools.islice(pairs, chunk)):
        s = bleu.corpus_score([h for h, _ in block], [[r for _, r in block]])
        correct = [a + b for a, b in zip(correct, s.counts)]
        total = [a + b for a, b in zip(total, s.totals)]
        sys_len, ref_len, n = sys_len + s.sys_len, ref_len + s.ref_len, n + len(block)
    score = BLEU.compute_bleu(correct, total, sys_len, ref_len, smooth_method=bleu.smooth_method)
    return {"bleu": round(score.score, 2), "bleu_signature": str(bleu.get_signature()), "sentences": n}
