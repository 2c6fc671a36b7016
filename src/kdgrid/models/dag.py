"""The directed acyclic graph of a DA-Transformer (Huang et al. 2022) as tensors: the transition
scores, the likelihood of a target summed over every path (dynamic programming), the best path of
a target (Viterbi) and the four decoders. Knows no model: kdgrid.models.dat feeds it.

A sentence's graph has L_b vertices (padding beyond them); a path starts at vertex 0 and ends at
vertex L_b - 1, and a target of T_b tokens (bos and eos included: vertex 0 emits bos, the last
vertex eos) takes one vertex per token, in increasing order. links[b, i, j] = log P(j | i), edges
only from a vertex to a later one of the same graph; emissions are log P(token | vertex).

"Impossible" is NEG, a finite number: a log-sum-exp over inputs that are all -inf has a NaN
gradient (a vertex no path reaches would poison the whole batch's gradient), one over NEG inputs
does not, and exp(NEG) is exactly 0, so no probability leaks.
"""

from __future__ import annotations

import math

import torch

NEG = -1e9
REACHED = NEG / 2  # a path score above this is a real path's (scores of real paths stay far above it)


def links_from_heads(q: torch.Tensor, k: torch.Tensor, gate: torch.Tensor, graph_len: torch.Tensor) -> torch.Tensor:
    """(B, L, L) log transition probabilities, float32. q, k: (B, L, H, d_h); gate: (B, L, H)
    logits. Each head scores the edges i -> j by q_i . k_j / sqrt(d_h) and normalizes them over
    the later vertices of the sentence's graph; the heads are mixed in probability space by the
    gate's softmax per vertex (the reference's gated multi-head links)."""
    length, d_h = q.size(1), q.size(-1)
    allowed = edges(length, graph_len)  # (B, L, L)
    with torch.autocast(q.device.type, enabled=False):  # float32 even inside bf16 training
        scores = torch.einsum("bihd,bjhd->bhij", q.float(), k.float()) / math.sqrt(d_h)
        per_head = scores.masked_fill(~allowed[:, None], NEG).log_softmax(-1)  # a row without edges: finite
        weights = gate.float().log_softmax(-1).transpose(1, 2)[..., None]  # (B, H, L, 1)
        return torch.logsumexp(per_head + weights, dim=1).masked_fill(~allowed, NEG)


def edges(length: int, graph_len: torch.Tensor) -> torch.Tensor:
    """(B, L, L) bool: i -> j is an edge where i < j < L_b."""
    vertex = torch.arange(length, device=graph_len.device)
    return (vertex[None, :] > vertex[:, None])[None] & (vertex[None, None, :] < graph_len[:, None, None])


