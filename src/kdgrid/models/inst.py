"""Insertion Transformer (Stern et al. 2019), slot-based with parallel (multiple-slot) decoding.

Each slot between neighbouring tokens of bos + content + eos is represented by its two hidden
states; a distribution over words, with eos meaning "insert nothing here", is predicted per slot.
Training deletes random target tokens and, per slot, spreads the target over the words missing
there by the balanced-binary-tree weights softmax(-|centre - i| / tau), which teaches the model to
insert the middle word first (log-many parallel steps); a slot with nothing missing targets eos.
The loss of a sentence is the mean of its slots' cross-entropies against these soft targets (Stern
et al., eq. 7: 1/(k+1) over the k+1 slots), label-smoothed like every other kind's token loss
((1 - e) * CE + e * uniform CE); the batch loss is the mean over sentences.
Decoding starts from the empty sequence and inserts at most one word per slot per iteration
until every slot chooses eos, or `max_iter`; length is capped at a * |x| + b.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kdgrid.models.configs import InsTConfig
from kdgrid.models.edits import expert_edits
from kdgrid.models.layers import EncoderDecoder, init_linear, key_mask
from kdgrid.models.levt import frame, pad_rows
from kdgrid.models.noise import random_delete
from kdgrid.refine import State, empty_start, refine


class InsertionTransformer(EncoderDecoder):
    kind = "inst"
    config_class = InsTConfig

    def __init__(self, cfg: InsTConfig):
        super().__init__(cfg)
        self.slot = nn.Linear(2 * cfg.d_model, cfg.d_model)
        init_linear(self)

    def slot_logits(self, tokens, memory, src_pad) -> torch.Tensor:
        """(N, T+1, V): slot j lies between framed positions j and j+1."""
        framed = frame(tokens, self.cfg.pad, self.cfg.bos, self.cfg.eos)
        h = self.decoder(self.embed(framed), key_mask(framed.eq(self.cfg.pad)), memory, key_mask(src_pad))
        slots = torch.cat([h[:, :-1], h[:, 1:]], -1)
        return self.embed.logits(self.slot(slots))

    def tree_weights(self, k: int) -> list[float]:
        centre = (k - 1) / 2
        w = [math.exp(-abs(centre - i) / self.cfg.tree_temperature) for i in range(k)]
        return [x / sum(w) for x in w]

    def loss(self, batch: dict, label_smoothing: float = 0.0):
        cfg, src, tgt = self.cfg, batch["src"], batch["tgt"]
        memory, src_pad = self.encode(src)
        partial, _ = random_delete(tgt, cfg.pad)
        rows, slots, words, weights, n_slots = [], [], [], [], 0
        for r, (p, y) in enumerate(zip(partial, tgt)):
            inserts = expert_edits(p[p.ne(cfg.pad)].tolist(), y[y.ne(cfg.pad)].tolist())[2]
            for j, missing in enumerate(inserts):
                targets = list(zip(missing, self.tree_weights(len(missing)))) if missing else [(cfg.eos, 1.0)]
                for w, weight in targets:
                    rows.append(r)
                    slots.append(j)
                    words.append(w)
                    weights.append(weight)
            n_slots += len(inserts)
        lprobs = torch.log_softmax(self.slot_logits(partial, memory, src_pad).float(), -1)
        r, j, w = (torch.tensor(x, device=tgt.device) for x in (rows, slots, words))
        ce = torch.zeros(lprobs.shape[:2], device=tgt.device)  # soft-target CE per (sentence, slot)
        ce.index_put_((r, j), -torch.tensor(weights, device=tgt.device) * lprobs[r, j, w], accumulate=True)
        real = torch.zeros(lprobs.shape[:2], dtype=torch.bool, device=tgt.device)
        real[r, j] = True
        slots_per_sentence = real.sum(1)
        per_sentence = lambda x: ((x * real).sum(1) / slots_per_sentence).mean()  # noqa: E731
        nll = per_sentence(ce)
        loss = per_sentence((1 - label_smoothing) * ce - label_smoothing * lprobs.mean(-1)) \
            if label_smoothing else nll
        return loss, {"loss": loss.detach(), "nll": nll.detach(), "ntokens": n_slots}

    @torch.no_grad()
    def generate(self, src, max_iter: int | None = None, adaptive: bool | None = None,
                 return_steps: bool = False, **_):
        return refine(self, src, self.cfg.max_iter if max_iter is None else max_iter,
                      adaptive=self.cfg.adaptive if adaptive is None else adaptive,
                      return_steps=return_steps)

    def initial(self, src, memory, src_pad, length_beam: int):
        return empty_start(src, self.cfg.pad)

    def step(self, state: State, src, memory, src_pad, step: int, max_iter: int) -> State:
        cfg = self.cfg
        lengths = state.tokens.ne(cfg.pad).sum(1)
        logits = self.slot_logits(state.tokens, memory, src_pad).float()
        logits[..., [cfg.pad, cfg.bos, cfg.mask]] = float("-inf")
        best, words = torch.log_softmax(logits, -1).max(-1)
        insert = words.ne(cfg.eos) & (torch.arange(words.size(1), device=src.device)[None] <= lengths[:, None])
        cap = ((~src_pad).sum(1).float() * cfg.max_len_a).long() + cfg.max_len_b
        room = (cap - lengths).clamp(min=0)[:, None]
        insert &= insert.long().cumsum(1) <= room
        new_tokens, new_scores = [], []
        rows = zip(state.tokens.tolist(), state.scores.tolist(), words.tolist(), best.tolist(),
                   insert.tolist(), lengths.tolist())
        for t, s, w, b, ins, n in rows:
            row_t, row_s = [], []
            for j in range(n + 1):
                if ins[j]:
                    row_t.append(w[j])
                    row_s.append(b[j])
                if j < n:
                    row_t.append(t[j])
                    row_s.append(s[j])
            new_tokens.append(row_t)
            new_scores.append(row_s)
        return State(pad_rows(new_tokens, cfg.pad, src.device), pad_rows(new_scores, 0.0, src.device, torch.float))
