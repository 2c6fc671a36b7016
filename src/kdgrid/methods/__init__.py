"""Distillation methods: how a teacher turns the training sources into a distilled set.

One small module per method kind behind one dispatch (`distill`): each turns one chunk of source
lines into as many target lines. Which options a kind takes, its defaults and whether it reads the
training references are kdgrid.methods.kinds' (torch-free, so the workflow plans with the same
facts); the kind modules import torch and load on first use. The workflow sees a column
(`distill/<teacher>.<column>/train.tgt`) and nothing more; search, refinement and metrics know
nothing of these kinds.

- decode (beam, greedy, sample, sample_topk): the teacher's own decoding.
- interpolate: sequence-level interpolation (Kim & Rush 2016), best of the n-best by sentence BLEU.
- ban: a Born-Again round (the model decoding is the teacher in round 1, a re-trained AT after).
- moe: a mixture-of-experts teacher decoding with one expert, or the best per sentence.
"""

from __future__ import annotations

import importlib

from kdgrid.errors import KdgridError
from kdgrid.methods.kinds import DECODE_KINDS, KINDS, NEEDS_REFERENCE, job_options

MODULES = ("ban", "decode", "interpolate", "moe")  # the kind modules: the decoding kinds share decode
# Options of every kind: the output length limit of config `decoding` (max_tokens is the batch
# size, used by the caller).
LENGTH_OPTIONS = ("max_len_a", "max_len_b")


def _known(kind: str) -> None:
    if kind not in KINDS:
        raise KdgridError(f"--params: unknown method kind {kind!r}; known: {', '.join(KINDS)}")


def module(kind: str):
    """The module that distills `kind` (imported on first use)."""
    _known(kind)
    return importlib.import_module(f"{__name__}.{'decode' if kind in DECODE_KINDS else kind}")


def __getattr__(name: str):  # `methods.interpolate` and the like, as before the lazy imports
    if name in MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def needs_reference(kind: str) -> bool:
    """Whether the kind reads the training targets (the distill verb's --ref)."""
    _known(kind)
    return kind in NEEDS_REFERENCE


def check(kind: str, options: dict) -> None:
    """A KdgridError naming the options a kind does not take (checked before any decoding)."""
    _known(kind)
    taken = job_options(kind)
    if taken is None:  # the plain decoding kinds pass their options on as they always have
        return
    unknown = sorted(set(options) - set(taken) - set(LENGTH_OPTIONS))
    if unknown:
        raise KdgridError(f"--params: method kind {kind!r} takes no option(s) {', '.join(unknown)} "
                          f"(its options: {', '.join(sorted(taken))})")


def distill(model, vocab, lines: list[str], refs: list[str] | None, kind: str, options: dict,
            max_tokens: int, threads: int = 1, what: str = "distill") -> list[str]:
    """The distilled targets of `lines` (one per line) by method `kind` with `options`; `refs`
    are the lines' real targets where the kind needs them (else None)."""
    check(kind, options)
    if needs_reference(kind) and refs is None:
        raise KdgridError(f"method kind {kind!r} picks candidates by their score against the reference: "
                          "give the training targets with --ref")
    return module(kind).distill(model, vocab, lines, refs, kind, dict(options), max_tokens, threads, what)
