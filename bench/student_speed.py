"""Decoding speed of every student beside the AT teacher's beam-5 and greedy, in the same run:
sentences/s at batch 64 and latency (ms/sentence) at batch 1, on demo-corpus test sources, with
the mean number of refinement passes (model steps per sentence) and the mean output length of
each row, so that a speed is never read without the work behind it.

Every configuration decodes one batch of 64 and one single sentence untimed before it is timed
(warm-up). The non-autoregressive rows call the refinement loop (kdgrid.refine) directly with the
options their label names, to count passes; where the model's generate() accepts the same
options, the warm-up checks that it gives the same outputs (the bench stops if not). FlowSeq's
noisy parallel decoding (NPD) ranks its samples with the AT teacher of the run
(kdgrid.rescore.Rescorer, as `evaluate --rescorer` does); Mask-Predict's "T=k" rows always run all
k iterations (no adaptive stop), as the algorithm defines them.

With --models DIR (a workflow results folder such as results/demo_students) the trained models
there are used: students/<name>/<data>/model.pt and teachers/<name>/model.pt (the first teacher
is the AT reference and the NPD rescorer). Iterative models other than Mask-Predict stop when
their output settles, as in evaluation ("adaptive stop"); output lengths are the models' own and
are reported beside the timing.

Without it, untrained models of one size (--size: d128 2+2 layers, as the demo's cpu_m teacher,
or Transformer-base d512 6+6) are built and the comparison is made at equal output lengths and a
stated number of passes: every model emits as many tokens as the source has (EOS included): the AT never ends
before its length limit (max_len_a 1, max_len_b 0: the search forces EOS there), the NATs' length
heads give the source length, and LevT's and InsT's length cap is the source length (max_len_a 1,
max_len_b 0; untrained, they fill it within a few passes). Iterative students run every allowed
pass (max_iter + 1, "all passes": the slowest case), since an untrained model's adaptive stop says
nothing about a trained one's; --adaptive lets them stop when their output settles instead (an
untrained demo-size LevT then stops after ~2 passes, InsT after ~log2(length) + 2, iNAT
after 2).

    python bench/student_speed.py [--models results/demo_students [--src FILE]] [--size demo|base]
                                  [--threads 1] [--repeat K] [--sentences N] [--adaptive]

At batch 1 on a CPU the AT's latency is about the encoder plus one decoder pass per output token,
the NAT's the encoder plus one pass per refinement step, so the NAT's lead grows with the output
length and shrinks with the passes.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
from pathlib import Path

import torch

from kdgrid import synthetic
from kdgrid.batching import pad_stack
from kdgrid.checkpoint import load_model
from kdgrid.models import build
from kdgrid.refine import refine
from kdgrid.rescore import Rescorer
from kdgrid.vocab import EOS, PAD

SIZES = {"demo": dict(d_model=128, ffn=512, encoder_layers=2, decoder_layers=2, heads=4, dropout=0.0),
         "base": dict(d_model=512, ffn=2048, encoder_layers=6, decoder_layers=6, heads=8, dropout=0.0)}
# Rows per kind: label and options. NAT-family options go to kdgrid.refine.refine: max_iter (passes
# - 1), length_beam, adaptive (None: "all passes" for untrained models, else the model's own as in
# evaluation), samples (FlowSeq); rescore: rank the candidates with the run's AT teacher.
DECODE = {"transformer": [("beam-5", {"method": "beam", "beam": 5}), ("greedy", {"method": "greedy"})],
          "nat": [("1 pass", {"max_iter": 0})],
          "inat": [("max_iter 10", {"max_iter": 10})],
          "cmlm": [("T=10, 5 lengths", {"max_iter": 9, "length_beam": 5, "adaptive": False}),
                   ("T=4, 1 length", {"max_iter": 3, "length_beam": 1, "adaptive": False})],
          "levt": [("max_iter 10", {"max_iter": 10})], "inst": [("max_iter 20", {"max_iter": 20})],
          "flowseq": [("argmax z", {"samples": 1}),
                      ("NPD 5 samples + AT rescoring", {"samples": 5, "rescore": True})],
          "ctc": [("1 pass, argmax per position", {})],
          "dat": [("1 pass, lookahead", {"method": "lookahead"}),
                  ("1 pass, joint-Viterbi", {"method": "joint_viterbi"})]}
# Kinds decoded by their own generate() in one pass (no refinement loop, no length head): an
# untrained one's output length is whatever its argmax path collapses to (reported beside the time).
ONE_PASS = {"ctc", "dat"}


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
            yield f"{path.parent.relative_to(root)}", model.eval()
        return
    for kind in DECODE:
        torch.manual_seed(0)
        extra = {"mask": 4} if kind != "transformer" else {}
        extra.update({"latent": 64} if kind == "flowseq" else {})
        extra.update({"max_len_a": 1.0, "max_len_b": 0} if kind in ("levt", "inst") else {})
        model = build(kind, dict(vocab_size=2000, pad=0, bos=2, eos=3, **SIZES[args.size], **extra)).eval()
        yield kind, source_lengths(model)


def source_lengths(model):
    """An untrained model made to emit as many tokens as the source has, so that every model
    decodes the same lengths: the AT's EOS is forbidden until its length limit (max_len_a 1,
    max_len_b 0: the search forces EOS there), the NATs' length heads give the source length.
    (LevT and InsT are built with their length cap at the source length.)"""
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


class Row:
    """One decoding configuration of one model: `run(batch)` -> (outputs, passes or None)."""

    def __init__(self, model, label: str, opts: dict, trained: bool, adaptive_untrained: bool, teacher):
        self.model, self.label = model, label
        cfg = model.cfg
        if model.kind == "transformer":
            self.opts = dict(opts) if trained else {**opts, "max_len_a": 1.0, "max_len_b": 0}
            return
        if model.kind in ONE_PASS:
            self.opts = dict(opts)
            return
        adaptive = opts.get("adaptive")
        if adaptive is None:
            adaptive = getattr(cfg, "adaptive", True) if trained else adaptive_untrained
        self.opts = {"max_iter": opts.get("max_iter", getattr(cfg, "max_iter", 0)),
                     "length_beam": opts.get("length_beam", getattr(cfg, "length_beam", 1)),
                     "adaptive": adaptive}
        if "samples" in opts:
            self.opts["samples"] = opts["samples"]
        if opts.get("rescore"):
            if teacher is None:
                self.label += " (no AT teacher found: own scores)"
            else:
                self.opts["rescorer"] = Rescorer(teacher, name="AT teacher")
        if "adaptive" not in opts and self.opts["max_iter"] > 0:
            self.label += ", adaptive stop" if adaptive else ", all passes"

    def run(self, src):
        if self.model.kind == "transformer":
            return self.model.generate(src, **self.opts), None
        if self.model.kind in ONE_PASS:
            return self.model.generate(src, **self.opts), [1] * len(src)
        return refine(self.model, src, return_steps=True, **self.opts)

    def check_generate(self, src, out) -> None:
        """The model's own generate() must decode like this row where it takes the same options."""
        if self.model.kind == "transformer" or self.model.kind in ONE_PASS:
            return
        params = inspect.signature(self.model.generate).parameters
        if not self.opts["adaptive"] and self.opts["max_iter"] > 0 and "adaptive" not in params:
            return  # generate() cannot switch the adaptive stop off (yet): nothing to compare
        # options generate() does not name are fixed by it: max_iter 0 (NAT, FlowSeq), no length
        # beam (LevT, InsT), the adaptive stop on (checked above)
        gen = {k: v for k, v in self.opts.items() if k in params}
        if self.model.generate(src, **gen) != out:
            raise SystemExit(f"student_speed: {self.label}: refine() with {self.opts} decodes differently "
                             f"from {self.model.kind}.generate(**{gen}); the bench would time something "
                             "other than the model's decoding")


