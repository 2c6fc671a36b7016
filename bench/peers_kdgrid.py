"""kdgrid's side of bench/peers.py: one measured run per process (peers.py reads its peak RSS).

    train:  `python -m kdgrid train` itself (kdgrid.cli.main), with the Trainer subclassed only to
            note when each update's optimizer step ends and how many target tokens (eos included)
            its batches held; written as JSON to --timing.
    decode: a trained model file through kdgrid.translate.translate, with the torch model or the
            CTranslate2 backend (kdgrid.ct2.Ct2Decoder on the same weights), in batches of exactly
            --batch sentences (sorted by source length, as fairseq-generate and CTranslate2 batch);
            the hypotheses go to --hyp, to --timing the seconds spent in the model's generate()
            (what fairseq-generate's timer and a bare translate_batch call cover) and in the whole
            translate() calls (subword encoding, batching and decoding to text too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def train(argv: list[str], timing_path: str) -> int:
    import kdgrid.train
    from kdgrid import cli

    class TimedTrainer(kdgrid.train.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.ends, self.tokens = [], []
            self.optim.register_step_post_hook(lambda *_: self.ends.append(time.perf_counter()))

        def _collate(self, src, tgt, idx):
            batch = super()._collate(src, tgt, idx)
            if self.model.training:  # not the validation batches
                self.tokens.append(batch["ntokens"])  # target tokens + one eos per sentence, any kind
            return batch

        def run(self, output):
            try:
                return super().run(output)
            finally:
                with open(timing_path, "w") as f:
                    json.dump({"ends": self.ends, "tokens": self.tokens, "threads": torch.get_num_threads()}, f)

    kdgrid.train.Trainer = TimedTrainer  # cmd_train imports it from kdgrid.train when it runs
    return cli.main(["train", *argv])


def decode(a) -> None:
    from kdgrid.checkpoint import load_for_decoding
    from kdgrid.corpus import read_lines, write_lines
    from kdgrid.translate import translate

    # as kdgrid's distill and evaluate jobs do (cli._decoding_threads): torch keeps one thread where
    # CTranslate2 decodes
    torch.set_num_threads(1 if a.backend == "ctranslate2" else a.threads)
    model, _, vocab = load_for_decoding(a.model, a.vocab)
    if a.backend == "ctranslate2":
        from kdgrid.ct2 import Ct2Decoder

        model = Ct2Decoder(model, vocab, torch.device("cpu"), "default", a.threads, a.ct2_search)
    generate, in_generate = model.generate, [0.0]

    def timed_generate(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return generate(*args, **kwargs)
        finally:
            in_generate[0] += time.perf_counter() - begin

    model.generate = timed_generate  # translate() calls model.generate: an instance attribute wins
    lines = read_lines(a.src)
    lengths = [len(x) for x in vocab.encode(lines)]
    order = sorted(range(len(lines)), key=lambda i: lengths[i])
    hyps: list = [None] * len(lines)
    in_translate = 0.0
    for start in range(0, len(order), a.batch):
        chunk = order[start: start + a.batch]
        begin = time.perf_counter()
        # a budget no batch reaches: the chunk is one batch of a.batch sentences
        out, _ = translate(model, vocab, [lines[i] for i in chunk], json.loads(a.options), 10**9, a.threads,
                           report_every=1e9)
        in_translate += time.perf_counter() - begin
        for i, hyp in zip(chunk, out):
            hyps[i] = hyp
    write_lines(a.hyp, hyps)
    with open(a.timing, "w") as f:
        json.dump({"seconds": in_generate[0], "translate_seconds": in_translate, "sentences": len(lines),
                   "threads": a.threads}, f)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        timing = argv.index("--timing")
        path = argv[timing + 1]
        return train(argv[1:timing] + argv[timing + 2:], path)
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("verb", choices=["decode"])
    for option in ("--model", "--vocab", "--src", "--hyp", "--timing", "--options"):
        ap.add_argument(option, required=True)
    ap.add_argument("--backend", choices=["torch", "ctranslate2"], default="torch")
    ap.add_argument("--ct2-search", choices=["exact", "fast"], default="exact")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--threads", type=int, default=1)
    decode(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
