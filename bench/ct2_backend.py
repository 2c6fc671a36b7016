"""The CTranslate2 backend against the torch search on a trained teacher: per decoding setting,
seconds, sentences/s, the ratio to torch's time in the same run, the lines whose output differs
from torch's and BLEU / chrF against the references.

    .venv/bin/python bench/ct2_backend.py --model results/multi30k/teachers/cpu_s/model.pt \\
        --vocab results/multi30k/vocab/spm.model --src results/multi30k/data/test.src \\
        --ref results/multi30k/data/test.tgt [--threads 1] [--repeats 3] [--max-tokens 4096] \\
        [--batch N] [--sentences N] [--clock cpu]

Rows: greedy and beam 5 (lenpen 1.0, the length limit 1.2 x source + 10: kdgrid's defaults), each
with torch, CTranslate2 float32 (`ct2_search: exact`, the default, and `fast`) and CTranslate2 int8
through kdgrid (kdgrid.translate.translate, what distillation and evaluation call: subword encoding,
batching by --max-tokens, decoding to text), and bare CTranslate2 on the same weights: the
sentencepiece pieces straight to Translator.translate_batch (max_batch_size --max-tokens tokens,
patience 1, one length limit from the longest source), decoded back to text by sentencepiece: what a
user of CTranslate2 alone would run; for beam search also bare CTranslate2 with patience 2, the
stopping rule of `ct2_search: exact` (what exact pays for its closeness to torch, apart from the
backend; the column "vs bare, same stopping rule" sets exact beam rows against it, every other
CTranslate2 row against patience 1). Each is timed --repeats times, alternating, the median
printed. The CTranslate2 models are built once before timing.

--batch N decodes in batches of exactly N sentences, as bench/peers.py's decoding rows do (batch 64
for speed, 1 for latency): kdgrid's rows call translate() once per N length-sorted sentences (a
caller with N sentences at hand; the sort is untimed), and so do the bare CTranslate2 rows (one
translate_batch call per N sentences: the reference the ratios take); the row "all batches in one
call" gives bare CTranslate2 every sentence in one translate_batch call with max_batch_size N
examples, which spares it the per-call costs that a caller with N sentences at hand pays (at batch
1, ~10% of a short sentence's time on this teacher). --sentences N: the first N lines only.
--clock cpu times the process's CPU seconds instead of wall seconds: with --threads 1 (one compute
thread, none spinning) the work done, whatever else loads the machine; with more threads wall
time is the measure (idle threads spin). With --threads above 1 the CTranslate2 rows run beside a
torch pool of that size, which slows CTranslate2's own threads several-fold (kdgrid's jobs give
torch one thread where CTranslate2 decodes: cli._decoding_threads); bench/peers.py decodes each row
in its own process and shows the backend's multi-thread speed.

    .venv/bin/python bench/ct2_backend.py --reload-cost [--size 1024,4096,6,16] [--vocab-size 8000]

times what seeded sampling pays for a fresh random stream (kdgrid.ct2: once per translate() call
or distillation chunk, never per batch): loading the CTranslate2 translator again, against one
sampling batch of --max-tokens source tokens, on a teacher of --size (d_model,ffn,layers,heads:
the `big` teacher by default) with random weights. Outputs are held to the source length (a
random teacher rarely ends a sentence; a trained one ends near it).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kdgrid.checkpoint import load_for_decoding
from kdgrid.corpus import read_lines
from kdgrid.ct2 import Ct2Decoder
from kdgrid.metrics import bleu
from kdgrid.translate import translate
from kdgrid.vocab import BOS, EOS, PAD, UNK

LENGTH = {"max_len_a": 1.2, "max_len_b": 10}
METHODS = {"greedy": {"method": "greedy"}, "beam 5": {"method": "beam", "beam": 5, "lenpen": 1.0}}
BACKENDS = {"CT2 float32, exact": dict(compute_type="default", search="exact"),
            "CT2 float32, fast": dict(compute_type="default", search="fast"),
            "CT2 int8, exact": dict(compute_type="int8", search="exact")}


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCK["wall"]


def timed(model, vocab, src, options, max_tokens, threads, chunks=None):
    """translate() on all of `src` by --max-tokens, or once per chunk of sentence indices (--batch)."""
    if chunks is None:
        begin = clock()
        hyps, _ = translate(model, vocab, src, options, max_tokens, threads, report_every=1e9)
        return clock() - begin, hyps
    hyps = [None] * len(src)
    begin = clock()
    for chunk in chunks:  # a budget no batch reaches: each chunk is one batch
        for i, hyp in zip(chunk, translate(model, vocab, [src[i] for i in chunk], options, 10**9, threads,
                                           report_every=1e9)[0]):
            hyps[i] = hyp
    return clock() - begin, hyps


def bare_ct2(translator, vocab, src, options, max_tokens, batch=0, patience=1, chunks=None):
    """CTranslate2 alone on the exported weights (kdgrid's sources end with eos: the pieces get it):
    all sentences in one translate_batch call, or (chunks) one call per chunk, as kdgrid's rows are
    called with --batch."""
    if chunks is not None:
        hyps = [None] * len(src)
        seconds = 0.0
        for chunk in chunks:
            spent, out = bare_ct2(translator, vocab, [src[i] for i in chunk], options, max_tokens, batch, patience)
            seconds += spent
            for i, hyp in zip(chunk, out):
                hyps[i] = hyp
        return seconds, hyps
    begin = clock()
    eos = vocab.sp.id_to_piece(EOS)
    pieces = [vocab.sp.encode(line, out_type=str) + [eos] for line in src] if len(src) <= 16 else \
        [p + [eos] for p in vocab.sp.encode(src, out_type=str)]
    limit = int(max(map(len, pieces)) * LENGTH["max_len_a"]) + LENGTH["max_len_b"]
    beam = options.get("beam", 5) if options["method"] == "beam" else 1
    size, kind = (batch, "examples") if batch else (max_tokens, "tokens")
    results = translator.translate_batch(pieces, max_batch_size=size, batch_type=kind, beam_size=beam,
                                         patience=patience, length_penalty=options.get("lenpen", 1.0),
                                         max_decoding_length=limit, max_input_length=0, min_decoding_length=0,
                                         disable_unk=True)
    outs = [[p for p in r.hypotheses[0] if p != eos] for r in results]
    hyps = [vocab.sp.decode(o) for o in outs] if len(outs) <= 16 else vocab.sp.decode(outs)
    return clock() - begin, hyps


class _Pieces:
    """A vocabulary of numbered pieces, for a teacher with random weights (no sentencepiece model)."""

    def __init__(self, size):
        names = {PAD: "<pad>", UNK: "<unk>", BOS: "<s>", EOS: "</s>"}
        self.pieces = [names.get(i, f"w{i}") for i in range(size)]
        self.sp = self

    def id_to_piece(self, i):
        return self.pieces[i]

    def __len__(self):
        return len(self.pieces)


def reload_cost(a) -> None:
    from kdgrid.batching import pad_stack
    from kdgrid.models import build

    d, ffn, layers, heads = map(int, a.size.split(","))
    torch.manual_seed(0)
    model = build("transformer", dict(vocab_size=a.vocab_size, pad=PAD, bos=BOS, eos=EOS, d_model=d, ffn=ffn,
                                      encoder_layers=layers, decoder_layers=layers, heads=heads, dropout=0.0)).eval()
    params = sum(p.numel() for p in model.parameters())
    decoder = Ct2Decoder(model, _Pieces(a.vocab_size), torch.device("cpu"), threads=a.threads)
    length = 25  # source tokens before eos: a Multi30k-like sentence
    gen = torch.Generator().manual_seed(1)
    rows = [torch.randint(5, a.vocab_size, (length,), generator=gen).tolist() for _ in range(a.max_tokens // length)]
    src = pad_stack(rows, PAD, suffix=EOS)
    opts = dict(temperature=1.0, max_len_a=1.0, max_len_b=0)
    loads, batches = [], []
    for r in range(a.repeats):
        begin = time.perf_counter()
        decoder.translator = decoder._open()
        decoder._drawn = False  # a fresh translator: the timed call seeds it without loading again
        loads.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        decoder.generate(src, "sample", seed=r, **opts)  # a fresh stream on the fresh translator
        batches.append(time.perf_counter() - begin)
        decoder._next_seed = None
    load, batch = statistics.median(loads), statistics.median(batches)
    print(f"# teacher d_model {d}, ffn {ffn}, {layers}+{layers} layers, {heads} heads, vocab {a.vocab_size}: "
          f"{params / 1e6:.0f}M parameters; {a.threads} thread(s); median of {a.repeats}")
    print(f"translator load: {load:.2f} s; one sampling batch ({len(rows)} sentences, {src.numel()} source tokens): "
          f"{batch:.2f} s; load / batch: {100 * load / batch:.1f}%; per 5,000-sentence chunk "
          f"({5000 / len(rows):.0f} batches): {100 * load / (batch * 5000 / len(rows)):.2f}%")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for option in ("--model", "--vocab", "--src", "--ref"):
        ap.add_argument(option)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=0, help="sentences per batch (default: batches by --max-tokens)")
    ap.add_argument("--sentences", type=int, default=0, help="decode the first N lines only")
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall", help="time wall or CPU seconds")
    ap.add_argument("--reload-cost", action="store_true", help="time a translator reload against a sampling batch")
    ap.add_argument("--size", default="1024,4096,6,16", help="--reload-cost: d_model,ffn,layers,heads")
    ap.add_argument("--vocab-size", type=int, default=8000, help="--reload-cost: vocabulary size")
    a = ap.parse_args(argv)
    global clock
    clock = CLOCK[a.clock]
    torch.set_num_threads(a.threads)
    if a.reload_cost:
        reload_cost(a)
        return 0
    missing = [o for o in ("model", "vocab", "src", "ref") if getattr(a, o) is None]
    if missing:
        ap.error("the following arguments are required: " + ", ".join(f"--{o}" for o in missing))
    model, _, vocab = load_for_decoding(a.model, a.vocab)
    src, refs = read_lines(a.src), read_lines(a.ref)
    if a.sentences:
        src, refs = src[:a.sentences], refs[:a.sentences]
    chunks = None
    if a.batch:
        lengths = [len(x) for x in vocab.encode(src)]
        order = sorted(range(len(src)), key=lambda i: lengths[i])
        chunks = [order[i:i + a.batch] for i in range(0, len(order), a.batch)]
    decoders = {name: Ct2Decoder(model, vocab, torch.device("cpu"), threads=a.threads, **kw)
                for name, kw in BACKENDS.items()}
    batching = f"batch {a.batch} sentences" if a.batch else f"max_tokens {a.max_tokens}"
    print(f"# {a.model}: {len(src)} sentences, {a.threads} thread(s), {batching}, {a.clock} seconds, "
          f"median of {a.repeats} alternating runs")
    print("| decoding | backend | seconds | sent/s | speed vs torch | speed vs bare CTranslate2 "
          "| vs bare, same stopping rule | lines differing from torch | BLEU | chrF |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for method, opts in METHODS.items():
        opts = {**opts, **LENGTH}
        bare, patient = "bare CTranslate2, same weights", "bare CTranslate2, same weights, patience 2"
        whole = "bare CTranslate2, same weights, all batches in one call"
        # greedy is one call per batch whatever ct2_search says: its fast row would repeat the exact one
        names = [n for n in decoders if opts["method"] == "beam" or "fast" not in n]
        times = {name: [] for name in ["torch", *names, bare, *([patient] if opts["method"] == "beam" else []),
                                       *([whole] if chunks else [])]}
        outputs = {}
        for repeat in range(a.repeats):
            for name in times if repeat % 2 == 0 else list(times)[::-1]:  # each side first in turn
                if name in (bare, patient, whole):
                    seconds, outputs[name] = bare_ct2(decoders["CT2 float32, fast"].translator, vocab, src, opts,
                                                      a.max_tokens, a.batch, 2 if name == patient else 1,
                                                      None if name == whole else chunks)
                else:
                    seconds, outputs[name] = timed(model if name == "torch" else decoders[name], vocab, src, opts,
                                                   a.max_tokens, a.threads, chunks)
                times[name].append(seconds)
        base, bare_s = statistics.median(times["torch"]), statistics.median(times[bare])
        for name, runs in times.items():
            t = statistics.median(runs)
            differ = sum(x != y for x, y in zip(outputs[name], outputs["torch"]))
            score = bleu.score(outputs[name], refs)
            # exact beam search stops as bare CTranslate2 with patience 2 does; every other
            # CTranslate2 row (greedy, fast beam) as bare CTranslate2 with patience 1
            same = patient if name in times and "exact" in name and opts["method"] == "beam" else bare
            same = f"{statistics.median(times[same]) / t:.2f}x" if name.startswith("CT2") else ""
            print(f"| {method} | {name} | {t:.2f} | {len(src) / t:.0f} | {base / t:.2f}x | {bare_s / t:.2f}x "
                  f"| {same} | {differ} | {score['bleu']:.2f} | {score['chrf']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
