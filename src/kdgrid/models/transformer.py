"""Autoregressive Transformer (Vaswani et al. 2017): the teachers and the AT students."""

from __future__ import annotations

import torch

from kdgrid import search
from kdgrid.errors import KdgridError
from kdgrid.models.configs import TransformerConfig
from kdgrid.models.layers import (
    CAUSAL,
    EncoderDecoder,
    init_linear,
    key_mask,
    reorder_cache,
)
from kdgrid.models.terms import LossTerms, compose


class Transformer(EncoderDecoder):
    kind = "transformer"
    config_class = TransformerConfig
    autoregressive = True  # decodes with kdgrid.search; can rescore NAT candidates
    # word-level KD's record (kdgrid.kd.word): which of the teacher's positions the student's align with
    distilled_positions = "every target position, eos included"

    def __init__(self, cfg: TransformerConfig):
        super().__init__(cfg)
        init_linear(self)

    # -- the two faces every model has ------------------------------------------------------
    def loss(self, batch: dict, label_smoothing: float = 0.0):
        return compose(self.loss_terms(batch), label_smoothing)

    def loss_terms(self, batch: dict) -> LossTerms:
        """decode(tgt_in) predicts tgt_out at every position, eos included."""
        if self.cfg.masked_outputs:
            raise KdgridError("a Transformer with masked_outputs (converted from fairseq) decodes and scores; "
                              "kdgrid does not train it")
        memory, src_pad = self.encode(batch["src"])
        return LossTerms(self.embed, self.states(batch["tgt_in"], memory, src_pad), batch["tgt_out"], self.cfg.pad)

    @torch.no_grad()
    def generate(self, src: torch.Tensor, method: str = "beam", **options) -> list[list[int]]:
        """Token ids per sentence, without bos/eos. method: beam | greedy | sample | sample_topk."""
        return search.generate(self, src, method, **options)

    # -- pieces the search uses (and encode() from EncoderDecoder) ---------------------------
    def decode(self, prev: torch.Tensor, memory, src_pad) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) for every position of `prev` (bos + target)."""
        return self.output(self.states(prev, memory, src_pad))

    def output(self, h: torch.Tensor) -> torch.Tensor:
        """The output layer (the tied embeddings), -inf at cfg.masked_outputs."""
        logits = self.embed.logits(h)
        if self.cfg.masked_outputs:
            if getattr(self, "_masked", None) is None or self._masked.device != logits.device:
                self._masked = torch.tensor(self.cfg.masked_outputs, device=logits.device)  # once per device
            logits = logits.index_fill(-1, self._masked, float("-inf"))
        return logits

    def states(self, prev: torch.Tensor, memory, src_pad) -> torch.Tensor:
        """Teacher-forced decoder output states (B, T, d), before the output layer."""
        return self.decoder(self.embed_target(prev), CAUSAL, memory, key_mask(src_pad))

    def embed_target(self, prev: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Decoder input embeddings of `prev`, whose first column is position `start`."""
        return self.embed(prev, start)

    def sequence_logprob(self, prev: torch.Tensor, gold: torch.Tensor, memory, src_pad) -> torch.Tensor:
        """Teacher-forced log p(y|x) per sentence (B,): `prev` is bos + y, `gold` is y + eos
        (pad after it); the sum runs over gold's non-pad tokens, eos included."""
        logits = self.decode(prev, memory, src_pad).float()
        tok = logits.gather(-1, gold.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        return tok.masked_fill(gold.eq(self.cfg.pad), 0.0).sum(1)

    def decode_step(self, prev: torch.Tensor, memory, src_pad, cache: list | None) -> torch.Tensor:
        """Log-probabilities (B, V) of the next token after the prefixes `prev` (B, t).

        With a cache only the last token is run through the decoder (keys/values of earlier
        steps are in the cache); without one the whole prefix is recomputed. Both must agree."""
        if cache is None:
            logits = self.decode(prev, memory, src_pad)[:, -1]
        else:
            x = self.embed_target(prev[:, -1:], start=prev.size(1) - 1)
            h = self.decoder(x, None, memory, key_mask(src_pad), cache)
            logits = self.output(h)[:, -1]
        return torch.log_softmax(logits.float(), dim=-1)

    @staticmethod
    def reorder(cache: list | None, rows: torch.Tensor) -> None:
        if cache is not None:
            reorder_cache(cache, rows)
