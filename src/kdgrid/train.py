"""One Trainer for every model kind.

The Trainer only calls `model.loss(batch, label_smoothing) -> (loss, logs)`; it knows nothing of
model kinds. It owns: AdamW (decoupled weight decay) with inverse-sqrt warmup, token-budget
batches, gradient accumulation, validation with best-checkpoint keeping, atomic checkpoints and
exact resume (model, optimizer, position in the epoch and RNG state), SIGTERM handling, and a
progress line in the log.

Data parallelism (torchrun, one process per GPU): an update is a fixed group of `update_freq`
token-budget batches whatever the number of processes; each process takes its share of the group
and the gradients are summed across processes before the step. So the updates do not depend on
how many GPUs a job got (the weights neither, but for dropout: each process draws its own masks).
Give update_freq >= the number of processes, or some of them idle.

Training wrappers (kdgrid.kd: word-level and online KD) are models too, with two optional hooks:
`student` (the model the main AdamW optimizes and the output file holds) and
`extra_optimizers(cfg) -> {name: (optimizer, peak lr)}` (e.g. an online-KD teacher's adapters),
stepped, clipped and checkpointed with the main one, their lr on the same schedule scaled to
their own peak.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import signal
import sys
from pathlib import Path

import numpy as np
import torch

from kdgrid import checkpoint
from kdgrid.batching import Ids, collate, token_batches
from kdgrid.errors import KdgridError, atomic_output
from kdgrid.progress import Progress, log
from kdgrid.train_config import (  # noqa: F401  (re-exported: kdgrid.train.TrainConfig etc.)
    NOT_FINGERPRINTED,
    OPTIMIZER,
    TrainConfig,
    learning_rate,
    make_optimizer,
    train_config,
)


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer:
    def __init__(self, model, train: tuple[Ids, Ids], valid: tuple[Ids, Ids], cfg: TrainConfig,
                 work_dir, meta: dict):
        self.model, self.cfg, self.meta = model, cfg, meta
        self.student = getattr(model, "student", model)  # what is optimized by AdamW and saved
        self.device = next(model.parameters()).device
        self.rank, self.world = _distributed()
        self.main = self.rank == 0  # the process that writes files and logs
        self.specials = (model.cfg.pad, model.cfg.bos, model.cfg.eos)
        self.train_src, self.train_tgt, self.keep = self._usable(*train, "training")
        self.valid = valid
        self.work = Path(work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_FINGERPRINTED}
        data = hashlib.sha256()  # a checkpoint trained on other data (a regenerated set) is not resumed
        for part in (*train, *valid):
            data.update(np.ascontiguousarray(part.ids).tobytes())
            data.update(np.ascontiguousarray(part.offsets).tobytes())
        self.fingerprint = hashlib.sha256(json.dumps(
            {"train": settings, "model": meta.get("model_config"), "kind": model.kind,
             "data": data.hexdigest(),
             **({"wrapper": meta["wrapper"]} if meta.get("wrapper") else {}),  # plain runs: as before
             # Adam and AdamW differ only with weight decay: runs without it keep their checkpoints
             **({"optimizer": OPTIMIZER} if cfg.weight_decay > 0 else {})},
            sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.optim = make_optimizer(self.student, cfg)
        self.extra = model.extra_optimizers(cfg) if hasattr(model, "extra_optimizers") else {}
        self.state = {"update": 0, "epoch": 1, "batch": 0, "best": math.inf, "bad_valids": 0,
                      "history": []}
        self._stop_signal = None  # set by the SIGTERM handler
        self._stop_agreed = False  # with several processes: set once every process knows
        self.bf16 = cfg.bf16 == "true" or (cfg.bf16 == "auto" and self.device.type == "cuda"
                                           and torch.cuda.is_bf16_supported())
        # compile the loss only: generate() has data-dependent loops that gain nothing from it
        self._compiled = torch.compile(model.loss, dynamic=True) if cfg.compile else None

    def _log(self, message: str) -> None:
        if self.main:
            log(message)

    def _usable(self, src: Ids, tgt: Ids, what: str):
        if len(src) != len(tgt):
            raise KdgridError(f"{what} data: {len(src)} source but {len(tgt)} target sentences")
        sl, tl = src.lengths, tgt.lengths
        keep = np.flatnonzero((sl > 0) & (tl > 0) & (sl <= self.cfg.max_len) & (tl <= self.cfg.max_len))
        if len(keep) == 0:
            raise KdgridError(f"{what} data: no usable sentence pair (all empty or longer than "
                              f"max_len {self.cfg.max_len})")
        if len(keep) < len(src) and self.main:
            log(f"{what} data: skipping {len(src) - len(keep)} of {len(src)} pairs "
                f"(empty, or a side longer than max_len {self.cfg.max_len})")
        return src, tgt, keep

    # -- batches ----------------------------------------------------------------------------
    def _data_init(self) -> None:
        """Models with data-dependent initialization (FlowSeq's actnorms) get the first batch of
        the first update, the same on every process, before training starts: every process then
        starts from the same weights without a collective inside a forward pass."""
        if hasattr(self.model, "data_init"):
            first = self._epoch_batches(1)[0]
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(self.cfg.seed)
                self.model.data_init(self._collate(self.train_src, self.train_tgt, first))

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        k = self.keep
        batches = token_batches(self.train_src.lengths[k], self.train_tgt.lengths[k],
                                self.cfg.max_tokens, seed=self.cfg.seed * 100003 + epoch)
        return [k[b] for b in batches]

    def _collate(self, src: Ids, tgt: Ids, idx) -> dict:
        batch = collate([src[i] for i in idx], [tgt[i] for i in idx], *self.specials)
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _loss(self, batch: dict, label_smoothing: float):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return (self._compiled or self.model.loss)(batch, label_smoothing=label_smoothing)

    # -- checkpoints ------------------------------------------------------------------------
    def _rng_state(self) -> dict:
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.world == 1:
            return {"per_rank": [rng]}
        import torch.distributed as dist

        every = [None] * self.world
        dist.all_gather_object(every, rng)  # each process has its own dropout stream
        return {"per_rank": every}

    def _set_rng_state(self, saved) -> None:
        if torch.is_tensor(saved):  # checkpoints of kdgrid before multi-process training
            saved = {"per_rank": [{"cpu": saved}]}
        per_rank = saved["per_rank"]
        if len(per_rank) != self.world:
            log(f"the checkpoint was written by {len(per_rank)} process(es), this run has "
                f"{self.world}: dropout draws continue from fresh seeds")
            torch.manual_seed(self.cfg.seed + 1_000_003 * self.rank + self.state["update"])
            return
        mine = per_rank[self.rank]
        torch.set_rng_state(mine["cpu"])
        if "cuda" in mine and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"], self.device)

    def _save_state(self) -> None:
        rng = self._rng_state()  # collective: every process takes part
        if not self.main:
            return
        payload = {"fingerprint": self.fingerprint, "state": self.state,
                   "model": self.model.state_dict(), "optim": self.optim.state_dict(), "rng": rng}
        if self.extra:
            payload["extra_optim"] = {name: opt.state_dict() for name, (opt, _) in self.extra.items()}
        last, prev = self.work / "last.pt", self.work / "prev.pt"
        with atomic_output(self.work / "last.pt.new", "path") as tmp:
            torch.save(payload, tmp)
        if last.exists():
            last.replace(prev)  # keep one older checkpoint in case `last` is ever unreadable
        (self.work / "last.pt.new").replace(last)

    def _resume(self) -> None:
        for name in ("last.pt", "prev.pt"):
            path = self.work / name
            if not path.exists():
                continue
            try:
                payload = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as e:  # noqa: BLE001 - any unreadable file: fall back to the older one
                log(f"WARNING: checkpoint {path} is unreadable ({type(e).__name__}: {e}); "
                    "trying the previous one")
                continue
            if payload.get("fingerprint") != self.fingerprint:
                self._log(f"checkpoint {path} was written for different settings; starting a fresh "
                          f"run (old checkpoints kept in {self.work}/stale/)")
                if self.main:
                    stale = self.work / "stale"
                    stale.mkdir(exist_ok=True)
                    for f in ("last.pt", "prev.pt", "best.pt"):
                        if (self.work / f).exists():
                            (self.work / f).replace(stale / f)
                return
            self.model.load_state_dict(payload["model"])
            for group in payload["optim"]["param_groups"]:  # a checkpoint from before the fused
                group["fused"] = self.optim.defaults.get("fused")  # optimizer resumes with it
            self.optim.load_state_dict(payload["optim"])
            for name, (opt, _) in self.extra.items():
                opt.load_state_dict(payload["extra_optim"][name])
            self.state = payload["state"]
            self._set_rng_state(payload["rng"])
            s = self.state
            self._log(f"resuming from {path}: update {s['update']}, epoch {s['epoch']}, "
                      f"batch {s['batch']}, best valid loss {s['best']:.4f}")
            return
        if any((self.work / n).exists() for n in ("last.pt", "prev.pt")):
            raise KdgridError(f"{self.work}: every checkpoint there is unreadable; delete the "
                              "directory to start over, or restore a checkpoint")

    # -- validation -------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        """Token-weighted valid losses. Students whose loss draws noise (masks, deletions, latent
        samples) get the same draws at every validation, from a forked RNG, so validations are
        comparable and the training RNG stream is untouched (exact resume). Every process
        validates on the whole set, so all of them take the same early-stopping decisions."""
        self.model.eval()
        src, tgt = self.valid
        totals, weight = {}, 0
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed)
            for idx in token_batches(src.lengths, tgt.lengths, self.cfg.max_tokens):
                _, logs = self._loss(self._collate(src, tgt, idx), label_smoothing=0.0)
                n = logs.pop("ntokens")
                weight += n
                for k, v in logs.items():
                    totals[k] = totals.get(k, 0.0) + float(v) * n
        self.model.train()
        return {k: v / max(weight, 1) for k, v in totals.items()}

    # -- the loop ---------------------------------------------------------------------------
    def _on_sigterm(self, signum, frame):
        self._stop_signal = signum

    @property
    def _stopping(self) -> bool:
        # Processes stop together, after the update in which any of them was signalled.
        return self._stop_signal is not None if self.world == 1 else self._stop_agreed

    def _done(self) -> bool:
        s, c = self.state, self.cfg
        if c.max_updates and s["update"] >= c.max_updates:
            return True
        if c.max_epochs and s["epoch"] > c.max_epochs:
            return True
        return bool(c.patience) and s["bad_valids"] >= c.patience

    def _validate_and_save(self) -> None:
        scores = self.validate()
        if self.world > 1:  # decide on rank 0's numbers: kernels may differ in the last bits
            import torch.distributed as dist

            shared = [scores]
            dist.broadcast_object_list(shared, src=0)
            scores = shared[0]
        s = self.state
        if not math.isfinite(scores["loss"]):
            raise KdgridError(f"validation loss is {scores['loss']} at update {s['update']}: "
                              "training diverged; lower lr or raise warmup_updates")
        improved = scores["loss"] < s["best"]
        if improved:
            s["best"], s["bad_valids"] = scores["loss"], 0
            if self.main:
                with atomic_output(self.work / "best.pt", "path") as tmp:
                    torch.save(self.model.state_dict(), tmp)
        else:
            s["bad_valids"] += 1
        s["history"].append({"update": s["update"], "epoch": s["epoch"], **scores})
        shown = " ".join(f"{k} {v:.4f}" for k, v in scores.items())
        self._log(f"valid | update {s['update']} | {shown}{' | best' if improved else ''}")
        self._save_state()

    def run(self, output) -> dict:
        self._resume()
        if self.state["update"] == 0:
            self._data_init()
            torch.manual_seed(self.cfg.seed + 1_000_003 * self.rank)  # dropout stream; a resumed
            # run restores its own
        self.model.train()
        old = signal.signal(signal.SIGTERM, self._on_sigterm)
        c = self.cfg
        batches_per_epoch = len(self._epoch_batches(1))
        total = c.max_updates or (c.max_epochs * math.ceil(batches_per_epoch / c.update_freq))
        progress = Progress("train", total, done=self.state["update"])
        wrapped = f" with {type(self.model).__name__}" if self.student is not self.model else ""
        self._log(f"training {self.model.kind}{wrapped}: {sum(p.numel() for p in self.model.parameters()):,} "
                  f"parameters, {len(self.keep):,} pairs, {batches_per_epoch} batches/epoch, "
                  f"{c.update_freq} batch(es) per update over {self.world} process(es), "
                  f"{total} updates planned, {torch.get_num_threads()} threads, device "
                  f"{self.device}{', bf16 autocast' if self.bf16 else ''}"
                  f"{', compiled' if c.compile else ''}")
        try:
            while not self._done() and not self._stopping:
                self._train_epoch(progress)
            if self._stopping:
                self._save_state()
                self._log(f"received signal {self._stop_signal}: checkpoint saved at update "
                          f"{self.state['update']}; rerun to resume")
                sys.exit(143)
            if not self.state["history"] or self.state["history"][-1]["update"] != self.state["update"]:
                self._validate_and_save()
        finally:
            signal.signal(signal.SIGTERM, old)
        if self.world > 1:  # no collective after the output is written: a late failure of
            import torch.distributed as dist  # another process must not discard a finished run

            dist.barrier()
        if self.main:
            self._finish(output)
        return self.state

    def _finish(self, output) -> None:
        best = torch.load(self.work / "best.pt", map_location="cpu", weights_only=True)
        self.model.load_state_dict(best)
        checkpoint.save_model(output, self.student, {**self.meta, "train_config": dataclasses.asdict(self.cfg),
                                                   "history": self.state["history"],
                                                   "updates": self.state["update"],
                                                   "processes": self.world})
        for name in ("last.pt", "prev.pt", "best.pt"):  # the run is complete: a rerun starts over
            (self.work / name).unlink(missing_ok=True)
        with atomic_output(self.work / "history.json") as f:
            json.dump(self.state["history"], f, indent=1)

    def _sync(self, ntok: int) -> int:
        """Sum gradients and token counts over processes; agree on a stop signal. Returns the
        update's token count over all processes."""
        if self.world == 1:
            return ntok
        import torch.distributed as dist

        params = [p for p in self.model.parameters() if p.requires_grad]
        # A parameter no process used keeps grad None (Adam skips it), as in one process.
        used = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=self.device)
        flags = torch.tensor([ntok, int(self._stop_signal is not None)], dtype=torch.int64, device=self.device)
        dist.all_reduce(used, op=dist.ReduceOp.MAX)
        dist.all_reduce(flags)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        for p, g, u in zip(params, torch._utils._unflatten_dense_tensors(flat, grads), used.tolist()):
            p.grad = g if u else None
        if flags[1] > 0:
            self._stop_agreed = True
            self._stop_signal = self._stop_signal or signal.SIGTERM
        return int(flags[0])

    def _train_epoch(self, progress: Progress) -> None:
        s, c = self.state, self.cfg
        batches = self._epoch_batches(s["epoch"])
        while s["batch"] < len(batches):
            group = batches[s["batch"]: s["batch"] + c.update_freq]
            if hasattr(self.model, "set_update"):  # a wrapper with a schedule (GLAT's glancing ratio)
                self.model.set_update(s["update"], c.max_updates)
            for optim in (self.optim, *(opt for opt, _ in self.extra.values())):
                optim.zero_grad(set_to_none=True)
            logs_sum, ntok = {}, 0
            for idx in group[self.rank::self.world]:  # this process's share of the update
                loss, logs = self._loss(self._collate(self.train_src, self.train_tgt, idx),
                                        label_smoothing=c.label_smoothing)
                (loss / len(group)).backward()
                n = logs.pop("ntokens")
                ntok += n
                for k, v in logs.items():  # summed on the device: float() here would wait for it every step
                    logs_sum[k] = logs_sum.get(k, 0.0) + (v.detach().double() if torch.is_tensor(v) else v) * n
            total_tokens = self._sync(ntok)
            s["update"] += 1
            lr = learning_rate(c, s["update"])
            for optim, peak in ((self.optim, None), *self.extra.values()):
                if c.clip_norm > 0:  # each optimizer's parameters on their own
                    torch.nn.utils.clip_grad_norm_([p for g in optim.param_groups for p in g["params"]],
                                                   c.clip_norm)
                for group_ in optim.param_groups:
                    group_["lr"] = lr if peak is None else lr * peak / c.lr
                optim.step()
            s["batch"] += len(group)
            progress.step(tokens=total_tokens)
            if s["update"] % c.log_every == 0 and self.main:
                shown = " ".join(f"{k} {float(v) / max(ntok, 1):.3f}" for k, v in logs_sum.items())
                progress.report(f"epoch {s['epoch']} | {shown} | lr {learning_rate(c, s['update']):.2e}")
            if s["update"] % c.valid_every == 0:
                self._validate_and_save()
            elif c.save_every and s["update"] % c.save_every == 0:
                self._save_state()
            if self._done() or self._stopping:
                return
        s["epoch"] += 1
        s["batch"] = 0
