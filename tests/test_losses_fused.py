"""The fused word loss (kdgrid.models.layers.projected_nll: the output layer runs only at the scored
positions) against the plain one (smoothed_nll on the full logits): equal loss, nll, token count and
gradients, on random tensors with padding and in the loss of every kind that uses it (the AT
Transformer, the NAT and the CMLM, through kdgrid.models.terms; WordKD scores the same terms, see
test_kd_terms).
Both are also checked against the label-smoothed cross-entropy written out by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import model_config, toy_pairs

from kdgrid.batching import collate
from kdgrid.models import build
from kdgrid.models.layers import Embedding, projected_nll, smoothed_nll
from kdgrid.models.noise import random_mask

PAD, V, D = 0, 40, 16
FUSED_KINDS = ("transformer", "nat", "cmlm")  # the models whose loss scores only the scored positions


def padded_targets(seed: int) -> torch.Tensor:
    """(4, 9) targets: right padding of every length (a full row, an empty one) and holes inside
    rows, where CMLM's unmasked positions arrive as pad."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(1, V, (4, 9), generator=g)
    target[0, 5:] = PAD
    target[1, [1, 4, 6]] = PAD
    target[3] = PAD  # a sentence with nothing to score
    return target


def by_hand(logits: torch.Tensor, target: torch.Tensor, smoothing: float):
    """Token mean over non-pad targets of (1 - eps) * -log p(gold) + eps * mean_v -log p(v), in float64."""
    lp = F.log_softmax(logits.double(), -1)
    rows = [(lp[b, t], int(target[b, t])) for b in range(target.size(0)) for t in range(target.size(1))
            if target[b, t] != PAD]
    nll = [-float(r[g]) for r, g in rows]
    loss = [(1 - smoothing) * n - smoothing * float(r.mean()) for n, (r, _) in zip(nll, rows)]
    return sum(loss) / len(rows), sum(nll) / len(rows), len(rows)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("seed", [0, 1])
def test_projected_equals_full_logits_on_random_states_with_padding(seed, smoothing):
    torch.manual_seed(seed)
    embed = Embedding(V, D, PAD, dropout=0.0)
    h = torch.randn(4, 9, D) * 3  # states at pad positions are random too: they must not count
    target = padded_targets(seed)
    grads = []
    results = []
    for fused in (True, False):
        embed.zero_grad()
        hh = h.clone().requires_grad_(True)
        if fused:
            out = projected_nll(embed, hh, target, PAD, smoothing)
        else:
            out = smoothed_nll(embed.logits(hh), target, PAD, smoothing)
        out[0].backward()
        results.append(out)
        grads.append((hh.grad, embed.table.weight.grad.clone()))
    (f_loss, f_nll, f_n), (p_loss, p_nll, p_n) = results
    assert f_n == p_n == int(target.ne(PAD).sum())
    torch.testing.assert_close(f_loss, p_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(f_nll, p_nll, rtol=1e-6, atol=1e-6)
    for fused_grad, plain_grad in zip(*grads):
        torch.testing.assert_close(fused_grad, plain_grad, rtol=1e-5, atol=1e-7)
    loss, nll, n = by_hand(embed.logits(h).detach(), target, smoothing)
    assert n == f_n and f_loss.item() == pytest.approx(loss, rel=1e-5) and f_nll.item() == pytest.approx(nll, rel=1e-5)
    if smoothing:
        assert loss != pytest.approx(nll, rel=1e-3)  # the example tells smoothing apart


def full_logits_loss(model, kind, batch, smoothing):
    """The kind's training loss with smoothed_nll on the full logits (the unfused way), built from
    its public pieces in the order its `loss` draws random numbers: (total, nll, ntokens)."""
    memory, src_pad = model.encode(batch["src"])
    if kind == "transformer":
        return smoothed_nll(model.decode(batch["tgt_in"], memory, src_pad), batch["tgt_out"], PAD, smoothing)
    tgt = batch["tgt"]
    tgt_pad = tgt.eq(PAD)
    if kind == "nat":
        logits = model.decode(model.first_input(batch["src"], src_pad, tgt_pad), tgt_pad, memory, src_pad)
        target = tgt
    else:
        noisy, masked = random_mask(tgt, PAD, model.cfg.mask)
        logits = model.decode(noisy, tgt_pad, memory, src_pad)
        target = tgt.masked_fill(~masked, PAD)
    word, nll, n = smoothed_nll(logits, target, PAD, smoothing)
    length = model.length.loss(memory, src_pad, (~tgt_pad).sum(1))
    return word + model.cfg.length_loss_weight * length, nll, n


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("kind", FUSED_KINDS)
def test_each_kinds_fused_loss_equals_its_full_logits_loss(kind, smoothing):
    torch.manual_seed(3)
    model = build(kind, model_config(kind, vocab_size=V, d=D, layers=1, dropout=0.0)).train()
    pairs = toy_pairs(6, vocab_size=V, seed=4)  # targets of different lengths: a padded batch
    batch = collate([s for s, _ in pairs], [t for _, t in pairs], PAD, 2, 3)
    torch.manual_seed(9)  # the CMLM's mask draw, the same for both
    loss, logs = model.loss(batch, label_smoothing=smoothing)
    torch.manual_seed(9)
    want, nll, n = full_logits_loss(model, kind, batch, smoothing)
    assert logs["ntokens"] == n > 0
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logs["nll"], nll, rtol=1e-5, atol=1e-6)
