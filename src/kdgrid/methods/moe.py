"""A mixture-of-experts teacher (hMoElp, Shen et al. 2019; Zhou et al. 2020, section 5): beam search
with one chosen expert (`expert: K`, simpler data), or per sentence the expert whose output the
mixture scores highest (`expert: best`). The model kind `moe` (kdgrid.models) does the decoding;
this method only asks for it."""

from __future__ import annotations

from kdgrid.errors import KdgridError
from kdgrid.translate import translate

NEEDS_REFERENCE = False
OPTIONS = ("expert", "beam", "lenpen")


def distill(model, vocab, lines, refs, kind, options, max_tokens, threads, what):
    if model.kind != "moe":
        raise KdgridError(f"method kind 'moe' decodes with a mixture-of-experts teacher, but this model is "
                          f"kind {model.kind!r}; declare experts under its teacher_sizes entry")
    expert = options.get("expert", "best")
    if not (expert == "best" or (isinstance(expert, int) and not isinstance(expert, bool) and expert >= 0)):
        raise KdgridError(f"--params: expert must be 'best' or an expert number (0, 1, ...), got {expert!r}")
    experts = getattr(model.cfg, "experts", None)
    if isinstance(expert, int) and experts is not None and expert >= experts:
        raise KdgridError(f"--params: expert {expert} but the teacher has {experts} experts (0..{experts - 1})")
    opts = {**options, "expert": expert, "method": "beam"}
    texts, _ = translate(model, vocab, lines, opts, max_tokens, threads, what=what)
    return texts
