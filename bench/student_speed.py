"""Decoding speed of every student beside the AT teacher's beam-5 and greedy, in the same run:
sentences/s at batch 64 and latency (ms/sentence) at batch 1, on demo-corpus test sources.

With --models DIR (a workflow results folder such as results/demo_students) the trained models
there are used: students/<name>/<data>/model.pt and teachers/<name>/model.pt, so iterative models
stop when their output settles, as in evaluation. Without it, untrained models of one size
(--size: the demo's d128 2+2 layers, or Transformer-base d512 6+6) are built; iterative students
then run every allowed iteration (the slowest case), and output lengths are made equal for every
model: the AT never ends before it has emitted as many tokens as the source has (EOS included),
and the NATs' length heads predict the source length.

    python bench/student_speed.py [--models results/demo_students] [--size demo|base] [--threads 1]
                                  [--repeat K]

At batch 1 on a CPU the AT's latency is about the encoder plus one decoder pass per output token,
the NAT's the encoder plus one pass, so the NAT's lead grows with the output length.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from kdgrid import synthetic
from kdgrid.batching import pad_stack
from kdgrid.checkpoint import load_model
from kdgrid.models import build
from kdgrid.vocab import EOS, PAD

SIZES = {"demo": dict(d_model=128, ffn=512, encoder_layers=2, decoder_layers=2, heads=4, dropout=0.0),
         "base": dict(d_model=512, ffn=2048, encoder_layers=6, decoder_layers=6, heads=8, dropout=0.0)}
DECODE = {"transformer": [("beam-5", {"method": "beam", "beam": 5}), ("greedy", {"method": "greedy"})],
          "nat": [("1 pass", {})], "inat": [("max_iter 10", {"max_iter": 10})],
          "cmlm": [("T=10, 5 lengths", {"max_iter": 9, "length_beam": 5}),
                   ("T=4, 1 length", {"max_iter": 3, "length_beam": 1})],
          "levt": [("max_iter 10", {"max_iter": 10})], "inst": [("max_iter 20", {"max_iter": 20})],
          "flowseq": [("argmax z", {}), ("NPD 5 samples", {"samples": 5})]}


def sources(n: int):
    spec = synthetic.SyntheticSpec(seed=1, train=1, valid=1, test=n, vocab_size=300)
    words: dict[str, int] = {}
    return [[words.setdefault(w, 5 + len(words) % 1995) for w in s.split()]
            for s, _ in synthetic.generate(spec)["test"]]


def models(args):
    if args.models:
        root = Path(args.models)
        found = sorted(root.glob("teachers/*/model.pt"))[:1] + sorted(root.glob("students/*/*/model.pt"))
        for path in found:
            model, _ = load_model(path)
            yield f"{path.parent.relative_to(root)}", model
        return
    for kind in DECODE:
        torch.manual_seed(0)
        extra = {"mask": 4} if kind != "transformer" else {}
        extra.update({"latent": 64} if kind == "flowseq" else {})
        model = build(kind, dict(vocab_size=2000, pad=0, bos=2, eos=3, **SIZES[args.size], **extra)).eval()
        yield kind, source_lengths(model)


def source_lengths(model):
    """An untrained model made to emit as many tokens as the source has, so that every model
    decodes the same lengths: the AT's EOS is forbidden until its length limit (max_len_a 1,
    max_len_b 0: the search forces EOS there), the NATs' length heads give the source length."""
    if model.kind == "transformer":
        step, eos = model.decode_step, model.cfg.eos

        def no_early_eos(*args):
            lprobs = step(*args)
            lprobs[:, eos] = float("-inf")
            return lprobs

        model.decode_step = no_early_eos
    elif hasattr(model, "length"):
        def source_length(memory, src_pad, beam=1):
            shifts = torch.arange(beam) - beam // 2
            return ((~src_pad).sum(1)[:, None] + shifts[None]).clamp(min=1)

        model.length.predict = source_length
    return model


def timed(model, batches, opts) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for b in batches:
            model.generate(b, **opts)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models")
    ap.add_argument("--size", choices=sorted(SIZES), default="demo", help="untrained models' size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1,
                    help="repeat each source K times: longer sentences (demo sources average ~10 tokens)")
    ap.add_argument("--sentences", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    src = sources(args.sentences)
    if args.models:  # use the workflow's own vocabulary ids through its sentencepiece model
        from kdgrid.vocab import Vocab

        spec = synthetic.SyntheticSpec(seed=1, train=1, valid=1, test=args.sentences, vocab_size=300)
        vocab = Vocab.load(Path(args.models) / "vocab" / "spm.model")
        src = vocab.encode([s for s, _ in synthetic.generate(spec)["test"]])
    src = [s * args.repeat for s in src]
    src.sort(key=len)
    big = [pad_stack(src[i: i + 64], PAD, suffix=EOS) for i in range(0, len(src), 64)]
    step = max(1, len(src) // 64)  # 64 sentences spread over the lengths (src is sorted)
    single = [pad_stack([s], PAD, suffix=EOS) for s in src[::step][:64]]
    rows, reference = [], None
    for name, model in models(args):
        for label, opts in DECODE[model.kind]:
            if model.kind == "transformer" and not args.models:
                opts = {**opts, "max_len_a": 1.0, "max_len_b": 0}
            throughput = len(src) / timed(model, big, opts)
            latency = statistics.mean(timed(model, [b], opts) for b in single) * 1000
            if reference is None and model.kind == "transformer" and label == "beam-5":
                reference = latency
            rows.append((f"{name} ({label})", throughput, latency))
    mean_len = statistics.mean(len(s) for s in src)
    print(f"{args.threads} thread(s), {len(src)} demo test sentences ({mean_len:.1f} tokens), "
          f"{'trained models from ' + args.models if args.models else 'untrained models, ' + str(SIZES[args.size])}")
    print(f"{'model (decoding)':<44} {'sent/s @64':>11} {'ms/sent @1':>11} {'vs AT beam-5 @1':>16}")
    for name, throughput, latency in rows:
        print(f"{name:<44} {throughput:>11.1f} {latency:>11.2f} {reference / latency:>15.1f}x")


if __name__ == "__main__":
    main()
