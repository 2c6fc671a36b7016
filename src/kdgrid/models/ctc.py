"""CTC non-autoregressive Transformer (Libovický & Helcl 2018; Saharia et al. 2020).

The decoder runs over `upsample` (λ) positions per source token, eos included: its inputs are the
encoder states, each repeated λ times, plus the decoder's positions (so the copies of one state
differ). The source length thus fixes the output length: no length predictor. Every position emits
a word or a blank; the loss is CTC (torch's ctc_loss in float32) over every alignment of the target
to the positions; decoding takes the argmax per position, merges repeats and drops blanks, so a
repeated word survives only where a blank separates its copies. The blank is the vocabulary's
<mask> id: the tied output layer needs no extra row, and <mask> is never a target word.

A target that needs more positions than the source gives (its length plus one blank between each
pair of equal neighbours) has no alignment: `feasible` says which, ctc_loss's zero_infinity drops
them from the gradient, and the training job counts them (kdgrid.models.feasibility: meta "infeasible_pairs").

Choice (the references differ): the loss is summed over sentences and divided by the batch's
target tokens, as the other kinds' token means (`loss_norm: tokens`); `sentences` is torch's
"mean" (each sentence's loss over its own target length, averaged over sentences). Label smoothing
does not apply (the reference recipes train CTC without it): a smoothing value is ignored.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kdgrid.models.configs import CTCConfig
from kdgrid.models.layers import EncoderDecoder, init_linear, key_mask
from kdgrid.models.terms import Glance, GlanceStart


def needed_positions(target: list[int]) -> int:
    """Positions a CTC alignment of `target` needs: one per token and a blank between equal neighbours."""
    return len(target) + sum(a == b for a, b in zip(target, target[1:]))


class CTC(EncoderDecoder):
    kind = "ctc"
    config_class = CTCConfig
    feasibility_rule = ("a pair is infeasible when its target tokens, plus one blank between each two equal "
                        "neighbours, outnumber upsample x its source tokens (eos included)")

    def __init__(self, cfg: CTCConfig):
        super().__init__(cfg)
        init_linear(self)

    # -- the two faces every model has ------------------------------------------------------
    def loss(self, batch: dict, label_smoothing: float = 0.0, glance: Glance | None = None):
        """CTC over the whole target; with `glance` (GLAT, kdgrid.kd.glance) the glanced positions
        take the embedding of their token on the gold target's best path as input."""
        tgt = batch["tgt"]
        start = self.glance_start(batch) if glance is None else glance.start
        inputs = start.inputs if glance is None else glance.inputs(self.embed)
        log_probs, out_pad = self._log_probs(inputs, start), start.out_pad
        tgt_pad = tgt.eq(self.cfg.pad)
        tgt_len, out_len = (~tgt_pad).sum(1), (~out_pad).sum(1)
        per_sentence = F.ctc_loss(log_probs.transpose(0, 1), tgt.masked_fill(tgt_pad, 0), out_len, tgt_len,
                                  blank=self.cfg.mask, reduction="none", zero_infinity=True)
        ntokens = int(tgt_len.sum())
        if self.cfg.loss_norm == "tokens":
            total = per_sentence.sum() / max(ntokens, 1)
        else:
            total = (per_sentence / tgt_len.clamp(min=1)).mean()
        return total, {"loss": total.detach(), "nll": total.detach(), "ctc": total.detach(), "ntokens": ntokens}

    @torch.no_grad()
    def generate(self, src: torch.Tensor, **_) -> list[list[int]]:
        """Greedy CTC decoding: the argmax per position (never pad, bos or eos), repeats
        merged, blanks dropped. Returns token ids per sentence (no specials)."""
        log_probs, out_pad = self.log_probs(src, never_special=True)
        best = log_probs.argmax(-1).masked_fill(out_pad, self.cfg.mask)
        return [collapse(row, self.cfg.mask) for row in best.tolist()]

    def feasible(self, src_tokens: int, target: list[int]) -> bool:
        """Whether a target fits the positions of a source of `src_tokens` tokens (eos included)."""
        return needed_positions(target) <= self.cfg.upsample * src_tokens

    def choices(self) -> dict:
        """The readings of the references this model was trained with, for scores.json."""
        norms = {"tokens": "summed CTC loss / target tokens of the batch",
                 "sentences": "torch's mean: each sentence's loss / its length, averaged"}
        return {"loss_norm": norms[self.cfg.loss_norm],
                "positions": f"{self.cfg.upsample} x source tokens (eos included), the repeated encoder states",
                "label_smoothing": "not applied (the reference recipes train CTC without it)"}

    @staticmethod
    def needed_positions_of(tgt):
        return needed_positions_of(tgt)

    def positions_of(self, src_tokens):
        return self.cfg.upsample * src_tokens

    # -- glancing training (GLAT, kdgrid.kd.glance) ---------------------------------------
    glance_sampling = "bernoulli"  # each position with probability (wrong / positions) x p

    def glance_start(self, batch: dict) -> GlanceStart:
        """The encoder once; the decoder inputs: each encoder state repeated `upsample` times."""
        memory, src_pad = self.encode(batch["src"])
        out_pad = src_pad.repeat_interleave(self.cfg.upsample, dim=1)  # right padding stays right
        return GlanceStart(memory.repeat_interleave(self.cfg.upsample, dim=1), out_pad, memory, src_pad)

    def glance_first(self, start: GlanceStart, batch: dict):
        """The first pass's argmax per position, the oracle (each position's token on the gold
        target's best path, best_alignment) and the positions that may be glanced (every position
        of a sentence whose target has such a path)."""
        log_probs = self._log_probs(start.inputs, start)
        oracle, found = best_alignment(log_probs, start.out_pad, batch["tgt"], self.cfg.pad, self.cfg.mask)
        return log_probs.argmax(-1), oracle, ~start.out_pad & found[:, None]

    # -- pieces ----------------------------------------------------------------------------
    def _log_probs(self, inputs: torch.Tensor, start: GlanceStart, never_special: bool = False):
        h = self.decoder(self.embed.add_positions(inputs), key_mask(start.out_pad), start.memory,
                         key_mask(start.src_pad))
        logits = self.embed.logits(h).float()
        if never_special:
            c = self.cfg
            logits[..., [c.pad, c.bos, c.eos]] = float("-inf")
        return torch.log_softmax(logits, -1)

    def log_probs(self, src: torch.Tensor, never_special: bool = False):
        """Float32 log-probabilities (B, L, V) per position, and the positions' padding mask."""
        start = self.glance_start({"src": src})
        return self._log_probs(start.inputs, start, never_special), start.out_pad


