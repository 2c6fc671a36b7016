"""Decoding for autoregressive models: beam search, greedy, sampling, top-k sampling.

Works on any model with `encode(src)`, `decode_step(prev, memory, src_pad, cache)` and
`reorder(cache, rows)`, and with `cfg.bos/eos/pad`. All methods are batched; finished sentences
are dropped from the running batch, and with `use_cache` each step only runs the newest token.
"""

from __future__ import annotations

import torch

from kdgrid.errors import KdgridError
from kdgrid.models.configs import DECODE_METHODS
from kdgrid.vocab import BOS, EOS, MASK, PAD, UNK

METHODS = DECODE_METHODS["transformer"]


def generate(model, src, method: str, *, beam: int = 5, lenpen: float = 1.0,
             temperature: float = 1.0, topk: int = 10, max_len_a: float = 1.2,
             max_len_b: int = 10, seed: int | None = None, use_cache: bool = True, nbest: int = 0):
    """Token ids per sentence. With `nbest` (beam only): per sentence its `nbest` best finished
    hypotheses as (score, ids), best first, from the same search (no second decode)."""
    if nbest and method != "beam":
        raise KdgridError(f"nbest: an n-best list comes from beam search, not from {method!r}")
    if method == "beam":
        if beam < 1:
            raise KdgridError(f"beam size must be positive, got {beam}")
        if not 0 <= nbest <= beam:
            raise KdgridError(f"nbest must be between 1 and the beam size {beam} (or 0: no n-best list), "
                              f"got {nbest}")
        return beam_search(model, src, beam, lenpen, max_len_a, max_len_b, use_cache, nbest)
    if method == "greedy":
        return step_search(model, src, _argmax, max_len_a, max_len_b, use_cache)
    if method in ("sample", "sample_topk"):
        if temperature <= 0:
            raise KdgridError(f"temperature must be positive, got {temperature}")
        gen = torch.Generator(device=src.device)
        gen.manual_seed(0 if seed is None else seed)
        if method == "sample_topk" and topk < 1:
            raise KdgridError(f"topk must be positive, got {topk}")
        k = topk if method == "sample_topk" else 0
        pick = lambda lp: _sample(lp, temperature, k, gen)  # noqa: E731
        return step_search(model, src, pick, max_len_a, max_len_b, use_cache)
    raise KdgridError(f"unknown decoding method {method!r}; known: {', '.join(METHODS)}")


def _argmax(lprobs):
    return lprobs.argmax(-1)


