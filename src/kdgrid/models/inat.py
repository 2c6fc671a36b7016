"""Iterative refinement NAT (Lee et al. 2018).

The first pass is a vanilla NAT's (source copy or <mask> input at the predicted length); each
further pass re-predicts every position from the embedding of the previous output. Training
unrolls `train_steps` passes, feeding each the previous pass's argmax; with probability
`corrupt_prob` per sentence a pass is fed a corrupted target instead (tokens replaced, repeated
or swapped, ~11% each), so the decoder learns to denoise. Decoding iterates up to `max_iter`
times and stops early once the output no longer changes.
"""

from __future__ import annotations

import torch

from kdgrid.models.configs import INATConfig
from kdgrid.models.layers import smoothed_nll
from kdgrid.models.nat import NAT
from kdgrid.models.noise import corrupt
from kdgrid.refine import State, refine

FIRST_WORD = 5  # ids below are pad, unk, bos, eos, <mask>


class INAT(NAT):
    kind = "inat"
    glance_sampling = None  # trains its own refinement steps: glancing (kdgrid.kd.glance) is for one-pass kinds
    config_class = INATConfig
    # Not NAT's: the word loss is a mean over several unrolled passes, each fed the previous pass's
    # argmax (so the output layer runs on every position inside the loop), not one set of states to
    # score; word-level KD would have to choose which passes to distil. No KD for iNAT (KD_KINDS).
    loss_terms = None
    distilled_positions = None

    def loss(self, batch: dict, label_smoothing: float = 0.0):
        src, tgt = batch["src"], batch["tgt"]
        memory, src_pad = self.encode(src)
        tgt_pad = tgt.eq(self.cfg.pad)
        inputs = self.first_input(src, src_pad, tgt_pad)
        words, nlls, n = [], [], 0
        for k in range(self.cfg.train_steps):
            logits = self.decode(inputs, tgt_pad, memory, src_pad)
            word, nll, n = smoothed_nll(logits, tgt, self.cfg.pad, label_smoothing)
            words.append(word)
            nlls.append(nll)
            if k + 1 < self.cfg.train_steps:
                previous = logits.detach().argmax(-1).masked_fill(tgt_pad, self.cfg.pad)
                noisy = corrupt(tgt, self.cfg.pad, FIRST_WORD, self.cfg.vocab_size)
                use_noisy = torch.rand(len(tgt), 1, device=tgt.device) < self.cfg.corrupt_prob
                inputs = self.embed.tokens(torch.where(use_noisy, noisy, previous))
        word = torch.stack(words).mean()
        length = self.length.loss(memory, src_pad, (~tgt_pad).sum(1))
        total = word + self.cfg.length_loss_weight * length
        return total, {"loss": total.detach(), "nll": nlls[-1], "nll_first": nlls[0], "word_ins": word.detach(),
                       "length": length.detach(), "ntokens": n}

    @torch.no_grad()
    def generate(self, src, length_beam: int | None = None, max_iter: int | None = None,
                 adaptive: bool | None = None, rescorer=None, return_steps: bool = False, **_):
        return refine(self, src, self.cfg.max_iter if max_iter is None else max_iter,
                      length_beam or self.cfg.length_beam,
                      adaptive=self.cfg.adaptive if adaptive is None else adaptive,
                      return_steps=return_steps, rescorer=rescorer)

    def step(self, state: State, src, memory, src_pad, step: int, max_iter: int) -> State:
        tgt_pad = state.tokens.eq(self.cfg.pad)
        inputs = self.first_input(src, src_pad, tgt_pad) if step == 0 else self.embed.tokens(state.tokens)
        return self.predict(self.decode(inputs, tgt_pad, memory, src_pad), tgt_pad)
