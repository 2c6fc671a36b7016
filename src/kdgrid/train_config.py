"""Training settings (TrainConfig, validated from the config's JSON params), the learning-rate
schedule and the optimizer: what a training run is, apart from the Trainer that runs it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from kdgrid.errors import KdgridError

OPTIMIZER = "adamw: decoupled weight decay on every parameter"  # in checkpoints' fingerprint


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW: weight decay shrinks each parameter by lr * wd * p per step, apart from the
    gradient's moments (Loshchilov & Hutter 2019), as fairseq's Adam does. Coupled L2 (torch's
    Adam with weight_decay) would divide the decay by the gradient's running scale, a far
    stronger and parameter-dependent pull. Like fairseq, every parameter decays (biases, norms
    and embeddings too): the reference recipes' weight_decay 0.01 was tuned that way."""
    params = list(model.parameters())
    return torch.optim.AdamW(params, lr=cfg.warmup_init_lr, betas=cfg.adam_betas, eps=cfg.adam_eps,
                             weight_decay=cfg.weight_decay, **fused(params))


def fused(params) -> dict:
    """One fused kernel for every parameter's Adam update where torch has one (CPU and CUDA float
    weights): a 2+2-layer d256 model's step took 35 ms instead of 239 ms (per-tensor loop) on
    2 CPU threads (bench/teacher_speed.py); the same update up to float rounding."""
    ok = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return {"fused": True} if ok and params else {}


@dataclass
class TrainConfig:
    max_tokens: int = 4096
    update_freq: int = 1
    lr: float = 5e-4
    warmup_updates: int = 4000
    warmup_init_lr: float = 1e-7
    adam_betas: tuple = (0.9, 0.98)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 0.0
    label_smoothing: float = 0.1
    max_updates: int = 0  # 0: no limit
    max_epochs: int = 0  # 0: no limit
    valid_every: int = 1000
    patience: int = 0  # stop after this many validations without improvement; 0: never
    log_every: int = 100
    max_len: int = 256  # training pairs with a longer side are skipped (counted in the log)
    seed: int = 1
    tokens_per_update: int = 0  # > 0: update_freq = ceil(tokens_per_update / max_tokens)
    save_every: int = 0  # also checkpoint every N updates (0: at validations only)
    bf16: str = "auto"  # bfloat16 autocast: "auto" (on GPUs that support it), "true", "false"
    compile: bool = False  # torch.compile the model's loss


    def __post_init__(self):
        for f in dataclasses.fields(self):  # JSON params: a number must arrive as a number
            value, default = getattr(self, f.name), f.default
            wanted = (bool,) if isinstance(default, bool) else (int,) if isinstance(default, int) \
                else (int, float) if isinstance(default, float) else None
            if wanted and (not isinstance(value, wanted) or (bool not in wanted and isinstance(value, bool))):
                raise ValueError(f"{f.name} must be a {type(default).__name__}, got {value!r}")
        self.adam_betas = tuple(self.adam_betas)
        if self.max_updates <= 0 and self.max_epochs <= 0:
            raise ValueError("set max_updates or max_epochs (> 0), or training never stops")
        for name in ("max_tokens", "update_freq", "valid_every", "log_every", "max_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name, ok in (("lr", self.lr > 0), ("adam_eps", self.adam_eps > 0),
                         ("label_smoothing", 0 <= self.label_smoothing < 1),
                         ("weight_decay", self.weight_decay >= 0), ("clip_norm", self.clip_norm >= 0)):
            if not ok:
                raise ValueError(f"{name} is out of range, got {getattr(self, name)}")
        for name in ("tokens_per_update", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        self.bf16 = str(self.bf16).lower()
        if self.bf16 not in ("auto", "true", "false"):
            raise ValueError(f"bf16 must be auto, true or false, got {self.bf16}")
        if self.tokens_per_update:
            self.update_freq = max(1, math.ceil(self.tokens_per_update / self.max_tokens))


# Options that change neither the updates nor the weights: a checkpoint written under other
# values of these is resumed.
NOT_FINGERPRINTED = ("log_every", "save_every", "compile")


def train_config(params: dict) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise KdgridError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    try:
        return TrainConfig(**params)
    except (TypeError, ValueError) as e:
        raise KdgridError(f"training options: {e}") from None


def learning_rate(cfg: TrainConfig, update: int) -> float:
    if update < cfg.warmup_updates:
        return cfg.warmup_init_lr + (cfg.lr - cfg.warmup_init_lr) * update / cfg.warmup_updates
    return cfg.lr * math.sqrt(max(cfg.warmup_updates, 1) / max(update, 1))