def best_alignment(log_probs: torch.Tensor, out_pad: torch.Tensor, tgt: torch.Tensor, pad: int,
                   blank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The most probable CTC path of each gold target (max-product dynamic programming, Viterbi):
    (labels (B, L): the blank or target token each position takes on that path, blank at padding;
    found (B,): False where the target has no path, i.e. the pair is infeasible).

    The path runs over the extended target blank y1 blank y2 ... yS blank (2S + 1 states); a state
    is reached from itself, the one before, or, for a token differing from the token two before,
    across the blank between them; a path ends in the last token or the blank after it."""
    batch, length, _ = log_probs.shape
    tgt_len, out_len = tgt.ne(pad).sum(1), (~out_pad).sum(1)
    states = 2 * tgt.size(1) + 1
    ext = torch.full((batch, states), blank, dtype=torch.long, device=tgt.device)
    ext[:, 1::2] = tgt.masked_fill(tgt.eq(pad), blank)
    index = torch.arange(states, device=tgt.device)
    valid = index[None] < (2 * tgt_len + 1)[:, None]
    skip = (index[None] >= 2) & ext.ne(blank)
    skip[:, 2:] &= ext[:, 2:].ne(ext[:, :-2])
    neg = torch.tensor(float("-inf"), device=log_probs.device)
    emit = log_probs.gather(2, ext[:, None, :].expand(batch, length, states)).masked_fill(~valid[:, None], neg)
    score = torch.full((batch, states), float("-inf"), device=log_probs.device)
    score[:, 0] = emit[:, 0, 0]
    score[:, 1] = torch.where(tgt_len > 0, emit[:, 0, 1], neg)
    back = torch.zeros(batch, length, states, dtype=torch.long, device=tgt.device)  # 0 stay, 1 or 2 back
    for t in range(1, length):
        one = torch.cat([neg.expand(batch, 1), score[:, :-1]], 1)
        two = torch.cat([neg.expand(batch, 2), score[:, :-2]], 1).masked_fill(~skip, neg)
        best, step = torch.stack([score, one, two], -1).max(-1)
        moving = (t < out_len)[:, None]  # past a sentence's last position its scores stay put
        score = torch.where(moving, best + emit[:, t], score)
        back[:, t] = torch.where(moving, step, 0)
    last = (2 * tgt_len).clamp(max=states - 1)
    ends = torch.stack([score.gather(1, last[:, None])[:, 0],
                        torch.where(tgt_len > 0, score.gather(1, (last - 1).clamp(min=0)[:, None])[:, 0], neg)], 1)
    end_score, which = ends.max(1)
    state = last - which
    labels = torch.full((batch, length), blank, dtype=torch.long, device=tgt.device)
    for t in range(length - 1, -1, -1):
        labels[:, t] = ext.gather(1, state[:, None])[:, 0]
        state = state - back[:, t].gather(1, state[:, None])[:, 0]
    return labels.masked_fill(out_pad, blank), torch.isfinite(end_score)


def needed_positions_of(tgt) -> np.ndarray:
    """needed_positions of every sentence of a kdgrid.batching.Ids, in one pass over its tokens."""
    same = np.zeros(len(tgt.ids), dtype=bool)
    same[1:] = tgt.ids[1:] == tgt.ids[:-1]
    starts = tgt.offsets[:-1]
    same[starts[starts < len(same)]] = False  # a sentence's first token repeats nothing
    counted = np.concatenate([[0], np.cumsum(same)])
    return tgt.lengths + counted[tgt.offsets[1:]] - counted[tgt.offsets[:-1]]


def collapse(path: list[int], blank: int) -> list[int]:
    """A CTC path's output: runs of one symbol merged, then blanks dropped."""
    out, previous = [], None
    for token in path:
        if token != previous and token != blank:
            out.append(token)
        previous = token
    return out
