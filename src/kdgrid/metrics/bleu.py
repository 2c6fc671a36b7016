"""Corpus BLEU and chrF of detokenized text, by sacrebleu, with their signatures."""

from __future__ import annotations

from sacrebleu.metrics import BLEU, CHRF

from kdgrid.errors import KdgridError


def score(hypotheses: list[str], references: list[str] | list[list[str]]) -> dict:
    """`references`: one list of lines, or several (multi-reference BLEU, e.g. one per language)."""
    refs = [references] if references and isinstance(references[0], str) else references
    for r in refs:
        if len(hypotheses) != len(r):
            raise KdgridError(f"{len(hypotheses)} hypotheses but {len(r)} references")
    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(hypotheses, refs)
    c = chrf.corpus_score(hypotheses, refs)
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2),
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature()),
            "bleu_detail": str(b)}


def streamed_bleu(hyp_path, ref_path, chunk: int = 100_000) -> dict:
    """Corpus BLEU of two (possibly huge) files without holding them: sacrebleu scores chunks and
    their sufficient statistics (n-gram matches and totals, lengths) are summed."""
    import itertools

    from kdgrid.corpus import iter_lines

    bleu = BLEU()
    correct, total, sys_len, ref_len, n = [0] * 4, [0] * 4, 0, 0, 0
    pairs = zip(iter_lines(hyp_path), iter_lines(ref_path))
    while block := list(itertools.islice(pairs, chunk)):
        s = bleu.corpus_score([h for h, _ in block], [[r for _, r in block]])
        correct = [a + b for a, b in zip(correct, s.counts)]
        total = [a + b for a, b in zip(total, s.totals)]
        sys_len, ref_len, n = sys_len + s.sys_len, ref_len + s.ref_len, n + len(block)
    score = BLEU.compute_bleu(correct, total, sys_len, ref_len, smooth_method=bleu.smooth_method)
    return {"bleu": round(score.score, 2), "bleu_signature": str(bleu.get_signature()), "sentences": n}
