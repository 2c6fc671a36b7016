"""Throughput arithmetic for bench/gpu_check.py: model FLOPs per target token, the peak bf16
FLOP/s of known GPUs, and model FLOP utilisation (MFU). Pure functions (torch only to count a
model's parameters), unit-tested in tests/test_gpu_check.py.

MFU = achieved model FLOP/s / the device's peak dense bf16 FLOP/s, where model FLOPs are what the
model needs per token (6 x parameters for the forward and backward matrix products, plus the
attention scores), not what the kernels run (padding, recomputation and masked work not counted).
"""

from __future__ import annotations

import re

import numpy as np

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets. Matched in order
# against torch.cuda.get_device_name(): the variants before the plain name.
PEAK_BF16_TFLOPS = [
    (r"H100 PCIe", 756.0),
    (r"H100 NVL|H200 NVL", 835.0),
    (r"H100|H200|GH200", 989.0),  # SXM (the H100's name then says "80GB HBM3"); H200 the same chip
    (r"A100|A800", 312.0),
    (r"L40S", 362.0),
    (r"\bL4\b", 121.0),
]


def peak_flops(device_name: str) -> float | None:
    """Peak dense bf16 FLOP/s of a GPU by its name, or None when the table does not know it."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return tflops * 1e12
    return None


def parameter_parts(model) -> dict[str, int]:
    """A kdgrid model's parameters by where they work: `encoder` (once per source token),
    `decoder` (once per target token), `output` (the embedding table, which is also the tied
    output projection: a matrix product per target token; the input lookup costs nothing) and
    `other` (e.g. a NAT's length predictor, counted per target token: an overestimate, and tiny)."""
    parts = {"encoder": 0, "decoder": 0, "output": 0, "other": 0}
    for name, p in model.named_parameters():
        top = name.split(".", 1)[0]
        key = {"encoder": "encoder", "decoder": "decoder", "embed": "output"}.get(top, "other")
        parts[key] += p.numel()
    return parts


def length_stats(src_lengths, tgt_lengths) -> dict[str, float]:
    """What the FLOP count needs from the data: source tokens per target token, and the
    token-weighted mean length of each side (the context an average token attends over), every
    side with its eos (target: bos), as the model sees them."""
    s = np.asarray(src_lengths, dtype=np.float64) + 1
    t = np.asarray(tgt_lengths, dtype=np.float64) + 1
    return {"src_per_tgt": float(s.sum() / t.sum()), "src_context": float((s * s).sum() / s.sum()),
            "tgt_context": float((t * t).sum() / t.sum())}


def flops_per_target_token(parts: dict[str, int], d_model: int, encoder_layers: int, decoder_layers: int,
                           stats: dict[str, float]) -> float:
    """Model FLOPs of one training step per target token (forward + backward = 3 x forward).
    Dense: 2 FLOPs per parameter per token forward, so 6 x parameters, the encoder's per source
    token (src_per_tgt of them per target token). Attention: per layer and query token, QK^T and
    AV are 2 x 2 x d x context FLOPs forward, 12 x d x context in all; the decoder's self-attention
    is counted over its whole context (as PaLM's MFU does), its cross-attention over the source."""
    r = stats["src_per_tgt"]
    dense = 6 * (parts["encoder"] * r + parts["decoder"] + parts["output"] + parts["other"])
    attention = 12 * d_model * (encoder_layers * r * stats["src_context"]
                                + decoder_layers * (stats["tgt_context"] + stats["src_context"]))
    return float(dense + attention)


def mfu_text(tokens_per_second: float, flops_per_token: float, device_name: str) -> str:
    """'MFU 41.2% (407 of 989 TFLOP/s peak dense bf16)', or the achieved rate and 'unknown peak'."""
    achieved = tokens_per_second * flops_per_token
    peak = peak_flops(device_name)
    if peak is None:
        return f"{achieved / 1e12:.3g} model TFLOP/s, unknown peak for {device_name!r} (MFU not computed)"
    return f"MFU {100 * achieved / peak:.1f}% ({achieved / 1e12:.3g} of {peak / 1e12:.0f} TFLOP/s peak dense bf16)"
