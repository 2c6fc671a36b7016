"""Directed Acyclic Transformer (Huang et al. ICML 2022), kind `dat`.

The decoder runs over a graph of L_b = max(2, upsample x source tokens, eos included) vertices
whose inputs are bos, unk ... unk, eos plus the decoder's positions (the reference's; no source
copy). Each vertex emits a token (the tied output layer) and links to the later vertices: multi-
head transition scores on [final state; position] features, mixed by a gate per vertex
(kdgrid.models.dag). A target (bos and eos added) is one path through the graph from the first
vertex to the last; the loss is -log of the sum over every path, by dynamic programming in float32.
Decoding follows one path: lookahead (the default), greedy, joint-Viterbi or sampling.

Training with glancing (`glance:` in the config, the paper's recipe; kdgrid.kd.glance) uses the
gold target's best path (Viterbi): the vertices on it are what a first pass can get wrong and what
a glance fills with gold embeddings ("count_rounded": N = floor(wrong x p + 0.5) of them, as the
reference's scripts run it). force_emit (off by default): a glanced vertex emits its token surely
and every path passes it at that position (the reference's code today; its scripts ask the plain
loss of the paper).

A target longer than its graph has no path: it adds nothing to the loss, but still counts in the
batch mean (the reference), and the training job counts such pairs (kdgrid.models.feasibility).
Choices (recorded): the loss is the reference's per-sentence mean of -log P(y|x) / (target tokens
+ bos + eos) (`loss_norm: sentences`; `tokens` divides the batch's sum by its target tokens); the
link features take the body's fixed sinusoidal positions (the reference learns a separate table);
label smoothing does not apply (the reference refuses it): a smoothing value is ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from kdgrid.errors import KdgridError
from kdgrid.models import dag
from kdgrid.models.configs import DECODE_METHODS, DATConfig
from kdgrid.models.layers import EncoderDecoder, init_linear, key_mask
from kdgrid.models.terms import Glance, GlanceStart
from kdgrid.vocab import UNK

METHODS = DECODE_METHODS["dat"]


class DAT(EncoderDecoder):
    kind = "dat"
    config_class = DATConfig
    feasibility_rule = ("a pair is infeasible when its target tokens plus bos and eos outnumber the graph's "
                        "vertices, max(2, upsample x source tokens (eos included))")

    def __init__(self, cfg: DATConfig):
        super().__init__(cfg)
        d, self.link_heads = cfg.d_model, cfg.link_heads or cfg.heads
        self.link_query, self.link_key = nn.Linear(2 * d, d), nn.Linear(2 * d, d)
        self.link_gate = nn.Linear(2 * d, self.link_heads)
        init_linear(self)

    # -- the two faces every model has ------------------------------------------------------
    def loss(self, batch: dict, label_smoothing: float = 0.0, glance: Glance | None = None):
        """-log P(y | x) summed over every path of the graph; with `glance` (GLAT) the glanced
        vertices take their gold token's embedding as input."""
        start = self.glance_start(batch) if glance is None else glance.start
        inputs = start.inputs if glance is None else glance.inputs(self.embed)
        logits, links, graph_len = self._graph(inputs, start)
        target, tgt_len = self._target(batch["tgt"])
        forced = None
        if glance is not None and self.cfg.force_emit:
            forced = forced_positions(glance, target.size(1))
        log_lik = dag.log_likelihood(self._emissions(logits, target), links, tgt_len, graph_len, forced)
        feasible = tgt_len <= graph_len
        per_sentence = -torch.where(feasible, log_lik, 0.0)
        if self.cfg.loss_norm == "sentences":
            total = (per_sentence / tgt_len).mean()
        else:
            total = per_sentence.sum() / tgt_len.sum()
        ntokens = int(batch["tgt"].ne(self.cfg.pad).sum())
        return total, {"loss": total.detach(), "nll": total.detach(), "dag": total.detach(),
                       "infeasible_share": (~feasible).float().mean().detach(), "ntokens": ntokens}

    @torch.no_grad()
    def generate(self, src: torch.Tensor, method: str = "lookahead", beta: float = 1.0, viterbi_beta: float = 1.0,
                 temperature: float = 1.0, top_cand: int = 5, top_p: float = 0.9, seed: int | None = None,
                 **_) -> list[list[int]]:
        """One path per sentence through its graph (METHODS); returns token ids (no specials)."""
        if method not in METHODS:
            raise KdgridError(f"decode.method {method!r}: kind dat decodes by {', '.join(METHODS)}")
        start = self.glance_start({"src": src})
        logits, links, graph_len = self._graph(start.inputs, start)
        log_probs, c = logits.log_softmax(-1), self.cfg
        never = [c.pad, UNK, c.bos, c.eos, c.mask]  # unk as the AT search bans it (every input is unk)
        if method == "sample":
            generator = torch.Generator(device=src.device).manual_seed(0 if seed is None else int(seed))
            path, tokens = dag.sample(links, graph_len, log_probs, never, c.eos, generator, temperature, beta,
                                      top_cand, top_p)
            return dag.read_out(path, tokens, graph_len, dedup=False, per_step=True)
        score, token = dag.vertex_tokens(log_probs, graph_len, never, c.bos, c.eos)
        if method == "joint_viterbi":
            path = dag.joint_viterbi(links, graph_len, score, c.upsample, viterbi_beta)
        else:
            path = dag.walk(links, graph_len, score if method == "lookahead" else None, beta)
        return dag.read_out(path, token, graph_len)

    def choices(self) -> dict:
        """The readings of the paper this model was trained with, for scores.json."""
        c = self.cfg
        return {"loss_norm": {"sentences": "mean over sentences of -log P(y|x) / (target + bos + eos), "
                                           "the reference's", "tokens": "summed -log P(y|x) / (target + bos + eos) "
                                           "tokens of the batch"}[c.loss_norm],
                "force_emit": "glanced vertices emit surely, every path passes them (the reference's code)"
                if c.force_emit else "off: the plain loss over every path (the paper, the reference's scripts)",
                "graph": f"max(2, {c.upsample} x source tokens (eos included)) vertices; inputs bos, unk ... unk, eos",
                "links": f"{self.link_heads} gated heads on [state; sinusoidal position] (the reference learns "
                         "its link positions)",
                "label_smoothing": "not applied (the reference refuses it)"}

    # -- the pairs it can learn from (kdgrid.models.feasibility) ----------------------------
    def feasible(self, src_tokens: int, target: list[int]) -> bool:
        """Whether a target (bos and eos added) fits the graph of a source of `src_tokens` tokens (eos included)."""
        return len(target) + 2 <= max(2, self.cfg.upsample * src_tokens)

    @staticmethod
    def needed_positions_of(tgt):
        return tgt.lengths + 2

    def positions_of(self, src_tokens):
        return (self.cfg.upsample * src_tokens).clip(min=2)

    # -- glancing training (GLAT, kdgrid.kd.glance) ---------------------------------------
    glance_sampling = "count_rounded"

    def glance_start(self, batch: dict) -> GlanceStart:
        """The encoder once; the vertices' inputs: bos, unk ... unk, eos, then padding."""
        c = self.cfg
        memory, src_pad = self.encode(batch["src"])
        graph_len = (c.upsample * (~src_pad).sum(1)).clamp(min=2)
        vertex = torch.arange(int(graph_len.max()), device=memory.device)[None]
        out_pad = vertex >= graph_len[:, None]
        ids = torch.where(vertex == 0, c.bos, torch.where(vertex == (graph_len - 1)[:, None], c.eos, UNK))
        return GlanceStart(self.embed.tokens(ids.masked_fill(out_pad, c.pad)), out_pad, memory, src_pad)

    def glance_first(self, start: GlanceStart, batch: dict):
        """The first pass's argmax per vertex, the oracle (each vertex's token on the gold target's
        best path, unk off it) and the vertices on that path (none where the target has no path)."""
        logits, links, graph_len = self._graph(start.inputs, start)
        target, tgt_len = self._target(batch["tgt"])
        path, found = dag.best_path(self._emissions(logits, target), links, tgt_len, graph_len)
        on_path = path >= 0
        rows = torch.arange(len(path), device=path.device)[:, None].expand_as(path)
        oracle = torch.full(start.out_pad.shape, UNK, dtype=torch.long, device=path.device)
        eligible = torch.zeros(start.out_pad.shape, dtype=torch.bool, device=path.device)
        oracle[rows[on_path], path[on_path]] = target[on_path]
        eligible[rows[on_path], path[on_path]] = True
        return logits.argmax(-1), oracle, eligible

    # -- pieces ----------------------------------------------------------------------------
    def _target(self, tgt: torch.Tensor):
        """bos + target + eos, padded (B, T + 2), and each one's length."""
        c = self.cfg
        tgt_len = tgt.ne(c.pad).sum(1) + 2
        column = torch.arange(tgt.size(1) + 2, device=tgt.device)[None]
        body = torch.cat([tgt.new_full((len(tgt), 1), c.bos), tgt, tgt.new_full((len(tgt), 1), c.pad)], 1)
        body = torch.where(column == (tgt_len - 1)[:, None], c.eos, body)
        return body.masked_fill(column >= tgt_len[:, None], c.pad), tgt_len

    @staticmethod
    def _emissions(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, L, T) log P(target token t | vertex j): the gathered logits less their log-sum-exp,
        so no (B, L, V) table of log-probabilities is kept for the backward pass."""
        gathered = logits.gather(2, target[:, None, :].expand(-1, logits.size(1), -1))
        return gathered - torch.logsumexp(logits, -1, keepdim=True)

    def _graph(self, inputs: torch.Tensor, start: GlanceStart):
        """Float32 token logits per vertex (B, L, V), the links (B, L, L) and each graph's size."""
        out_pad = start.out_pad
        h = self.decoder(self.embed.add_positions(inputs), key_mask(out_pad), start.memory, key_mask(start.src_pad))
        logits = self.embed.logits(h).float()
        batch, length, d = h.shape
        positions = self.embed.positions[:length].to(h.dtype)  # grown to the graph by add_positions above
        features = torch.cat([h, positions[None].expand(batch, -1, -1)], -1)
        heads = (batch, length, self.link_heads, d // self.link_heads)
        graph_len = (~out_pad).sum(1)
        links = dag.links_from_heads(self.link_query(features).view(heads), self.link_key(features).view(heads),
                                     self.link_gate(features), graph_len)
        return logits, links, graph_len


def forced_positions(glance: Glance, steps: int) -> torch.Tensor:
    """force_emit: (B, T) the vertex each glanced target position takes, -1 elsewhere (a glanced
    vertex's target position is its rank among the path's vertices, which increase)."""
    position = glance.eligible.long().cumsum(1) - 1
    forced = torch.full((glance.mask.size(0), steps), -1, dtype=torch.long, device=glance.mask.device)
    rows, vertices = (glance.mask & glance.eligible).nonzero(as_tuple=True)  # glances are on the path
    forced[rows, position[rows, vertices]] = vertices
    return forced
