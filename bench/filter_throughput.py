"""The corpus filter's throughput: pairs/s of the filter student (filter_apply's keep_mask, the
default filter.student size) on N CPU threads, beside a reference measured in the same run on the
same pairs: the teacher's pair embeddings (filter_teacher's work; a cpu_s-sized AT, d128, 2+2
layers), i.e. what filtering with the teacher itself would cost. The two are timed in turn,
repeat by repeat, so a change in the machine's load hits both; each runs once untimed first.
Untrained weights: the speed does not depend on them. With --png, a bar chart of both.

    python bench/filter_throughput.py [--threads 2] [--pairs 2000] [--repeats 3] [--png bench/filter_throughput.png]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from kdgrid.filter.apply import keep_mask
from kdgrid.filter.embed import pair_embeddings
from kdgrid.filter.student import StudentConfig, build_student
from kdgrid.models import build

VOCAB, PAD, BOS, EOS = 4000, 0, 2, 3


def pairs(n: int, seed: int = 7):
    """Multi30k-like lengths: 8-20 subwords a side."""
    rng = np.random.default_rng(seed)
    side = [rng.integers(5, VOCAB, size=rng.integers(8, 21)).tolist() for _ in range(2 * n)]
    return side[:n], side[n:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--png", help="write a bar chart of pairs/s here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    student = build_student(StudentConfig(vocab_size=VOCAB, pad=PAD, sep=EOS), seed=1)
    teacher = build("transformer", {"vocab_size": VOCAB, "pad": PAD, "bos": BOS, "eos": EOS, "d_model": 128,
                                    "ffn": 512, "encoder_layers": 2, "decoder_layers": 2, "heads": 4,
                                    "dropout": 0.1}).eval()
    src, tgt = pairs(a.pairs)
    runs = {"filter student (keep_mask)": lambda: keep_mask(student, src, tgt, 0.5),
            "teacher pair embeddings (reference)": lambda: pair_embeddings(teacher, src, tgt)}
    for run in runs.values():  # warm-up
        run()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(a.repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            rates[name].append(a.pairs / (time.perf_counter() - started))
    print(f"{a.pairs} pairs, {a.threads} CPU thread(s), {a.repeats} repeats: pairs/s median (min-max)")
    for name, r in rates.items():
        print(f"  {name:38s} {statistics.median(r):9.0f}  ({min(r):.0f}-{max(r):.0f})")
    ratio = statistics.median(rates[list(runs)[0]]) / statistics.median(rates[list(runs)[1]])
    print(f"  the student filters {ratio:.1f}x as many pairs/s as the teacher embeds")
    if a.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 2.4))
        names = list(rates)
        ax.barh(names, [statistics.median(rates[n]) for n in names], color=["tab:blue", "tab:gray"])
        ax.set_xlabel(f"pairs/s on {a.threads} CPU thread(s) (median of {a.repeats})")
        ax.invert_yaxis()
        fig.tight_layout()
        fig.savefig(a.png, dpi=120)
        print(f"wrote {a.png}")


if __name__ == "__main__":
    main()
