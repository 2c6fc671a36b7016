"""An ensemble of autoregressive teachers: one decoder whose next-token distribution combines its
members' at every step (kdgrid.models.configs.ENSEMBLE_COMBINES), so beam search, greedy and
sampling (kdgrid.search) run on it unchanged. It is not trained: its members are, and its model
file holds their weights (kdgrid.checkpoint), so it distils and is scored like any teacher."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from kdgrid import search
from kdgrid.errors import KdgridError
from kdgrid.models.configs import EnsembleConfig


class Memories:
    """The members' encoder outputs, indexed by rows together (the search keeps, duplicates and
    drops sentences with memory[rows])."""

    def __init__(self, parts: list):
        self.parts = parts

    def __getitem__(self, rows) -> Memories:
        return Memories([m[rows] for m in self.parts])


class Ensemble(nn.Module):
    kind = "ensemble"
    config_class = EnsembleConfig
    autoregressive = True

    def __init__(self, cfg: EnsembleConfig):
        super().__init__()
        from kdgrid.models.registry import build  # the registry imports this module

        self.cfg = cfg
        self.members = nn.ModuleList(build(m["kind"], m["config"]) for m in cfg.members)

    @classmethod
    def of(cls, members: list, combine: str = "logprob_mean") -> Ensemble:
        """An ensemble of loaded models (their weights copied in)."""
        first = members[0].cfg
        cfg = EnsembleConfig(vocab_size=first.vocab_size, pad=first.pad, bos=first.bos, eos=first.eos,
                             members=[{"kind": m.kind, "config": dataclasses.asdict(m.cfg)} for m in members],
                             combine=combine)
        ensemble = cls(cfg)
        for mine, theirs in zip(ensemble.members, members):
            mine.load_state_dict(theirs.state_dict())
        return ensemble.to(next(members[0].parameters()).device).eval()

    def loss(self, batch: dict, label_smoothing: float = 0.0):
        raise KdgridError("an ensemble is not trained: train its members, then `kdgrid ensemble`")

    @torch.no_grad()
    def generate(self, src: torch.Tensor, method: str = "beam", **options) -> list[list[int]]:
        """Token ids per sentence, as Transformer.generate, from the combined distribution."""
        return search.generate(self, src, method, **options)

    # -- what kdgrid.search calls -------------------------------------------------------------
    def encode(self, src: torch.Tensor):
        parts = [member.encode(src) for member in self.members]
        return Memories([memory for memory, _ in parts]), parts[0][1]  # one source padding mask

    def decode_step(self, prev: torch.Tensor, memory: Memories, src_pad, cache: list | None) -> torch.Tensor:
        if cache is not None and not cache:
            cache.extend([] for _ in self.members)
        lprobs = torch.stack([member.decode_step(prev, part, src_pad, None if cache is None else cache[i])
                              for i, (member, part) in enumerate(zip(self.members, memory.parts))])
        if self.cfg.combine == "prob_mean":
            return lprobs.logsumexp(0) - math.log(len(self.members))
        return torch.log_softmax(lprobs.mean(0), dim=-1)

    def reorder(self, cache: list | None, rows: torch.Tensor) -> None:
        if cache is not None:
            for member, part in zip(self.members, cache):
                member.reorder(part, rows)
