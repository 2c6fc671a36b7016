"""torch's two CPU attention paths for a training step (forward + backward) and for decoding
(forward only), at the shapes of this project's CPU batches: the fused (flash) kernel vs the plain
matrix-product path, each timed in turn on the same tensors. Ratio > 1: the plain path is faster.
kdgrid.models.layers takes the plain path for CPU training steps up to CPU_PLAIN_ATTENTION_KEYS keys.

    python bench/attention_kernels.py [--threads 2] [--repeats 30]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from kdgrid.models.layers import CPU_PLAIN_ATTENTION_KEYS

HEADS, HEAD_DIM, TOKENS = 4, 64, 2048  # the peers bench's d256 / 4 heads, a 2048-token batch


def seconds(backend, q, k, v, causal: bool, train: bool, repeats: int) -> float:
    g = torch.randn_like(q)
    with sdpa_kernel(backend), torch.set_grad_enabled(train):
        def once():
            y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            if train:
                y.backward(g)
        once()
        begin = time.perf_counter()
        for _ in range(repeats):
            once()
    return (time.perf_counter() - begin) / repeats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"{a.threads} threads, {HEADS} heads of {HEAD_DIM}, batches of ~{TOKENS} query tokens; "
          f"kdgrid's plain path for training up to {CPU_PLAIN_ATTENTION_KEYS} keys")
    print("| step | queries x keys | batch | causal | fused ms | plain ms | plain speed-up |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: |")
    shapes = [("train", t, t) for t in (10, 26, 50, 64, 100, 200)] + [("decode", 1, 26), ("decode", 26, 26)]
    for step, t, s in shapes:
        batch = max(1, TOKENS // t) if step == "train" else 64
        train = step == "train"
        for causal in ((True, False) if t == s else (False,)):
            q = torch.randn(batch, HEADS, t, HEAD_DIM, requires_grad=train)
            k = torch.randn(batch, HEADS, s, HEAD_DIM, requires_grad=train)
            v = torch.randn(batch, HEADS, s, HEAD_DIM, requires_grad=train)
            fused = seconds(SDPBackend.FLASH_ATTENTION, q, k, v, causal, train, a.repeats)
            plain = seconds(SDPBackend.MATH, q, k, v, causal, train, a.repeats)
            print(f"| {step} | {t} x {s} | {batch} | {'yes' if causal else 'no'} | {fused * 1e3:.2f} | "
                  f"{plain * 1e3:.2f} | {fused / plain:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
