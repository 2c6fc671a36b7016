"""Born-Again networks (Furlanello et al. 2018, as used by Zhou et al. 2020, section 5): round 1 is
the teacher's beam-distilled set, which is the column of the method's `from` method (a beam-kind
method; the workflow makes no second copy of it); round r >= 2 is the beam output of an AT
re-trained (by the one Trainer, through the `train` verb) on round r-1's set. Which model decodes
is the workflow's business (`bans/<teacher>.<column>/model.pt`); here a round is a beam search with
the method's beam and lenpen."""

from __future__ import annotations

from kdgrid.translate import translate


def distill(model, vocab, lines, refs, kind, options, max_tokens, threads, what):
    texts, _ = translate(model, vocab, lines, {**options, "method": "beam"}, max_tokens, threads, what=what)
    return texts
