"""One refinement loop for every non-autoregressive model (vanilla NAT, iNAT, CMLM, LevT, InsT).

The loop knows no model kinds. A model provides
  initial(src, memory, src_pad, length_beam) -> (State, owner): one row per candidate, `owner`
      giving each row's sentence (several rows per sentence = a length beam);
  step(state, src, memory, src_pad, step, max_iter) -> State: one refinement step.
A row is final as soon as its tokens equal the previous step's (adaptive stop) or after step
`max_iter`; its score is the mean log-probability of its tokens (or, with a `rescorer`, that of
an AT model: kdgrid.rescore), and each sentence keeps its best candidate. Finished rows leave the
batch, so no work is spent on them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class State:
    tokens: torch.Tensor  # (N, T) content tokens (no bos/eos), right-padded with pad
    scores: torch.Tensor  # (N, T) log-probability of each token; 0 at padding
    mask: torch.Tensor | None = None  # (N, T) positions to predict next (CMLM); None: model decides
    aux: torch.Tensor | None = None  # (N, T, ...) per-position model state (FlowSeq's latents)

    def rows(self, index: torch.Tensor) -> State:
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return State(self.tokens[index], self.scores[index], pick(self.mask), pick(self.aux))


def empty_start(src: torch.Tensor, pad: int):
    """`initial` of the insertion models: every sentence starts empty (one pad column), one
    candidate per sentence."""
    empty = torch.full((src.size(0), 1), pad, dtype=torch.long, device=src.device)
    return State(empty, torch.zeros(empty.shape, device=src.device)), torch.arange(src.size(0), device=src.device)


def trim(state: State, pad: int) -> State:
    """Drop padding columns that no row uses."""
    width = max(int(state.tokens.ne(pad).sum(1).max()) if len(state.tokens) else 0, 1)
    cut = lambda t: None if t is None else t[:, :width]  # noqa: E731
    return replace(state, tokens=cut(state.tokens), scores=cut(state.scores), mask=cut(state.mask),
                   aux=cut(state.aux))


def same_tokens(a: torch.Tensor, b: torch.Tensor, pad: int) -> torch.Tensor:
    width = max(a.size(1), b.size(1))
    a = torch.nn.functional.pad(a, (0, width - a.size(1)), value=pad)
    b = torch.nn.functional.pad(b, (0, width - b.size(1)), value=pad)
    return (a == b).all(1)


@torch.no_grad()
def refine(model, src: torch.Tensor, max_iter: int, length_beam: int = 1, adaptive: bool = True,
           return_steps: bool = False, rescorer=None, **initial_options):
    """Token ids per sentence (and, with return_steps, the iterations each one took).
    `initial_options` go to model.initial (e.g. FlowSeq's number of latent samples); `rescorer`
    (src rows, candidates) -> scores ranks the candidates instead of the model's own scores."""
    pad = model.cfg.pad
    memory, src_pad = model.encode(src)
    state, owner = model.initial(src, memory, src_pad, length_beam, **initial_options)
    src, memory, src_pad = src[owner], memory[owner], src_pad[owner]
    row_src = src
    n_rows = len(owner)
    final_tokens: list[list[int] | None] = [None] * n_rows
    final_score = torch.full((n_rows,), float("-inf"))
    steps = torch.zeros(n_rows, dtype=torch.long)
    live = torch.arange(n_rows, device=src.device)
    for step in range(max_iter + 1):
        new = trim(model.step(state, src, memory, src_pad, step, max_iter), pad)
        done = torch.full((len(live),), step == max_iter, device=src.device)
        if adaptive and step > 0:
            done |= same_tokens(new.tokens, state.tokens, pad)
        real = new.tokens.ne(pad)
        lengths = real.sum(1)
        mean = (new.scores * real).sum(1) / lengths.clamp(min=1)
        mean = torch.where(lengths > 0, mean, torch.full_like(mean, -1e9))  # empty: last resort
        for r in done.nonzero().flatten().tolist():
            row = int(live[r])
            final_tokens[row] = new.tokens[r, : int(lengths[r])].tolist()
            final_score[row] = float(mean[r])
            steps[row] = step + 1
        keep = (~done).nonzero().flatten()
        if not len(keep):
            break
        state, live = trim(new.rows(keep), pad), live[keep]
        src, memory, src_pad = src[keep], memory[keep], src_pad[keep]
    if rescorer is not None and n_rows > int(owner.max()) + 1:  # only a choice needs ranking
        scores = rescorer(row_src, final_tokens).float().cpu()
        empty = torch.tensor([not t for t in final_tokens])
        final_score = torch.where(empty, torch.full_like(scores, -1e9), scores)  # as above
    n = int(owner.max()) + 1
    best = [max((final_score[r].item(), r) for r in (owner == s).nonzero().flatten().tolist())[1]
            for s in range(n)]
    out = [final_tokens[r] for r in best]
    return (out, [int(steps[r]) for r in best]) if return_steps else out
