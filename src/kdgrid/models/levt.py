"""Levenshtein Transformer (Gu et al. 2019): deletion, placeholder insertion and token prediction
heads over one non-causal decoder, trained by imitation of the edit-distance expert.

Training (one roll-in per head): the target with random tokens deleted is the insertion input,
labelled with the expert's placeholder count per slot; the target with <mask> at the deleted
positions is the fill input, labelled with the missing words; the model's own fill output is the
deletion input, labelled with the expert's deletions against the target (dual policy).
Decoding starts from the empty sequence; each iteration deletes, inserts placeholders and fills
them, until the output stops changing or `max_iter`; length is capped at a * |x| + b.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdgrid.models.configs import LevTConfig
from kdgrid.models.edits import expert_edits
from kdgrid.models.layers import EncoderDecoder, init_linear, key_mask, smoothed_nll
from kdgrid.models.noise import random_delete
from kdgrid.refine import State, empty_start, refine


def frame(tokens: torch.Tensor, pad: int, bos: int, eos: int) -> torch.Tensor:
    """Content tokens (N, T) -> bos + content + eos (N, T+2), right-padded."""
    n, t = tokens.shape
    lengths = tokens.ne(pad).sum(1)
    out = torch.full((n, t + 2), pad, dtype=tokens.dtype, device=tokens.device)
    out[:, 0] = bos
    out[:, 1: t + 1] = tokens
    out[torch.arange(n, device=tokens.device), lengths + 1] = eos
    return out


def placeholder_targets(kept, real, slots: int, classes: int) -> torch.Tensor:
    """The expert's placeholder count per slot when the input is the subsequence `kept` of the
    target: slot s gets the deleted tokens that follow exactly s kept ones. -100 past the last
    slot of a row (ignored by the loss)."""
    counts = torch.zeros(len(kept), slots, dtype=torch.long, device=kept.device)
    counts.scatter_add_(1, kept.long().cumsum(1).clamp(max=slots - 1), (real & ~kept).long())
    outside = torch.arange(slots, device=kept.device)[None] > kept.sum(1, keepdim=True)
    return counts.clamp(max=classes - 1).masked_fill(outside, -100)


def pad_rows(rows: list[list], pad, device, dtype=torch.long) -> torch.Tensor:
    width = max(max((len(r) for r in rows), default=0), 1)
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=dtype, device=device)


class LevT(EncoderDecoder):
    kind = "levt"
    config_class = LevTConfig

    def __init__(self, cfg: LevTConfig):
        super().__init__(cfg)
        self.del_head = nn.Linear(cfg.d_model, 2)
        self.ins_head = nn.Linear(2 * cfg.d_model, cfg.placeholder_classes)
        init_linear(self)

    # -- heads -----------------------------------------------------------------------------
    def hidden(self, tokens, memory, src_pad):
        framed = frame(tokens, self.cfg.pad, self.cfg.bos, self.cfg.eos)
        return self.decoder(self.embed(framed), key_mask(framed.eq(self.cfg.pad)), memory, key_mask(src_pad))

    # Content token t sits at framed position t+1; slot j lies between framed positions j, j+1.
    def deletions(self, h):
        return self.del_head(h[:, 1:-1])  # (N, T, 2)

    def placeholders(self, h):
        return self.ins_head(torch.cat([h[:, :-1], h[:, 1:]], -1))  # (N, T+1, classes)

    def words(self, h):
        return self.embed.logits(h[:, 1:-1])  # (N, T, V)

    def word_choices(self, word_logits):
        """Log-probabilities over the words a placeholder may take: never pad, bos, eos or <mask>.
        Training's roll-in uses it too: pad's tied logit is 0, which an untrained model's argmax
        often picks, and frame() would then put eos over a real token."""
        cfg = self.cfg
        word_logits = word_logits.float().clone()
        word_logits[..., [cfg.pad, cfg.bos, cfg.eos, cfg.mask]] = float("-inf")
        return torch.log_softmax(word_logits, -1)

    # -- training --------------------------------------------------------------------------
    def loss(self, batch: dict, label_smoothing: float = 0.0):
        cfg, src, tgt = self.cfg, batch["src"], batch["tgt"]
        memory, src_pad = self.encode(src)
        real = tgt.ne(cfg.pad)
        rows = [t[t.ne(cfg.pad)].tolist() for t in tgt]
        # placeholder insertion: random deletions of the target. The input is a subsequence of
        # the target, so the expert's count for slot s is the number of deleted tokens that
        # follow exactly s kept ones.
        ins_in, kept = random_delete(tgt, cfg.pad)
        ins_logits = self.placeholders(self.hidden(ins_in, memory, src_pad))
        ins_target = placeholder_targets(kept, real, ins_logits.size(1), cfg.placeholder_classes)
        mask_ins = F.cross_entropy(ins_logits.flatten(0, 1).float(), ins_target.flatten(), ignore_index=-100)
        # token prediction at the placeholders of the expert's insertion
        masked = real & ~kept
        fill_in = tgt.masked_fill(masked, cfg.mask)
        word_logits = self.words(self.hidden(fill_in, memory, src_pad))
        word, nll, n = smoothed_nll(word_logits, tgt.masked_fill(~masked, cfg.pad), cfg.pad, label_smoothing)
        # deletion of the model's own fill output, labelled by the expert
        guess = torch.where(masked, self.word_choices(word_logits.detach()).argmax(-1), tgt)
        delete = [expert_edits(g[:len(y)].tolist(), y)[0] for g, y in zip(guess, rows)]
        del_logits = self.deletions(self.hidden(guess, memory, src_pad))
        del_target = pad_rows(delete, -100, tgt.device)
        word_del = F.cross_entropy(del_logits.flatten(0, 1).float(), del_target.flatten(), ignore_index=-100)
        total = mask_ins + word + word_del
        return total, {"loss": total.detach(), "nll": nll, "mask_ins": mask_ins.detach(),
                       "word_ins": word.detach(), "word_del": word_del.detach(), "ntokens": n}

    # -- decoding --------------------------------------------------------------------------
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
        tokens, scores = state.tokens, state.scores
        real = tokens.ne(cfg.pad)
        if real.any():  # 1. delete
            keep = real & (self.deletions(self.hidden(tokens, memory, src_pad)).argmax(-1) == 0)
            tokens = pad_rows([t[k].tolist() for t, k in zip(tokens, keep)], cfg.pad, src.device)
            scores = pad_rows([s[k].tolist() for s, k in zip(scores, keep)], 0.0, src.device, torch.float)
        # 2. insert placeholders, within the length cap
        lengths = tokens.ne(cfg.pad).sum(1)
        ins_logits = self.placeholders(self.hidden(tokens, memory, src_pad))
        ins_logits[..., 0] -= cfg.insertion_penalty
        counts = ins_logits.argmax(-1)
        counts = counts.masked_fill(torch.arange(counts.size(1), device=src.device)[None] > lengths[:, None], 0)
        cap = ((~src_pad).sum(1).float() * cfg.max_len_a).long() + cfg.max_len_b
        room = (cap - lengths).clamp(min=0)[:, None]
        before = counts.cumsum(1) - counts
        counts = torch.minimum(counts, (room - before).clamp(min=0))
        new_tokens, new_scores = [], []
        for t, s, c, n in zip(tokens.tolist(), scores.tolist(), counts.tolist(), lengths.tolist()):
            row_t, row_s = [], []
            for j in range(n + 1):
                row_t += [cfg.mask] * c[j]
                row_s += [0.0] * c[j]
                if j < n:
                    row_t.append(t[j])
                    row_s.append(s[j])
            new_tokens.append(row_t)
            new_scores.append(row_s)
        tokens = pad_rows(new_tokens, cfg.pad, src.device)
        scores = pad_rows(new_scores, 0.0, src.device, torch.float)
        holes = tokens.eq(cfg.mask)
        if holes.any():  # 3. fill the placeholders
            best, words = self.word_choices(self.words(self.hidden(tokens, memory, src_pad))).max(-1)
            tokens = torch.where(holes, words, tokens)
            scores = torch.where(holes, best, scores)
        return State(tokens, scores)
