"""Rescoring of NAT candidates by an autoregressive model (Gu et al. 2018's noisy parallel
decoding; FlowSeq's NPD with AT rescoring).

A NAT that decodes several candidates per sentence (a length beam, FlowSeq's latent samples)
keeps by default the one with its own best mean token log-probability. A `Rescorer` replaces that
ranking: each candidate is scored by an AT model's teacher-forced log-probability of it, EOS
included, divided by its length + 1 (so that short candidates are not favoured). Candidates are
scored in parallel, one decoder pass per chunk, which keeps this far cheaper than AT decoding.
"""

from __future__ import annotations

import torch

from kdgrid.batching import pad_stack
from kdgrid.errors import KdgridError


class Rescorer:
    def __init__(self, model, name: str = "rescorer", max_tokens: int = 4096):
        kind = getattr(model, "kind", type(model).__name__)
        if not getattr(model, "autoregressive", False) or not hasattr(model, "sequence_logprob"):
            raise KdgridError(f"{name}: rescoring needs an autoregressive model with teacher-forced scores "
                              f"(kind 'transformer' or 'moe'), got kind {kind!r}")
        self.model, self.name, self.max_tokens = model.eval(), name, max_tokens  # no dropout in scores

    @torch.no_grad()
    def __call__(self, src: torch.Tensor, hyps: list[list[int]]) -> torch.Tensor:
        """Mean log-probability per candidate (N,): row i of src (N, S) is the source of hyps[i]
        (token ids without specials)."""
        # the candidates of one sentence share its source: encode each distinct source once
        unique, which = torch.unique(src, dim=0, return_inverse=True)
        memory, src_pad = self.model.encode(unique)
        width = max(len(h) for h in hyps) + 1
        rows = max(1, self.max_tokens // width)  # bounds the (rows, T, vocab) logits in memory
        return torch.cat([self._score(memory[which[i : i + rows]], src_pad[which[i : i + rows]],
                                      hyps[i : i + rows]) for i in range(0, len(hyps), rows)])

    def _score(self, memory, src_pad, hyps):
        cfg = self.model.cfg
        prev = pad_stack(hyps, cfg.pad, prefix=cfg.bos).to(memory.device)
        gold = pad_stack(hyps, cfg.pad, suffix=cfg.eos).to(memory.device)
        # the decoder is causal, so the padding after a candidate's EOS cannot change its scores;
        # an MoE teacher scores under its mixture, log sum_k p(k|x) p(y|x,k)
        return self.model.sequence_logprob(prev, gold, memory, src_pad) / gold.ne(cfg.pad).sum(1)