def log_likelihood(emit: torch.Tensor, links: torch.Tensor, tgt_len: torch.Tensor, graph_len: torch.Tensor,
                   forced: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) log P(y | x): the sum over every path of the product of its transitions and emissions,
    by the forward algorithm over target positions (float32). emit: (B, L, T) log P(y_t | vertex);
    links: (B, L, L). A sentence whose target has more tokens than its graph vertices has no path:
    its value is about NEG (the caller drops it). forced (force_emit): (B, T) the vertex target
    position t must take, -1 where free; that vertex then emits y_t with probability 1.

    Each step is a log-sum-exp over the source vertices of each destination (its own maximum as the
    shift: a matrix product in probability space with one shift per row underflows where a live
    vertex sits ~87 nats below the row's best, as trained models' do), over the last dimension of
    the transposed links (~40% faster than over dimension 1 on a CPU). The backward pass keeps a
    (B, L, L) table per target position."""
    batch, length, steps = emit.shape
    vertex = torch.arange(length, device=emit.device)
    with torch.autocast(emit.device.type, enabled=False):
        emit, links = emit.float(), links.float()
        if forced is not None:  # a forced vertex emits its token surely; no other vertex may take that position
            at = forced.clamp(min=0)[:, None, :] == vertex[None, :, None]  # (B, L, T)
            free = forced.lt(0)[:, None, :]
            emit = torch.where(at & ~free, 0.0, torch.where(at | free, emit, NEG))
        into = links.transpose(1, 2).contiguous()  # into[b, j, i] = links[b, i, j]
        f = torch.where(vertex[None] == 0, emit[:, :, 0], NEG)
        history = [f]
        for t in range(1, steps):
            f = torch.logsumexp(f[:, None, :] + into, dim=-1).clamp(min=NEG) + emit[:, :, t]
            history.append(f)
        table = torch.stack(history, 1)  # (B, T, L)
    rows = torch.arange(batch, device=emit.device)
    return table[rows, (tgt_len - 1).clamp(min=0), (graph_len - 1).clamp(min=0)]


@torch.no_grad()
def best_path(emit: torch.Tensor, links: torch.Tensor, tgt_len: torch.Tensor, graph_len: torch.Tensor):
    """The most probable path of each target (max-product dynamic programming): (vertices (B, T):
    the vertex each target position takes, -1 beyond the target; found (B,): whether a path exists)."""
    batch, length, steps = emit.shape
    vertex = torch.arange(length, device=emit.device)
    emit, into = emit.float(), links.float().transpose(1, 2).contiguous()
    f = torch.where(vertex[None] == 0, emit[:, :, 0], NEG)
    history, back = [f], []
    for t in range(1, steps):
        best, arg = (f[:, None, :] + into).max(-1)
        f = best.clamp(min=NEG) + emit[:, :, t]
        history.append(f)
        back.append(arg)
    rows = torch.arange(batch, device=emit.device)
    end = torch.stack(history, 1)[rows, (tgt_len - 1).clamp(min=0), (graph_len - 1).clamp(min=0)]
    found = (end > REACHED) & (tgt_len <= graph_len) & (tgt_len >= 2)
    path = torch.full((batch, steps), -1, dtype=torch.long, device=emit.device)
    current = torch.full((batch,), -1, dtype=torch.long, device=emit.device)
    for t in range(steps - 1, -1, -1):
        current = torch.where(tgt_len - 1 == t, graph_len - 1, current)
        path[:, t] = current
        if t:
            previous = back[t - 1].gather(1, current.clamp(min=0)[:, None])[:, 0]
            current = torch.where(current >= 0, previous, current)
    return path.masked_fill(~found[:, None], -1), found


def vertex_tokens(log_probs: torch.Tensor, graph_len: torch.Tensor, never: list[int], bos: int, eos: int):
    """Each vertex's best token and its log-probability (B, L): the last vertex's eos, elsewhere
    the best token that is not in `never` (specials are never emitted); vertex 0 (never output)
    bos, scored by its best token of all (the reference's m_0 in joint-Viterbi)."""
    inner = log_probs.clone()
    inner[..., never] = NEG
    score, token = inner.max(-1)
    vertex = torch.arange(log_probs.size(1), device=log_probs.device)[None]
    last = vertex == (graph_len - 1)[:, None]
    first = (vertex == 0) & ~last
    token = torch.where(first, bos, torch.where(last, eos, token))
    score = torch.where(first, log_probs.max(-1).values, torch.where(last, log_probs[..., eos], score))
    return score, token


def walk(links: torch.Tensor, graph_len: torch.Tensor, score: torch.Tensor | None = None, beta: float = 1.0):
    """Greedy (score None: the likeliest next vertex) or lookahead decoding (the next vertex j
    maximizing links[i, j] + beta * score[j], score a vertex's best token log-probability) from
    vertex 0 to the last vertex: (B, S) the vertex after each step, -1 once a path has ended."""
    batch, length, _ = links.shape
    rows = torch.arange(batch, device=links.device)
    current = torch.zeros(batch, dtype=torch.long, device=links.device)
    steps = []
    for _ in range(length - 1):
        active = current < graph_len - 1
        if not active.any():
            break
        row = links[rows, current]
        following = (row if score is None else row + beta * score).argmax(1)
        current = torch.where(active, following, current)
        steps.append(torch.where(active, current, -1))
    return torch.stack(steps, 1) if steps else torch.full((batch, 0), -1, device=links.device)


def joint_viterbi(links: torch.Tensor, graph_len: torch.Tensor, score: torch.Tensor, upsample: int,
                  beta: float = 1.0) -> torch.Tensor:
    """Joint-Viterbi decoding (Shao et al. 2022, as the DA-Transformer reference runs it): for each
    output length t (interior vertices) up to min(L_b - 2, 2 L_b / upsample), the path and tokens
    maximizing the joint log-probability S_t (transitions + each vertex's best token, vertex 0's
    included); the length maximizing S_t / t ** beta. (B, S) the chosen path's vertices, -1 after."""
    batch, length, _ = links.shape
    rows = torch.arange(batch, device=links.device)
    vertex = torch.arange(length, device=links.device)[None]
    interior = (vertex >= 1) & (vertex < (graph_len - 1)[:, None])
    into_end = links[rows, :, (graph_len - 1).clamp(min=0)]  # (B, L): log P(last | j)
    longest = torch.minimum(graph_len - 2, 2 * graph_len // upsample).clamp(min=0)
    a = torch.where(interior, links[:, 0] + score + score[:, :1], NEG)
    backs, totals, ends = [], [], []
    for t in range(1, (int(longest.max()) if batch else 0) + 1):
        if t > 1:
            best, arg = (a[:, :, None] + links).max(1)
            a = torch.where(interior, best + score, NEG)
            backs.append(arg)
        total, end = (a + into_end).max(1)
        totals.append(total)
        ends.append(end)
    out = torch.full((batch, len(totals) + 1), -1, dtype=torch.long, device=links.device)
    if not totals:
        out[:, 0] = graph_len - 1
        return out
    counts = torch.arange(1, len(totals) + 1, device=links.device)
    normalized = torch.stack(totals, 1) / counts.double().pow(beta).to(links.dtype)
    normalized = normalized.masked_fill(counts[None] > longest[:, None], float("-inf"))
    chosen = normalized.argmax(1) + 1  # interior vertices on the chosen path (where longest >= 1)
    current = torch.stack(ends, 1)[rows, chosen - 1]
    for t in range(len(totals), 0, -1):
        here = chosen >= t
        out[:, t - 1] = torch.where(here, current, out[:, t - 1])
        if t > 1:
            current = torch.where(here, backs[t - 2][rows, current], current)
    out[rows, torch.where(longest >= 1, chosen, 0)] = graph_len - 1
    return out


def sample(links: torch.Tensor, graph_len: torch.Tensor, log_probs: torch.Tensor, never: list[int], eos: int,
           generator: torch.Generator, temperature: float = 1.0, beta: float = 1.0, top_cand: int = 5,
           top_p: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling (the reference's): at each vertex i, the (next vertex j, token y) pairs scored by
    log_softmax_j(links[i, j] / temperature) + beta * log P(y | j); the top_cand best pairs, the
    previous token's pairs down-weighted 1e-5 (no repeated token), cut to the smallest set whose
    probability reaches top_p, renormalized, one drawn (where every candidate repeats the previous
    token, a repeat it is). The last vertex offers eos only. The draws come from one generator for
    the batch, so a sampled sentence depends on its batch's rows. Returns (vertices, tokens):
    (B, S) each, -1 once a path has ended."""
    batch, length, _ = links.shape
    rows = torch.arange(batch, device=links.device)
    inner = log_probs.clone()
    inner[..., never] = NEG
    values, tokens = inner.topk(min(top_cand, inner.size(-1)), -1)  # (B, L, n)
    last = torch.arange(length, device=links.device)[None] == (graph_len - 1)[:, None]
    values = torch.where(last[..., None], NEG, values)
    values[..., 0] = torch.where(last, log_probs[..., eos], values[..., 0])
    tokens[..., 0] = torch.where(last, eos, tokens[..., 0])
    n = values.size(-1)
    current = torch.zeros(batch, dtype=torch.long, device=links.device)
    previous = torch.full((batch,), -1, dtype=torch.long, device=links.device)
    path, emitted = [], []
    for _ in range(length - 1):
        active = current < graph_len - 1
        if not active.any():
            break
        moves = (links[rows, current] / temperature).log_softmax(-1)  # (B, L)
        pair = (moves[:, :, None] + beta * values).flatten(1)  # (B, L * n)
        best, index = pair.topk(min(top_cand, pair.size(1)), -1)
        token = tokens.flatten(1).gather(1, index)
        best = best + torch.where(token == previous[:, None], math.log(1e-5), 0.0)
        best, order = best.sort(-1, descending=True)
        index, token = index.gather(1, order), token.gather(1, order)
        prob = (best - best.max(1, keepdim=True).values).exp()
        prob = prob / prob.sum(1, keepdim=True)
        keep = (prob.cumsum(1) - prob) < top_p  # the smallest prefix reaching top_p (the first always)
        prob = prob * keep
        drawn = torch.multinomial(prob / prob.sum(1, keepdim=True), 1, generator=generator)[:, 0]
        following, word = index[rows, drawn] // n, token[rows, drawn]
        current = torch.where(active, following, current)
        previous = torch.where(active, word, previous)
        path.append(torch.where(active, current, -1))
        emitted.append(torch.where(active, word, -1))
    if not path:
        empty = torch.full((batch, 0), -1, dtype=torch.long, device=links.device)
        return empty, empty
    return torch.stack(path, 1), torch.stack(emitted, 1)


def read_out(path: torch.Tensor, token: torch.Tensor, graph_len: torch.Tensor, dedup: bool = True,
             per_step: bool = False) -> list[list[int]]:
    """The output of each path: the tokens of its vertices before the last (vertex 0 is never in a
    path here), consecutive repeats merged where `dedup` (the reference's greedy, lookahead and
    Viterbi outputs). token: (B, L) a token per vertex, or (per_step) (B, S) one per step of the path."""
    tokens = token.tolist()  # one device-to-host copy, not one per word
    out = []
    for b, (steps, last) in enumerate(zip(path.tolist(), graph_len.tolist())):
        words = []
        for s, v in enumerate(steps):
            if v < 0 or v == last - 1:
                break
            word = tokens[b][s if per_step else v]
            if not (dedup and words and words[-1] == word):
                words.append(word)
        out.append(words)
    return out
