"""Pairs a student cannot learn from, counted and not hidden: CTC and the DA-Transformer have no
path for a target longer than their output positions, so those pairs add nothing to the loss,
and distilled and raw targets differ in length: each column would quietly train on another set.

A kind with such a limit offers `feasible(src_tokens, target)` (one pair), `feasibility_rule`
(the words for it), and the vectorized pair `needed_positions_of(target Ids)` / `positions_of(source
tokens, eos included)` that this module counts with.
"""

from __future__ import annotations

import numpy as np


def has_limit(model) -> bool:
    return hasattr(model, "feasible")


def infeasible_pairs(model, sides: dict, max_len: int | None = None) -> dict:
    """The pairs of each split ({split: (source Ids, target Ids)}, kdgrid.batching.Ids) that the
    model cannot fit, among those training keeps (kdgrid.train: non-empty sides of at most max_len
    tokens; None: every pair): logged, and returned for the model file's record (scores.json and
    grid.md carry it)."""
    from kdgrid.progress import log

    record = {"rule": model.feasibility_rule,
              "counted_over": "every pair" if max_len is None else
              f"the pairs training keeps (non-empty sides of at most max_len {max_len} tokens)"}
    for split, (src, tgt) in sides.items():
        kept = np.ones(len(src), dtype=bool)
        if max_len is not None:
            kept = (src.lengths > 0) & (tgt.lengths > 0) & (src.lengths <= max_len) & (tgt.lengths <= max_len)
        bad = int(((model.needed_positions_of(tgt) > model.positions_of(src.lengths + 1)) & kept).sum())
        record[split], record[f"{split}_pairs"] = bad, int(kept.sum())
        log(f"{model.kind}: {bad} of {len(src)} {split} pairs cannot be fitted (they add nothing to the loss; "
            f"{model.feasibility_rule})")
    return record
