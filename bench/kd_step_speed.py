"""Time per training update of a student plain and with word-level KD (fkl, rkl) and online KD (okd),
in one process: the per-update cost column of bench/student_variants.py without training the cells
(that bench reads whole Snakemake jobs: about 40 core-minutes for the demo's 15 trainings).

The demo's shapes (configs/demo_student_kd.yaml): a student and an untrained cpu_s-shaped AT teacher
(d_model 64, ffn 256, 2+2 layers, 4 heads, dropout 0.1), vocabulary 2000, label smoothing 0.1,
batches of max_tokens 2048 from the demo's synthetic training pairs (words mapped to ids). An update
is what the Trainer does: zero_grad, loss, backward, clip at 1.0, AdamW step (and the adapters' Adam
step for okd). The variants run in turn, one update each per round, so that a machine's drift
falls on every variant alike; each is warmed up first, and the median over rounds is reported.

    python bench/kd_step_speed.py [--kinds nat cmlm transformer] [--variants plain fkl rkl okd]
                                  [--rounds 40] [--threads 1]

It uses only the package's public API, so the same command times an older checkout
(PYTHONPATH=<checkout>/src).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kdgrid import synthetic
from kdgrid.batching import collate, token_batches
from kdgrid.kd import KDSpec, OnlineKD, OnlineSpec, WordKD
from kdgrid.models import build

SHAPE = dict(d_model=64, ffn=256, encoder_layers=2, decoder_layers=2, heads=4, dropout=0.1)
IDS = dict(vocab_size=2000, pad=0, bos=2, eos=3)
FKL = KDSpec(loss="fkl", alpha=0.5, temperature=1.0)
VARIANTS = {"plain": None, "fkl": FKL, "rkl": KDSpec(loss="rkl", alpha=0.5, temperature=1.0),
            "okd": KDSpec(loss="fkl", alpha=0.5, temperature=1.0, online=OnlineSpec(rank=8))}


def batches(n_pairs: int, max_tokens: int) -> list[dict]:
    spec = synthetic.SyntheticSpec(seed=1, train=n_pairs, valid=1, test=1, vocab_size=300, min_len=4, max_len=12)
    words: dict[str, int] = {}
    ids = lambda s: [words.setdefault(w, 5 + len(words) % 1995) for w in s.split()]  # noqa: E731
    pairs = [(ids(s), ids(t)) for s, t in synthetic.generate(spec)["train"]]
    src_lens = [len(s) + 1 for s, _ in pairs]
    tgt_lens = [len(t) + 1 for _, t in pairs]
    groups = token_batches(src_lens, tgt_lens, max_tokens, seed=1)
    return [collate([pairs[i][0] for i in g], [pairs[i][1] for i in g], IDS["pad"], IDS["bos"], IDS["eos"])
            for g in groups]


def variant(kind: str, spec: KDSpec | None):
    torch.manual_seed(0)
    student = build(kind, {**SHAPE, **IDS, **({} if kind == "transformer" else {"mask": 4})})
    model = student
    if spec is not None:
        teacher = build("transformer", {**SHAPE, **IDS})
        model = (OnlineKD if spec.online else WordKD)(student, teacher, spec)
    model.train()
    optims = [torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.01)]
    if spec is not None and spec.online:
        optims.append(torch.optim.Adam(model.adapters.parameters(), lr=1e-4))
    return model, optims


def update(model, optims, batch) -> float:
    start = time.process_time()
    for o in optims:
        o.zero_grad(set_to_none=True)
    loss, _ = model.loss(batch, label_smoothing=0.1)
    loss.backward()
    for o in optims:
        torch.nn.utils.clip_grad_norm_([p for g in o.param_groups for p in g["params"]], 1.0)
        o.step()
    return time.process_time() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", default=["nat"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=3000)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = batches(a.pairs, 2048)
    print(f"{len(data)} batches of <= 2048 tokens, mean {statistics.mean(b['ntokens'] for b in data):.0f} "
          f"target tokens; {a.rounds} rounds after {a.warmup} warm-up, {a.threads} thread(s); CPU ms/update, median")
    print("| kind | " + " | ".join(a.variants) + " |\n|---|" + "---:|" * len(a.variants))
    for kind in a.kinds:
        runs = {name: variant(kind, VARIANTS[name]) for name in a.variants}
        times = {name: [] for name in runs}
        for r in range(a.warmup + a.rounds):
            batch = data[r % len(data)]
            for name, (model, optims) in runs.items():
                ms = 1000 * update(model, optims, batch)
                if r >= a.warmup:
                    times[name].append(ms)
        print(f"| {kind} | " + " | ".join(f"{statistics.median(t):.1f}" for t in times.values()) + " |")


if __name__ == "__main__":
    main()
