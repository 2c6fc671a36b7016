"""bench/gpu_check.py (`make gpu-check`): its FLOP and MFU arithmetic, its CPU toy mode end to end
(slow: so the check cannot rot on machines without a GPU), and the checks that need CUDA (marked
`cuda`: they skip without a GPU; `make gpu-check` runs them on one and fails if any skips there).
"""

from __future__ import annotations

import copy
import functools
import re
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, env, model_config, toy_pairs

sys.path.insert(0, str(ROOT / "bench"))
import gpu_check_perf as perf  # noqa: E402

from kdgrid.batching import collate  # noqa: E402
from kdgrid.models import build  # noqa: E402
from kdgrid.train import TrainConfig, make_optimizer  # noqa: E402
from kdgrid.vocab import BOS, EOS, PAD, UNK  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (make gpu-check)")


# -- the arithmetic ------------------------------------------------------------------------------------
def test_peak_flops_by_device_name():
    assert perf.peak_flops("NVIDIA H100 80GB HBM3") == 989e12  # SXM
    assert perf.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert perf.peak_flops("NVIDIA H200") == perf.peak_flops("NVIDIA H100 80GB HBM3")
    assert perf.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert perf.peak_flops("NVIDIA L40S") == 362e12 and perf.peak_flops("NVIDIA L4") == 121e12
    assert perf.peak_flops("NVIDIA L40") is None and perf.peak_flops("Tesla V100-SXM2-32GB") is None
    assert "unknown peak" in perf.mfu_text(1e5, 1e9, "Tesla V100-SXM2-32GB")
    # 200k tok/s x 1 GFLOP = 200 TFLOP/s of 989
    assert perf.mfu_text(2e5, 1e9, "NVIDIA H100 80GB HBM3").startswith("MFU 20.2%")


def test_flops_per_target_token_counts_each_side_per_its_tokens():
    parts = {"encoder": 100, "decoder": 200, "output": 50, "other": 1}
    # sources as long as targets, no attention context: 6 x every parameter
    flat = {"src_per_tgt": 1.0, "src_context": 0.0, "tgt_context": 0.0}
    assert perf.flops_per_target_token(parts, 8, 1, 1, flat) == 6 * 351
    # twice as many source tokens: the encoder works twice per target token
    long_src = {"src_per_tgt": 2.0, "src_context": 0.0, "tgt_context": 0.0}
    assert perf.flops_per_target_token(parts, 8, 1, 1, long_src) == 6 * 451
    # attention: 12 x d x context per layer and query token (encoder, decoder self, decoder cross)
    ctx = {"src_per_tgt": 1.0, "src_context": 10.0, "tgt_context": 5.0}
    assert perf.flops_per_target_token(parts, 8, 2, 3, ctx) == 6 * 351 + 12 * 8 * (2 * 10 + 3 * (5 + 10))
    stats = perf.length_stats([1, 3], [2, 2])  # + eos: sources 2 and 4 tokens, targets 3 and 3
    assert stats == {"src_per_tgt": 1.0, "src_context": 20 / 6, "tgt_context": 3.0}


def test_parameter_parts_split_a_model_by_where_it_works():
    model = build("nat", model_config("nat", vocab_size=40, d=16, layers=1))
    parts = perf.parameter_parts(model)
    assert parts["output"] == 40 * 16  # the tied embedding table
    assert parts["encoder"] > 0 and parts["decoder"] > parts["encoder"]  # cross-attention
    assert parts["other"] > 0  # the length predictor
    assert sum(parts.values()) == sum(p.numel() for p in model.parameters())


