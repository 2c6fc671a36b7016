"""Conditional masked language model with Mask-Predict decoding (Ghazvininejad et al. 2019).

Training masks floor(L*u)+1 random target tokens (u ~ U(0,1)) and predicts them. Decoding starts
from all <mask> at each candidate length (a length beam); iteration t of T keeps the argmax, then
re-masks the n = L*(T-1-t)/T least probable tokens (linear decay) for the next iteration, which
rewrites only the masked positions.
"""

from __future__ import annotations

import torch

from kdgrid.models.configs import CMLMConfig
from kdgrid.models.layers import EncoderDecoder, LengthHead, init_linear, key_mask
from kdgrid.models.noise import random_mask
from kdgrid.models.terms import LossTerms, compose
from kdgrid.refine import State, refine


class CMLM(EncoderDecoder):
    kind = "cmlm"
    config_class = CMLMConfig
    # word-level KD's record (kdgrid.kd.word): the distilled positions are exactly the predicted ones
    distilled_positions = "the target tokens masked by the CMLM's own random_mask draw (its scored ones)"

    def __init__(self, cfg: CMLMConfig):
        super().__init__(cfg)
        self.length = LengthHead(cfg.d_model, cfg.length_classes)
        init_linear(self)

    def loss(self, batch: dict, label_smoothing: float = 0.0):
        return compose(self.loss_terms(batch), label_smoothing)

    def loss_terms(self, batch: dict) -> LossTerms:
        """The tokens of one random_mask draw (drawn here), + the weighted length loss."""
        src, tgt = batch["src"], batch["tgt"]
        memory, src_pad = self.encode(src)
        tgt_pad = tgt.eq(self.cfg.pad)
        noisy, masked = random_mask(tgt, self.cfg.pad, self.cfg.mask)
        h = self.states(noisy, tgt_pad, memory, src_pad)
        length = self.length.loss(memory, src_pad, (~tgt_pad).sum(1))
        # unmasked positions as pad: only the masked ones are scored (and reach the output layer)
        return LossTerms(self.embed, h, tgt.masked_fill(~masked, self.cfg.pad), self.cfg.pad,
                         {"length": (length, self.cfg.length_loss_weight)}, word_log="word_ins")

    @torch.no_grad()
    def generate(self, src, length_beam: int | None = None, max_iter: int | None = None,
                 adaptive: bool | None = None, rescorer=None, return_steps: bool = False, **_):
        return refine(self, src, self.cfg.max_iter if max_iter is None else max_iter,
                      length_beam or self.cfg.length_beam,
                      adaptive=self.cfg.adaptive if adaptive is None else adaptive,
                      return_steps=return_steps, rescorer=rescorer)

    # -- the refinement-loop interface -----------------------------------------------------
    def initial(self, src, memory, src_pad, length_beam: int):
        lengths = self.length.predict(memory, src_pad, length_beam).flatten()
        owner = torch.arange(src.size(0), device=src.device).repeat_interleave(length_beam)
        real = torch.arange(int(lengths.max()), device=src.device)[None] < lengths[:, None]
        tokens = torch.where(real, self.cfg.mask, self.cfg.pad)
        return State(tokens, torch.zeros(tokens.shape, device=src.device), mask=real), owner

    def step(self, state: State, src, memory, src_pad, step: int, max_iter: int) -> State:
        pad = self.cfg.pad
        tgt_pad = state.tokens.eq(pad)
        noisy = state.tokens.masked_fill(state.mask, self.cfg.mask)
        logits = self.decode(noisy, tgt_pad, memory, src_pad).float()
        logits[..., [pad, self.cfg.bos, self.cfg.eos, self.cfg.mask]] = float("-inf")
        scores, tokens = torch.log_softmax(logits, -1).max(-1)
        tokens = torch.where(state.mask, tokens, state.tokens)
        scores = torch.where(state.mask, scores, state.scores).masked_fill(tgt_pad, 0.0)
        # re-mask the least probable n = L (T-1-t) / T tokens for the next iteration
        total = max_iter + 1
        lengths = (~tgt_pad).sum(1)
        n_mask = (lengths * (total - 1 - step)) // total
        rank = scores.masked_fill(tgt_pad, float("inf")).argsort(1).argsort(1)
        return State(tokens, scores, mask=(rank < n_mask[:, None]) & ~tgt_pad)

    def decode(self, tokens, tgt_pad, memory, src_pad) -> torch.Tensor:
        return self.embed.logits(self.states(tokens, tgt_pad, memory, src_pad))

    def states(self, tokens, tgt_pad, memory, src_pad) -> torch.Tensor:
        """Decoder output states (B, T, d), before the output layer."""
        return self.decoder(self.embed(tokens), key_mask(tgt_pad), memory, key_mask(src_pad))
