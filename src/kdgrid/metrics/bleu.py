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
