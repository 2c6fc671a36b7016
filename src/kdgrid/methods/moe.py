"""A mixture-of-experts teacher (hMoElp, Shen et al. 2019; Zhou et al. 2020, section 5): beam search
with one expert (`expert: K`; the workflow's `expert: each` makes one column per expert, each a job
with its own K), or, as an explicit opt-in, per sentence the output the mixture scores highest
(`expert: mixture_best`). The model kind `moe` (kdgrid.models.moe) does the decoding; this method
only asks for it. A plain beam/greedy/sampling column of an MoE teacher decodes with the prior's
expert instead (kdgrid.models.moe, `expert: prior`)."""

from __future__ import annotations

from kdgrid.errors import KdgridError
from kdgrid.models.configs import MIXTURE_BEST
from kdgrid.translate import translate


def distill(model, vocab, lines, refs, kind, options, max_tokens, threads, what):
    if model.kind != "moe":
        raise KdgridError(f"method kind 'moe' decodes with a mixture-of-experts teacher, but this model is "
                          f"kind {model.kind!r}; declare experts under its teacher_sizes entry")
    expert = options.get("expert")
    if not (expert == MIXTURE_BEST or (isinstance(expert, int) and not isinstance(expert, bool) and expert >= 0)):
        raise KdgridError(f"--params: expert must be an expert number (0, 1, ...) or {MIXTURE_BEST!r}, got "
                          f"{expert!r} (the workflow turns `expert: each` into one job per expert)")
    experts = model.cfg.experts
    if isinstance(expert, int) and expert >= experts:
        raise KdgridError(f"--params: expert {expert} but the teacher has {experts} experts (0..{experts - 1})")
    opts = {**options, "expert": expert, "method": "beam"}
    texts, _ = translate(model, vocab, lines, opts, max_tokens, threads, what=what)
    return texts
