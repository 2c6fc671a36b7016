"""Mixture-of-experts teacher (hMoE of Shen et al. 2019, "Mixture Models for Diverse Machine
Translation"), as fairseq's examples/translation_moe builds it.

K experts share every parameter of one Transformer and differ only in the decoder's start token:
expert k's first decoder input is its own learned vector instead of bos's embedding. Inside the
model expert k's start token has id `vocab_size + k`, one past the vocabulary, so it can never be
predicted; `embed_target` maps those ids to the expert vectors.

Training is hard EM with online responsibilities. Per sentence, each expert's log-likelihood
log p(y|x,k) (token-summed NLL, eos included) is computed in eval mode (no dropout) and without
gradient; with the prior, the joint log p(k|x) + log p(y|x,k) picks the winning expert, and only
the winner's label-smoothed loss is back-propagated, with dropout. The E-step draws no random
numbers, so the dropout stream (and with it a resumed run) is the same as without it.

The E-step's score is a choice: kdgrid ranks experts by the plain NLL -log p(y|x,k), the model's
own likelihood, which is what hard EM maximises and what `expert="mixture_best"` decoding scores with.
The alternative, fairseq's translation_moe, scores with its training criterion's per-sentence loss,
i.e. the label-smoothed loss (label smoothing 0.1 in its example), which adds the smoothing term
(mean -log p over the vocabulary) to each expert's score; it can pick another winner where two
experts are close, never where one clearly fits the sentence better.

The prior p(k|x) is `uniform` (no parameters; hMoEup) or `learned` (hMoElp): a gate over the
mean-pooled encoder states, trained with -log p(k|x) of the winner, summed over sentences and
divided by the target tokens like the word loss (fairseq's normalisation). Its gradient reaches the
encoder too, as in fairseq.

Decoding picks ONE expert per sentence unless told otherwise, as fairseq's translation_moe does
(`--gen-expert`, default 0): one expert is one consistent style, so its output is simpler, and the
experts can differ a lot (Zhou et al. 2020, section 5). `expert`:
- an int k: expert k decodes every sentence (the `moe` method's `expert: each` columns moe0..);
- "prior" (the default, also None): the latent code comes from the prior p(k|x). For beam and
  greedy, per sentence its most likely expert (ties: the lower k), so with a uniform prior every
  sentence decodes with expert 0, fairseq's default. For sample and sample_topk it is ancestral
  sampling from the mixture: k ~ p(k|x) per sentence with a generator seeded from `seed`, then
  y ~ p(y|x,k) -- a sample of the model, not a mode-seeking rerank of K samples.
- "mixture_best" (an explicit opt-in): every expert decodes and, per sentence, the output the
  mixture scores highest is kept: log p(y|x) = logsumexp_k [log p(k|x) + log p(y|x,k)],
  teacher-forced, divided by (len(y) + 1) ** lenpen like beam search's own ranking (kdgrid's
  choice; lenpen 0 compares the plain log-probabilities). With `nbest` (beam search's n-best
  lists, e.g. for sequence-level interpolation) it pools the distinct candidates of every
  expert's n-best list and returns the `nbest` of highest mixture score, as (mixture score, ids).
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from kdgrid import search
from kdgrid.batching import pad_stack
from kdgrid.errors import KdgridError
from kdgrid.models.configs import MIXTURE_BEST, PRIOR_EXPERT, SEED_STRIDE, MoEConfig
from kdgrid.models.layers import init_linear, smoothed_nll
from kdgrid.models.transformer import Transformer

SAMPLING = ("sample", "sample_topk")  # methods whose prior expert is drawn, not the prior's argmax
LENPEN = 1.0  # kdgrid.search's default length penalty


class MeanPoolGate(nn.Module):
    """log p(k|x): mean of the encoder states over the source words, tanh layer, dropout, K logits."""

    def __init__(self, d_model: int, experts: int, dropout: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, d_model), nn.Linear(d_model, experts)
        self.dropout = nn.Dropout(dropout)

    def forward(self, memory, src_pad):
        keep = (~src_pad).unsqueeze(-1).to(memory.dtype)
        pooled = (memory * keep).sum(1) / keep.sum(1).clamp(min=1)
        return torch.log_softmax(self.fc2(self.dropout(torch.tanh(self.fc1(pooled)))).float(), -1)


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


class MoE(Transformer):
    kind = "moe"
    config_class = MoEConfig
    # Not the Transformer's: the loss scores each sentence under the expert of highest likelihood
    # (hard EM) and adds the gate's term; an MoE is a teacher, not a KD student (KD_KINDS).
    loss_terms = None
    distilled_positions = None

    def __init__(self, cfg: MoEConfig):
        super().__init__(cfg)
        self.experts = nn.Parameter(torch.empty(cfg.experts, cfg.d_model))
        nn.init.normal_(self.experts, mean=0.0, std=cfg.d_model**-0.5)  # as the token embeddings
        self.gate = MeanPoolGate(cfg.d_model, cfg.experts, cfg.dropout) if cfg.prior == "learned" else None
        if self.gate is not None:
            init_linear(self.gate)

    # -- expert start tokens ----------------------------------------------------------------
    def start_token(self, expert):
        """Expert k's start id (an int, or a (B,) tensor for a tensor of experts)."""
        return self.cfg.vocab_size + expert

    def with_start(self, prev: torch.Tensor, expert) -> torch.Tensor:
        """`prev` (bos + y) with its first column replaced by expert(s) `expert`'s start token."""
        out = prev.clone()
        out[:, 0] = self.start_token(expert)
        return out

    def embed_target(self, prev: torch.Tensor, start: int = 0) -> torch.Tensor:
        vocab = self.cfg.vocab_size
        is_start = prev >= vocab
        x = self.embed.tokens(prev.masked_fill(is_start, self.cfg.pad))
        vectors = self.experts[(prev - vocab).clamp(0, self.cfg.experts - 1)] * self.embed.scale
        x = torch.where(is_start.unsqueeze(-1), vectors.to(x.dtype), x)
        return self.embed.add_positions(x, start)

    # -- the mixture ------------------------------------------------------------------------
    def prior_logprobs(self, memory, src_pad) -> torch.Tensor:
        """log p(k|x), (B, K)."""
        if self.gate is None:
            return memory.new_full((memory.size(0), self.cfg.experts), -math.log(self.cfg.experts),
                                   dtype=torch.float32)
        return self.gate(memory, src_pad)

    def expert_logprobs(self, prev, gold, memory, src_pad) -> torch.Tensor:
        """log p(y|x,k) per sentence and expert, (B, K): one teacher-forced pass per expert (a
        loop, not a K-times batch: the peak memory stays that of one pass)."""
        score = super().sequence_logprob
        return torch.stack([score(self.with_start(prev, k), gold, memory, src_pad)
                            for k in range(self.cfg.experts)], 1)

    def joint_logprobs(self, prev, gold, memory, src_pad) -> torch.Tensor:
        """log p(k|x) + log p(y|x,k), (B, K)."""
        return self.prior_logprobs(memory, src_pad) + self.expert_logprobs(prev, gold, memory, src_pad)

    def sequence_logprob(self, prev, gold, memory, src_pad) -> torch.Tensor:
        """The mixture's log p(y|x) = logsumexp_k [log p(k|x) + log p(y|x,k)], (B,)."""
        return self.joint_logprobs(prev, gold, memory, src_pad).logsumexp(1)

    # -- training: hard EM ------------------------------------------------------------------
    def responsibilities(self, batch: dict) -> torch.Tensor:
        """E-step: the joint log-probabilities (B, K) without dropout and without gradient."""
        with torch.no_grad(), _eval_mode(self):
            memory, src_pad = self.encode(batch["src"])
            return self.joint_logprobs(batch["tgt_in"], batch["tgt_out"], memory, src_pad)

    def loss(self, batch: dict, label_smoothing: float = 0.0):
        joint = self.responsibilities(batch)
        winners = joint.argmax(1)  # the expert of highest likelihood (ties: the lower k)
        memory, src_pad = self.encode(batch["src"])
        logits = self.decode(self.with_start(batch["tgt_in"], winners), memory, src_pad)
        loss, nll, n = smoothed_nll(logits, batch["tgt_out"], self.cfg.pad, label_smoothing)
        logs = {"nll": nll, "mix_nll": (-joint.logsumexp(1).sum() / n).detach()}
        if self.gate is not None:
            gate = -self.gate(memory, src_pad).gather(1, winners[:, None]).sum() / n
            loss = loss + gate
            logs["gate"] = gate.detach()
        usage = torch.bincount(winners, minlength=self.cfg.experts).float() / winners.numel()
        logs.update({f"expert{k}": usage[k] for k in range(self.cfg.experts)})
        return loss, {"loss": loss.detach(), **logs, "ntokens": n}

    # -- decoding ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, src: torch.Tensor, method: str = "beam", expert=PRIOR_EXPERT, **options) -> list[list[int]]:
        """Token ids per sentence, without specials. expert: an int (that expert decodes with
        `method`), "prior"/None (per sentence the prior's expert: its argmax, or a draw for the
        sampling methods) or "mixture_best" (every expert decodes; the mixture's best output)."""
        encoded = self.encode(src)
        if expert == MIXTURE_BEST:
            return self._best(src, method, encoded, options)
        if expert is None or expert == PRIOR_EXPERT:
            return self._decode_by_expert(src, self.prior_experts(encoded, method, options.get("seed")),
                                          method, encoded, options)
        if isinstance(expert, bool) or not isinstance(expert, int) or not 0 <= expert < self.cfg.experts:
            raise KdgridError(f"expert must be 0..{self.cfg.experts - 1}, {PRIOR_EXPERT!r} or {MIXTURE_BEST!r}, "
                              f"got {expert!r}")
        return self.decode_expert(src, expert, method, encoded, options)

    def expert_choice(self, method: str, expert=PRIOR_EXPERT) -> str:
        """In words, which expert decodes each sentence (for the scores' record)."""
        if expert == MIXTURE_BEST:
            return "mixture_best: every expert decodes, per sentence the output of highest mixture score"
        if isinstance(expert, int) and not isinstance(expert, bool):
            return f"expert {expert} for every sentence"
        if method in SAMPLING:
            return f"prior: per sentence an expert drawn from p(k|x) ({self.cfg.prior}), then {method} from it"
        return (f"prior: per sentence the most likely expert under p(k|x) ({self.cfg.prior}"
                + (": expert 0 for every sentence)" if self.cfg.prior == "uniform" else ")"))

    def prior_experts(self, encoded, method: str, seed: int | None = None) -> torch.Tensor:
        """The expert of each sentence under the prior, (B,) on the CPU: drawn from p(k|x) for the
        sampling methods (seeded: the same seed draws the same experts), else its argmax."""
        log_prior = self.prior_logprobs(*encoded).float().cpu()
        if method not in SAMPLING:
            return log_prior.argmax(1)  # the first maximum: the lower k on ties (uniform: expert 0)
        gen = torch.Generator().manual_seed(_stream(seed, SEED_STRIDE - 1))
        return torch.multinomial(log_prior.exp(), 1, generator=gen).squeeze(1)

    def _decode_by_expert(self, src, experts: torch.Tensor, method: str, encoded, options: dict) -> list:
        """Each sentence decoded with its own expert: one search per expert over its sentences (a
        sampling seed becomes each expert's own stream, _stream)."""
        memory, src_pad = encoded
        out: list = [None] * src.size(0)
        for k in experts.unique().tolist():
            rows = (experts == k).nonzero().squeeze(1)
            idx = rows.to(src.device)
            opts = dict(options)
            if opts.get("seed") is not None:
                opts["seed"] = _stream(opts["seed"], k)
            hyps = self.decode_expert(src[idx], k, method, (memory[idx], src_pad[idx]), opts)
            for i, h in zip(rows.tolist(), hyps):
                out[i] = h
        return out

    def decode_expert(self, src, expert: int, method: str, encoded, options: dict) -> list[list[int]]:
        return search.generate(_Expert(self, expert, encoded), src, method, **options)

    def _best(self, src, method, encoded, options) -> list:
        """Every expert decodes; per sentence the candidate of highest mixture score. With `nbest`
        (beam search's n-best lists), the pooled distinct candidates of all experts' n-best lists,
        as (mixture score, ids), best first, the `nbest` first of them."""
        candidates = [self.decode_expert(src, k, method, encoded, options) for k in range(self.cfg.experts)]
        nbest = options.get("nbest") or 0
        pools = []
        for i in range(src.size(0)):  # distinct candidates, in expert order (ties: the lower expert)
            hyps = [h for k in range(self.cfg.experts)
                    for h in ([ids for _, ids in candidates[k][i]] if nbest else [candidates[k][i]])]
            pools.append([list(h) for h in dict.fromkeys(map(tuple, hyps))])
        rows = [(i, h) for i, pool in enumerate(pools) for h in pool]
        memory, src_pad = encoded
        lenpen = options.get("lenpen", LENPEN)
        scores = []
        for at in range(0, len(rows), src.size(0)):  # chunks of the batch size: bounded memory
            chunk = rows[at: at + src.size(0)]
            which = torch.tensor([i for i, _ in chunk], device=memory.device)
            scores += self._mixture_score([h for _, h in chunk], memory[which], src_pad[which], lenpen).tolist()
        ranked: list[list[tuple[float, list[int]]]] = [[] for _ in pools]
        for (i, h), score in zip(rows, scores):
            ranked[i].append((score, h))
        for r in ranked:
            r.sort(key=lambda c: -c[0])  # stable: equal scores keep the expert order
        if nbest:
            return [r[:nbest] for r in ranked]
        return [r[0][1] for r in ranked]

    def _mixture_score(self, hyps, memory, src_pad, lenpen: float) -> torch.Tensor:
        cfg = self.cfg
        prev = pad_stack(hyps, cfg.pad, prefix=cfg.bos).to(memory.device)
        gold = pad_stack(hyps, cfg.pad, suffix=cfg.eos).to(memory.device)
        lengths = gold.ne(cfg.pad).sum(1).float()  # tokens + eos
        return self.sequence_logprob(prev, gold, memory, src_pad) / lengths**lenpen


def _stream(seed, k: int) -> int:
    """The seed of stream k (< SEED_STRIDE) of a call seeded `seed` (None: 0), within torch's range."""
    return ((0 if seed is None else int(seed)) * SEED_STRIDE + k) % 2**63


class _Expert:
    """The MoE as kdgrid.search sees one plain AT model: expert k's start token in place of bos.
    The encoder output is computed once for all experts."""

    def __init__(self, model: MoE, expert: int, encoded):
        self.model, self.cfg, self.encoded = model, model.cfg, encoded
        self.start = model.start_token(expert)

    def encode(self, src):
        return self.encoded

    def decode_step(self, prev, memory, src_pad, cache):
        prev = prev.clone()
        prev[:, 0] = self.start
        return self.model.decode_step(prev, memory, src_pad, cache)

    def reorder(self, cache, rows) -> None:
        self.model.reorder(cache, rows)
