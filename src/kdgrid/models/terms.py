"""What a model's loss is made of, apart from how it is scored (models and criteria kept apart).

A kind whose decoder positions align 1:1 with target tokens (the AT Transformer, the NAT, the CMLM)
computes its `LossTerms` in `loss_terms(batch)`: decoder states, the target ids to score (pad where a
position is not scored) and its other weighted terms (the NAT's and CMLM's length loss). Its
`loss` is `compose(self.loss_terms(batch), label_smoothing)`; word-level KD (kdgrid.kd.word) takes
the same terms and scores them its own way, so a model's loss exists once, and a KD wrapper with
alpha 0 gives the model's loss exactly: the same ops in the same order on the same random draws
(CMLM's mask is drawn inside loss_terms).

The output layer runs once per step, on the scored positions only (`score`): the word loss and a
KD term both read those logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from kdgrid.models.layers import Embedding, scored_logits, smoothed_nll


@dataclass(frozen=True)
class LossTerms:
    embed: Embedding  # the output layer: logits = embed.logits(h)
    h: torch.Tensor  # (B, L, d) decoder states, before the output layer
    target: torch.Tensor  # (B, L) the ids to score; pad where a position is not scored
    pad: int
    # other terms added to the total: name -> (value, weight); logged under their names
    extras: dict[str, tuple[torch.Tensor, float]] = field(default_factory=dict)
    word_log: str | None = None  # the log key of the word term where the model logs it apart


class Scored(NamedTuple):
    positions: torch.Tensor  # (B, L) bool: the scored positions
    logits: torch.Tensor  # (N, V): the output layer at them, row-major (as h[positions])
    word: torch.Tensor  # label-smoothed word cross-entropy, token mean
    nll: torch.Tensor  # its unsmoothed mean (detached), the number to compare runs by
    ntokens: int


@dataclass(frozen=True)
class GlanceStart:
    """What a glancing kind's first pass starts from (kdgrid.kd.glance): its decoder input
    embeddings before positions, their padding, and the encoder's output (run once per step)."""

    inputs: torch.Tensor  # (B, L, d)
    out_pad: torch.Tensor  # (B, L) True at padding
    memory: torch.Tensor
    src_pad: torch.Tensor


@dataclass(frozen=True)
class Glance:
    """The second pass's input: at the glanced positions, the embedding of the oracle's token."""

    start: GlanceStart
    mask: torch.Tensor  # (B, L) bool: the glanced positions
    oracle: torch.Tensor  # (B, L) the token each position should emit (NAT: the target; CTC, DAT: its best path)
    eligible: torch.Tensor  # (B, L) bool: the positions that could be glanced (DAT: the best path's vertices)

    def inputs(self, embed: Embedding) -> torch.Tensor:
        return torch.where(self.mask[..., None], embed.tokens(self.oracle).to(self.start.inputs.dtype),
                           self.start.inputs)


def score(terms: LossTerms, label_smoothing: float) -> Scored:
    """The one output-layer projection of a step and the word loss on it (projected_nll's numbers)."""
    positions, logits, gold = scored_logits(terms.embed, terms.h, terms.target, terms.pad)
    word, nll, n = smoothed_nll(logits, gold, terms.pad, label_smoothing)
    return Scored(positions, logits, word, nll, n)


def with_extras(total: torch.Tensor, terms: LossTerms) -> torch.Tensor:
    for value, weight in terms.extras.values():
        total = total + weight * value
    return total


def logs(total: torch.Tensor, terms: LossTerms, word_logs: dict, ntokens: int) -> dict:
    """The Trainer's logs: loss, the word logs, each extra term (unweighted), ntokens."""
    extras = {name: value.detach() for name, (value, _) in terms.extras.items()}
    return {"loss": total.detach(), **word_logs, **extras, "ntokens": ntokens}


def compose(terms: LossTerms, label_smoothing: float):
    """A model's own loss: word CE + its weighted extras, and its logs."""
    s = score(terms, label_smoothing)
    total = with_extras(s.word, terms)
    word_logs = {"nll": s.nll, **({terms.word_log: s.word.detach()} if terms.word_log else {})}
    return total, logs(total, terms, word_logs, s.ntokens)