def timed(row: Row, batches) -> tuple[float, list, list]:
    outs, passes = [], []
    start = time.perf_counter()
    with torch.no_grad():
        for b in batches:
            out, steps = row.run(b)
            outs += out
            passes += steps or []
    return time.perf_counter() - start, outs, passes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models")
    ap.add_argument("--size", choices=sorted(SIZES), default="demo", help="untrained models' size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1,
                    help="repeat each source K times: longer sentences (demo sources average ~10 tokens)")
    ap.add_argument("--sentences", type=int, default=256)
    ap.add_argument("--src", help="with --models: source sentences to decode (default: the demo generator's)")
    ap.add_argument("--adaptive", action="store_true",
                    help="untrained iterative students stop when their output settles (default: all passes)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    src = sources(args.sentences)
    if args.models:  # use the workflow's own vocabulary ids through its sentencepiece model
        from kdgrid.vocab import Vocab

        vocab = Vocab.load(Path(args.models) / "vocab" / "spm.model")
        if args.src:  # the corpus's own sentences (e.g. results/multi30k/data/test.src)
            from kdgrid.corpus import read_lines

            src = vocab.encode(read_lines(args.src)[: args.sentences])
        else:
            spec = synthetic.SyntheticSpec(seed=1, train=1, valid=1, test=args.sentences, vocab_size=300)
            src = vocab.encode([s for s, _ in synthetic.generate(spec)["test"]])
    src = [s * args.repeat for s in src]
    src.sort(key=len)
    big = [pad_stack(src[i: i + 64], PAD, suffix=EOS) for i in range(0, len(src), 64)]
    step = max(1, len(src) // 64)  # 64 sentences spread over the lengths (src is sorted)
    single = [pad_stack([s], PAD, suffix=EOS) for s in src[::step][:64]]
    rows, reference, teacher = [], None, None
    for name, model in models(args):
        if model.kind == "transformer" and teacher is None:
            teacher = model
        for label, opts in DECODE[model.kind]:
            row = Row(model, label, opts, bool(args.models), args.adaptive, teacher)
            with torch.no_grad():  # warm-up, and the check against generate()
                warm = big[len(big) // 2]
                row.check_generate(warm, row.run(warm)[0])
                row.run(single[len(single) // 2])
            seconds, outs, passes = timed(row, big)
            latency = statistics.mean(timed(row, [b])[0] for b in single) * 1000
            if reference is None and model.kind == "transformer" and label == "beam-5":
                reference = latency
            rows.append((f"{name} ({row.label})", len(src) / seconds, latency,
                         statistics.mean(passes) if passes else None, statistics.mean(len(o) for o in outs)))
    mean_len = statistics.mean(len(s) for s in src)
    what = f"test sentences of {args.src}" if args.src else "demo test sentences"
    print(f"{args.threads} thread(s), {len(src)} {what} ({mean_len:.1f} tokens + EOS), "
          f"{'trained models from ' + args.models if args.models else 'untrained models, ' + str(SIZES[args.size])}")
    print("passes: refinement passes per sentence (mean; AT: one decoder pass per token); "
          "out len: output tokens per sentence (mean)")
    print(f"{'model (decoding)':<52} {'sent/s @64':>10} {'ms/sent @1':>10} {'vs AT beam-5 @1':>15} "
          f"{'passes':>6} {'out len':>7}")
    for name, throughput, latency, passes, length in rows:
        vs = f"{reference / latency:>14.1f}x" if reference else f"{'-':>15}"
        steps = f"{passes:>6.1f}" if passes is not None else f"{'-':>6}"
        print(f"{name:<52} {throughput:>10.1f} {latency:>10.2f} {vs} {steps} {length:>7.1f}")


if __name__ == "__main__":
    main()
