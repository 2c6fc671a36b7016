"""Vanilla non-autoregressive Transformer (Gu et al. 2018, without fertility).

The encoder reads the source; a classifier over length offsets predicts the target length; the
decoder sees either a uniform copy of the source embeddings or all <mask> tokens at that length
and predicts every target token in one parallel pass (the refinement loop with max_iter 0).
"""

from __future__ import annotations

import torch

from kdgrid.models.configs import NATConfig
from kdgrid.models.layers import EncoderDecoder, LengthHead, init_linear, key_mask
from kdgrid.models.terms import Glance, GlanceStart, LossTerms, compose
from kdgrid.refine import State, refine


class NAT(EncoderDecoder):
    kind = "nat"
    config_class = NATConfig
    # word-level KD's record (kdgrid.kd.word): in training the decoder runs at the gold target
    # length, so its position t is target token t (at inference there is no KD)
    distilled_positions = "every target token (no eos): student position t <- teacher position t"

    def __init__(self, cfg: NATConfig):
        super().__init__(cfg)
        self.length = LengthHead(cfg.d_model, cfg.length_classes)
        init_linear(self)

    # -- the two faces every model has ------------------------------------------------------
    def loss(self, batch: dict, label_smoothing: float = 0.0, glance: Glance | None = None):
        return compose(self.loss_terms(batch, glance), label_smoothing)

    def loss_terms(self, batch: dict, glance: Glance | None = None) -> LossTerms:
        """Every target token from the first pass at the gold length, + the weighted length loss.
        With `glance` (GLAT, kdgrid.kd.glance): the glanced positions take the gold tokens'
        embeddings as input and are not scored."""
        tgt = batch["tgt"]
        start = self.glance_start(batch) if glance is None else glance.start
        inputs = start.inputs if glance is None else glance.inputs(self.embed)
        h = self.states(inputs, start.out_pad, start.memory, start.src_pad)
        length = self.length.loss(start.memory, start.src_pad, (~start.out_pad).sum(1))
        target = tgt if glance is None else tgt.masked_fill(glance.mask, self.cfg.pad)
        return LossTerms(self.embed, h, target, self.cfg.pad, {"length": (length, self.cfg.length_loss_weight)},
                         word_log="word_ins")

    # -- glancing training (GLAT, kdgrid.kd.glance) ---------------------------------------
    glance_sampling = "count"  # floor(wrong x p) positions, chosen at random (Qian et al. 2021)

    def glance_start(self, batch: dict) -> GlanceStart:
        src, tgt = batch["src"], batch["tgt"]
        memory, src_pad = self.encode(src)
        tgt_pad = tgt.eq(self.cfg.pad)
        return GlanceStart(self.first_input(src, src_pad, tgt_pad), tgt_pad, memory, src_pad)

    def glance_first(self, start: GlanceStart, batch: dict):
        """The first pass's argmax per position, the oracle (the target) and the positions that may
        be glanced (every target position)."""
        logits = self.embed.logits(self.states(start.inputs, start.out_pad, start.memory, start.src_pad))
        return logits.argmax(-1), batch["tgt"], ~start.out_pad

    @torch.no_grad()
    def generate(self, src: torch.Tensor, length_beam: int | None = None, rescorer=None,
                 **_) -> list[list[int]]:
        """One parallel pass per candidate length; keeps the candidate with the best mean token
        log-probability (or the rescorer's best). Returns token ids per sentence (no specials)."""
        return refine(self, src, max_iter=0, length_beam=length_beam or self.cfg.length_beam,
                      rescorer=rescorer)

    # -- the refinement-loop interface -----------------------------------------------------
    def initial(self, src, memory, src_pad, length_beam: int):
        """All-<mask> rows at each candidate length."""
        lengths = self.length.predict(memory, src_pad, length_beam).flatten()
        owner = torch.arange(src.size(0), device=src.device).repeat_interleave(length_beam)
        real = torch.arange(int(lengths.max()), device=src.device)[None] < lengths[:, None]
        tokens = torch.where(real, self.cfg.mask, self.cfg.pad)
        return State(tokens, torch.zeros(tokens.shape, device=src.device)), owner

    def step(self, state: State, src, memory, src_pad, step: int, max_iter: int) -> State:
        tgt_pad = state.tokens.eq(self.cfg.pad)
        logits = self.decode(self.first_input(src, src_pad, tgt_pad), tgt_pad, memory, src_pad)
        return self.predict(logits, tgt_pad)

    # -- pieces ----------------------------------------------------------------------------
    def first_input(self, src, src_pad, tgt_pad) -> torch.Tensor:
        """Decoder input embeddings of the first pass: source copy or all <mask>."""
        if self.cfg.decoder_input == "mask":
            return self.embed.tokens(torch.full_like(tgt_pad, self.cfg.mask, dtype=torch.long))
        return self.embed.tokens(uniform_copy(src, src_pad, tgt_pad, self.cfg.eos, self.cfg.pad))

    def decode(self, inputs: torch.Tensor, tgt_pad, memory, src_pad) -> torch.Tensor:
        """Logits (B, T, V) from decoder input embeddings (positions are added here)."""
        return self.embed.logits(self.states(inputs, tgt_pad, memory, src_pad))

    def states(self, inputs: torch.Tensor, tgt_pad, memory, src_pad) -> torch.Tensor:
        """Decoder output states (B, T, d), before the output layer."""
        return self.decoder(self.embed.add_positions(inputs), key_mask(tgt_pad), memory, key_mask(src_pad))

    def predict(self, logits, tgt_pad) -> State:
        """Argmax words (never a special symbol) and their log-probabilities."""
        logits = logits.float()
        logits[..., [self.cfg.pad, self.cfg.bos, self.cfg.eos, self.cfg.mask]] = float("-inf")
        scores, tokens = torch.log_softmax(logits, -1).max(-1)
        return State(tokens.masked_fill(tgt_pad, self.cfg.pad), scores.masked_fill(tgt_pad, 0.0))


def uniform_copy(src, src_pad, tgt_pad, eos: int, pad: int) -> torch.Tensor:
    """Source token ids spread evenly over each target: position t takes source word
    round(t * (S-1) / (T-1)), counting only real source words (no padding, no eos), so the
    result does not depend on how a sentence is padded inside its batch."""
    words = (~src_pad & src.ne(eos)).sum(1)  # real source words per sentence (right-padded)
    tgt_len = (~tgt_pad).sum(1)
    t = torch.arange(tgt_pad.size(1), device=src.device)[None].float()
    ratio = (words - 1).clamp(min=0).float() / (tgt_len - 1).clamp(min=1).float()
    index = torch.round(t * ratio[:, None]).long()
    index = torch.minimum(index, (words - 1).clamp(min=0)[:, None])
    copied = src.gather(1, index)
    return copied.masked_fill(tgt_pad, pad).masked_fill((words == 0)[:, None] & ~tgt_pad, eos)