# -- the CPU toy mode, end to end ----------------------------------------------------------------------
@pytest.mark.slow
def test_cpu_toy_mode_passes_every_part(tmp_path):
    """What `make gpu-check` does without a GPU, ~25 s of CPU: tiny models, 20 updates, 40
    sentences, the toy grid's jobs up to one distillation shard."""
    script = ROOT / "bench" / "gpu_check.py"
    proc = subprocess.run([sys.executable, str(script), "--cpu", "--work", str(tmp_path / "w")],
                          capture_output=True, text=True, env=env(), timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    for number, part in enumerate(["train", "distill", "grid", "tests"], 1):
        assert re.search(rf"^PASS  {number}\. {part} ", out, re.MULTILINE), out[-3000:]
    assert "CPU toy mode" in out and re.search(r"total \d+ s: PASS$", out, re.MULTILINE)
    assert re.search(r"teacher transformer .* target tok/s", out) and re.search(r"student nat .* target tok/s", out)
    assert "devices the GPU-rule jobs logged: distill: cpu x1, train_teacher: cpu x1" in out
    assert re.search(r"pytest -m cuda: \d+ skipped \(no CUDA", out)


def test_unknown_parts_and_a_distill_without_train_are_refused():
    script = str(ROOT / "bench" / "gpu_check.py")
    for parts, said in (("train,fly", "unknown fly"), ("distill", "give train too")):
        proc = subprocess.run([sys.executable, script, "--parts", parts], capture_output=True, text=True, env=env(),
                              timeout=300)
        assert proc.returncode == 2 and said in proc.stderr


# -- on a GPU ------------------------------------------------------------------------------------------
def toy_batch(vocab_size: int = 40, n: int = 16) -> dict:
    pairs = toy_pairs(n, vocab_size=vocab_size, seed=2)
    return collate([s for s, _ in pairs], [t for _, t in pairs], PAD, BOS, EOS)


def on(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def step_on(model, batch: dict, device, bf16: bool = False):
    """One training step of `model` (a copy, moved to `device`) with the product's optimizer:
    (loss, the gradients, the updated parameters), all on the CPU."""
    model = copy.deepcopy(model).to(device).train()
    optim = make_optimizer(model, TrainConfig(max_updates=1, warmup_init_lr=1e-3))
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        loss, _ = model.loss(on(batch, device), label_smoothing=0.1)
    loss.backward()
    grads = {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters() if p.grad is not None}
    optim.step()
    return float(loss.detach()), grads, {n: p.detach().cpu() for n, p in model.named_parameters()}


def compare_steps(kind: str, device) -> None:
    torch.manual_seed(0)
    model = build(kind, model_config(kind))  # dropout 0: the same computation on both devices
    batch = toy_batch()
    loss_cpu, grads_cpu, after_cpu = step_on(model, batch, "cpu")
    loss_dev, grads_dev, after_dev = step_on(model, batch, device)
    assert loss_dev == pytest.approx(loss_cpu, rel=1e-4)
    assert grads_dev.keys() == grads_cpu.keys()
    for name, g in grads_cpu.items():  # float32 kernels apart: within a thousandth of the largest
        assert (grads_dev[name] - g).abs().max() <= 1e-3 * g.abs().max() + 1e-6, name
    # Adam's first step moves each weight by about lr; a sign flip of a near-zero gradient moves
    # it the other way, so compare within 2 lr (the step ran, on the device, with its optimizer)
    for name, p in after_cpu.items():
        assert (after_dev[name] - p).abs().max() <= 2e-3 + 1e-6, name
    before = model.state_dict()
    assert all(not torch.equal(after_dev[n], before[n]) for n in grads_dev), "a weight with a gradient did not move"


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("kind", ["transformer", "nat", "ctc", "dat"])
def test_a_training_step_on_cuda_matches_the_cpu(kind):
    compare_steps(kind, "cuda")


@pytest.mark.cuda
@needs_cuda
def test_bf16_autocast_on_cuda_stays_close_to_float32():
    torch.manual_seed(0)
    model = build("transformer", model_config("transformer"))
    batch = toy_batch()
    fp32, _, _ = step_on(model, batch, "cuda")
    bf16, grads, _ = step_on(model, batch, "cuda", bf16=True)
    assert bf16 == pytest.approx(fp32, rel=0.03)
    assert all(torch.isfinite(g).all() for g in grads.values())


@functools.cache
def trained_toy_transformer(vocab_size: int = 40, steps: int = 80):
    """A small Transformer fitted to the toy pairs on the CPU (seeded; every pair right after ~75
    steps): confident outputs, so that the devices' last-bit differences do not flip its decisions.
    Callers copy it before moving it."""
    torch.manual_seed(0)
    model = build("transformer", model_config("transformer", vocab_size=vocab_size))
    batch = toy_batch(vocab_size, n=64)
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss, _ = model.loss(batch)
        optim.zero_grad()
        loss.backward()
        optim.step()
    return model.eval(), batch["src"]


def compare_decoding(device, threshold: float = 0.95) -> None:
    model, src = trained_toy_transformer()
    on_device = copy.deepcopy(model).to(device)
    for options in ({"method": "greedy"}, {"method": "beam", "beam": 4}):
        cpu = model.generate(src, **options)
        dev = on_device.generate(src.to(device), **options)
        same = sum(a == b for a, b in zip(cpu, dev)) / len(cpu)
        assert same >= threshold, (options, same)


@pytest.mark.cuda
@needs_cuda
def test_decoding_on_cuda_matches_the_cpu():
    compare_decoding("cuda")


class Pieces:
    """Numbered pieces standing in for a sentencepiece model (the CTranslate2 export names tokens)."""

    def __init__(self, size: int):
        names = {PAD: "<pad>", UNK: "<unk>", BOS: "<s>", EOS: "</s>"}
        self.pieces = [names.get(i, f"w{i}") for i in range(size)]
        self.sp = self

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i]

    def __len__(self) -> int:
        return len(self.pieces)


def compare_ct2(device, threshold: float = 0.95) -> None:
    from kdgrid.ct2 import Ct2Decoder

    model, src = trained_toy_transformer()
    model = copy.deepcopy(model).to(device)
    decoder = Ct2Decoder(model, Pieces(model.cfg.vocab_size), torch.device(device))
    assert decoder.runs_on == ("cpu" if torch.device(device).type == "cpu" else "cuda:0")
    torch_out = model.generate(src.to(device), method="greedy")
    ct2_out = decoder.generate(src, method="greedy")
    same = sum(a == b for a, b in zip(torch_out, ct2_out)) / len(torch_out)
    assert same >= threshold, same


@pytest.mark.cuda
@needs_cuda
def test_ctranslate2_decodes_on_cuda_like_torch():
    import ctranslate2

    assert ctranslate2.get_cuda_device_count() > 0, (
        "ctranslate2 sees no GPU: a CPU-only build, or its CUDA 12 libraries (libcublas) are not found")
    compare_ct2("cuda")
