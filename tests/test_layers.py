"""The shared layers' fast paths give what the plain ones give: the CPU dropout mask, the causal
flag instead of a mask tensor, and the vectorized padding of a batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import model_config

from kdgrid.batching import pad_stack
from kdgrid.models import build, layers
from kdgrid.models.layers import CAUSAL, Dropout, causal_mask, key_mask


def test_dropout_is_unbiased_and_the_identity_in_eval():
    torch.manual_seed(0)
    drop = Dropout(0.1)
    x = torch.ones(400, 1001, requires_grad=True)
    y = drop(x)
    dropped = y.eq(0).float()
    assert abs(dropped.mean().item() - 0.1) < 0.003  # ~400k draws
    # each of the four 16-bit lanes of one 64-bit draw drops its share
    lanes = dropped.flatten()[: 4 * (y.numel() // 4)].view(-1, 4).mean(0)
    assert (lanes - 0.1).abs().max() < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01  # kept values scaled by 1 / (1 - p)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient is the mask
    drop.eval()
    assert drop(x) is x


def test_dropout_residual_is_x_plus_the_dropped_branch():
    drop, x, y = Dropout(0.3), torch.randn(5, 7, 16), torch.randn(5, 7, 16)
    torch.manual_seed(1)
    fused = drop.residual(x, y)
    torch.manual_seed(1)
    assert torch.allclose(fused, x + drop(y))
    drop.eval()
    assert torch.equal(drop.residual(x, y), x + y)


def at_model():
    torch.manual_seed(0)
    return build("transformer", model_config("transformer")).eval()


def test_causal_flag_equals_the_causal_mask():
    model = at_model()
    src, prev = torch.randint(5, 20, (3, 6)), torch.randint(5, 20, (3, 5))
    memory, src_pad = model.encode(src)
    x = model.embed_target(prev)
    by_mask = model.decoder(x, causal_mask(prev.size(1), prev.device), memory, key_mask(src_pad))
    assert torch.allclose(model.decoder(x, CAUSAL, memory, key_mask(src_pad)), by_mask, atol=1e-5)
    assert torch.allclose(model.states(prev, memory, src_pad), by_mask, atol=1e-5)


def test_causal_flag_after_a_cached_prefix_aligns_the_new_queries_at_the_end():
    """Several new tokens after a cached prefix: the triangle is aligned at the bottom right."""
    model = at_model()
    src, prev = torch.randint(5, 20, (2, 6)), torch.randint(5, 20, (2, 7))
    memory, src_pad = model.encode(src)
    cache: list = []
    model.decoder(model.embed_target(prev[:, :3]), CAUSAL, memory, key_mask(src_pad), cache)
    rest = model.decoder(model.embed_target(prev[:, 3:], start=3), CAUSAL, memory, key_mask(src_pad), cache)
    assert torch.allclose(rest, model.states(prev, memory, src_pad)[:, 3:], atol=1e-5)


@pytest.mark.parametrize("self_mask", ["causal", "padding"])
def test_cpu_training_attention_path_equals_the_fused_kernel(monkeypatch, self_mask):
    """A CPU training step takes torch's plain attention path for short sentences (forward and
    backward), decoding the fused kernel: the states and every gradient agree either way, causal
    (the AT's decoder) or with a padding mask (encoder, cross-attention, NAT decoders)."""
    model = at_model()
    src, prev = torch.randint(5, 20, (3, 6)), torch.randint(5, 20, (3, 5))
    src[0, 4:] = model.cfg.pad
    prev[1, 3:] = model.cfg.pad  # a padded target: the padding mask masks something
    mask = CAUSAL if self_mask == "causal" else key_mask(prev.eq(model.cfg.pad))

    def run():
        model.zero_grad()
        memory, src_pad = model.encode(src)
        h = model.decoder(model.embed_target(prev), mask, memory, key_mask(src_pad))
        h.square().sum().backward()
        return h.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain = run()
    monkeypatch.setattr(layers, "CPU_PLAIN_ATTENTION_KEYS", 0)  # every call takes the fused kernel
    fused = run()
    assert torch.allclose(plain[0], fused[0], atol=1e-5)
    assert len(plain[1]) == len(fused[1]) > 0
    assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(plain[1], fused[1]))
    with torch.no_grad():  # and decoding (no autograd) agrees with both
        memory, src_pad = model.encode(src)
        h = model.decoder(model.embed_target(prev), mask, memory, key_mask(src_pad))
    assert torch.allclose(h, plain[0], atol=1e-5)


def naive_pad_stack(seqs, pad, prefix=None, suffix=None):
    rows = [([prefix] if prefix is not None else []) + list(s) + ([suffix] if suffix is not None else [])
            for s in seqs]
    width = max(map(len, rows))
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)


@pytest.mark.parametrize("ends", [{}, {"prefix": 2}, {"suffix": 3}, {"prefix": 2, "suffix": 3}])
def test_pad_stack_equals_one_row_at_a_time(ends):
    rng = np.random.default_rng(0)
    for _ in range(50):
        seqs = [list(rng.integers(5, 99, rng.integers(0, 6))) for _ in range(rng.integers(1, 5))]
        for given in (seqs, [np.asarray(s, dtype=np.int32) for s in seqs]):
            out = pad_stack(given, 0, **ends)
            assert out.dtype == torch.long and torch.equal(out, naive_pad_stack(seqs, 0, **ends))


def test_dropout_at_the_ends_of_p_is_torchs():
    x = torch.randn(3, 5)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    assert torch.equal(Dropout(1.0).train().residual(x, x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