def _sample(lprobs, temperature, k, gen):
    logits = lprobs / temperature
    if k:
        kth = logits.topk(min(k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(1)


def _max_lengths(src, pad, a, b):
    return ((src.ne(pad).sum(1).float() * a).long() + b).clamp(min=1)


def _never(cfg, vocab_size: int) -> list[int]:
    """Ids an AT decode never emits: pad, bos, unk and <mask> (the vocabulary's fixed specials
    and the model's own pad/bos). A distilled set must hold words only: an <unk> or <mask> in it
    would teach every student to produce them."""
    ids = {PAD, UNK, BOS, MASK, cfg.pad, cfg.bos} - {cfg.eos, EOS}
    return sorted(i for i in ids if i < vocab_size)


def _forbid(lprobs, cfg, force_eos):
    """No specials but eos ever (_never); only eos for rows that reached their maximum length."""
    lprobs[:, _never(cfg, lprobs.size(-1))] = float("-inf")
    if force_eos.any():
        eos_col = lprobs[:, cfg.eos].clone()
        lprobs[force_eos] = float("-inf")
        lprobs[force_eos, cfg.eos] = eos_col[force_eos].clamp(min=-1e4)
    return lprobs


def step_search(model, src, pick, max_len_a, max_len_b, use_cache):
    """Greedy or sampling: one token per sentence per step."""
    cfg = model.cfg
    memory, src_pad = model.encode(src)
    max_len = _max_lengths(src, cfg.pad, max_len_a, max_len_b)
    live = torch.arange(src.size(0), device=src.device)
    tokens = torch.full((src.size(0), 1), cfg.bos, dtype=torch.long, device=src.device)
    cache = [] if use_cache else None
    out: list[list[int]] = [[] for _ in range(src.size(0))]
    t = 0
    while live.numel():
        lprobs = model.decode_step(tokens, memory, src_pad, cache)
        lprobs = _forbid(lprobs, cfg, max_len[live] <= t)
        nxt = pick(lprobs)
        tokens = torch.cat([tokens, nxt[:, None]], 1)
        ended = nxt.eq(cfg.eos)
        for i in ended.nonzero().flatten().tolist():
            out[int(live[i])] = tokens[i, 1:-1].tolist()
        if ended.any():
            keep = (~ended).nonzero().flatten()
            live, tokens = live[keep], tokens[keep]
            memory, src_pad = memory[keep], src_pad[keep]
            model.reorder(cache, keep)
        t += 1
    return out


def beam_search(model, src, beam, lenpen, max_len_a, max_len_b, use_cache, nbest: int = 0):
    """Length-normalized beam search: a hypothesis scores sum(log p) / len**lenpen, where len
    counts its tokens plus eos. eos is only accepted from the top `beam` candidates (so beam 1 is
    exactly greedy). A sentence is done when it holds `beam` finished hypotheses and the worst of
    them already beats its best live beam normalized at the current length, or at max length.

    Returns the best hypothesis per sentence; with `nbest` > 0, the `nbest` best finished ones
    as (score, ids), best first (ties in the order they finished, so entry 0 is what the plain
    call returns). Each is a distinct path of the search, so their token ids differ."""
    cfg = model.cfg
    n, k = src.size(0), beam
    memory, src_pad = model.encode(src)
    max_len = _max_lengths(src, cfg.pad, max_len_a, max_len_b)
    rows = torch.arange(n, device=src.device).repeat_interleave(k)
    memory, src_pad = memory[rows], src_pad[rows]
    live = torch.arange(n, device=src.device)
    tokens = torch.full((n * k, 1), cfg.bos, dtype=torch.long, device=src.device)
    scores = torch.zeros(n, k, device=src.device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    cache = [] if use_cache else None
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    rank = torch.arange(2 * k, device=src.device)
    t = 0
    while live.numel():
        m = live.numel()
        force = (max_len[live] <= t).repeat_interleave(k)
        lprobs = _forbid(model.decode_step(tokens, memory, src_pad, cache), cfg, force)
        vocab = lprobs.size(-1)
        cand = (scores.view(-1, 1) + lprobs).view(m, k * vocab)
        top, idx = cand.topk(min(2 * k, k * vocab), dim=1)
        from_beam, word = idx // vocab, idx % vocab
        is_eos = word.eq(cfg.eos)
        accept = is_eos & (rank[: top.size(1)] < k) & torch.isfinite(top)
        for i, r in accept.nonzero().tolist():
            hyp = tokens[i * k + from_beam[i, r], 1:].tolist()
            fin = finished[int(live[i])]
            fin.append((top[i, r].item() / (len(hyp) + 1) ** lenpen, hyp))
            if len(fin) > k:
                fin.remove(min(fin, key=lambda h: h[0]))
        # continue each sentence with its best `beam` candidates that did not end in eos
        order = (is_eos.long() * top.size(1) + rank[: top.size(1)]).topk(k, dim=1, largest=False)[1]
        next_scores = top.gather(1, order)
        best_live = (next_scores[:, 0] / (t + 1) ** lenpen).tolist()
        done = []
        for i, s in enumerate(live.tolist()):
            fin = finished[s]
            done.append(bool(max_len[s] <= t) or
                        (len(fin) >= k and min(h[0] for h in fin) >= best_live[i]))
        keep = (~torch.tensor(done, device=src.device)).nonzero().flatten()
        sel_beam = from_beam.gather(1, order)[keep]
        sel_word = word.gather(1, order)[keep]
        scores = next_scores[keep]
        next_rows = (keep[:, None] * k + sel_beam).flatten()
        tokens = torch.cat([tokens[next_rows], sel_word.reshape(-1, 1)], 1)
        memory, src_pad = memory[next_rows], src_pad[next_rows]
        model.reorder(cache, next_rows)
        live = live[keep]
        t += 1
    if nbest:
        return [sorted(f, key=lambda h: -h[0])[:nbest] for f in finished]
    return [max(f, key=lambda h: h[0])[1] if f else [] for f in finished]
