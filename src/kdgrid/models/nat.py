"""Vanilla non-autoregressive Transformer (Gu et al. 2018, without fertility).

The encoder reads the source; a classifier over length offsets (len(y) - len(x) + 128) predicts the
target length; the decoder sees either a uniform copy of the source embeddings or all <mask>
tokens at that length and predicts every target token in one parallel pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdgrid.models.layers import EncoderDecoder, ModelConfig, init_linear, key_mask, smoothed_nll


@dataclass(kw_only=True)
class NATConfig(ModelConfig):
    mask: int
    decoder_input: str = "copy"  # copy | mask
    length_classes: int = 256
    length_loss_weight: float = 0.1
    length_beam: int = 1

    def __post_init__(self):
        if self.decoder_input not in ("copy", "mask"):
            raise ValueError(f"decoder_input must be 'copy' or 'mask', got {self.decoder_input!r}")
        if self.length_beam < 1:
            raise ValueError(f"length_beam must be positive, got {self.length_beam}")


class NAT(EncoderDecoder):
    kind = "nat"
    config_class = NATConfig

    def __init__(self, cfg: NATConfig):
        super().__init__(cfg)
        self.length_head = nn.Linear(cfg.d_model, cfg.length_classes)
        init_linear(self)
        self.offset = cfg.length_classes // 2

    # -- the two faces every model has ------------------------------------------------------
    def loss(self, batch: dict, label_smoothing: float = 0.0):
        src, tgt = batch["src"], batch["tgt"]
        memory, src_pad = self.encode(src)
        tgt_pad = tgt.eq(self.cfg.pad)
        logits = self.decode(src, src_pad, memory, tgt_pad)
        word, nll, n = smoothed_nll(logits, tgt, self.cfg.pad, label_smoothing)
        length_target = ((~tgt_pad).sum(1) - (~src_pad).sum(1) + self.offset)
        length_target = length_target.clamp(0, self.cfg.length_classes - 1)
        length = F.cross_entropy(self.length_logits(memory, src_pad).float(), length_target)
        total = word + self.cfg.length_loss_weight * length
        logs = {"loss": total.detach(), "nll": nll, "word_ins": word.detach(),
                "length": length.detach(), "ntokens": n}
        return total, logs

    @torch.no_grad()
    def generate(self, src: torch.Tensor, length_beam: int | None = None, **_) -> list[list[int]]:
        """One parallel pass per candidate length; keeps the candidate with the best mean
        token log-probability. Returns token ids per sentence (no specials)."""
        beam = length_beam or self.cfg.length_beam
        memory, src_pad = self.encode(src)
        n = src.size(0)
        src_len = (~src_pad).sum(1)
        predicted = self.length_logits(memory, src_pad).argmax(-1) - self.offset + src_len
        shifts = torch.arange(beam, device=src.device) - beam // 2
        lengths = (predicted[:, None] + shifts[None]).clamp(min=1).flatten()  # (n * beam)
        rows = torch.arange(n, device=src.device).repeat_interleave(beam)
        tgt_pad = torch.arange(int(lengths.max()), device=src.device)[None] >= lengths[:, None]
        logits = self.decode(src[rows], src_pad[rows], memory[rows], tgt_pad).float()
        special = [self.cfg.pad, self.cfg.bos, self.cfg.eos, self.cfg.mask]
        logits[..., special] = float("-inf")  # never emitted as words
        lprobs, tokens = torch.log_softmax(logits, -1).max(-1)
        score = lprobs.masked_fill(tgt_pad, 0).sum(1) / lengths
        best = score.view(n, beam).argmax(1) + torch.arange(n, device=src.device) * beam
        return [tokens[r, : lengths[r]].tolist() for r in best.tolist()]

    # -- pieces (encode() comes from EncoderDecoder) ----------------------------------------
    def length_logits(self, memory, src_pad):
        keep = (~src_pad).unsqueeze(-1).to(memory.dtype)
        pooled = (memory * keep).sum(1) / keep.sum(1).clamp(min=1)
        return self.length_head(pooled)

    def decoder_input(self, src, src_pad, tgt_pad) -> torch.Tensor:
        if self.cfg.decoder_input == "mask":
            x = self.embed.tokens(torch.full_like(tgt_pad, self.cfg.mask, dtype=torch.long))
        else:
            x = self.embed.tokens(uniform_copy(src, src_pad, tgt_pad, self.cfg.eos, self.cfg.pad))
        return self.embed.add_positions(x)

    def decode(self, src, src_pad, memory, tgt_pad) -> torch.Tensor:
        h = self.decoder(self.decoder_input(src, src_pad, tgt_pad), key_mask(tgt_pad),
                         memory, key_mask(src_pad))
        return self.embed.logits(h)


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
