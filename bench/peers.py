"""kdgrid beside its peers on this machine's CPU threads, on the same synthetic data and subwords:
fairseq (`fairseq-train`, `fairseq-generate`) and CTranslate2, each run beside its kdgrid
counterpart, the two alternating (kdgrid first in even repeats, the peer first in odd ones) so that
a change in the machine's load hits both; medians over the repeats, and kdgrid/peer ratios (> 1:
kdgrid better; for latency and memory, where lower is better, peer/kdgrid): the median of the
per-repeat ratios of each kdgrid run to the peer run beside it, with their range, since on a busy
machine the load can change more between repeats than between two neighbouring runs.

- training target tokens/s (eos included, for both; bos, which fairseq's NAT task prepends to
  targets, excluded) of the AT (fairseq `transformer`), the vanilla NAT
  (`nonautoregressive_transformer`, source-embedding copy as decoder input, as kdgrid's `nat`)
  and CMLM (`cmlm_transformer`): same size, max_tokens, dropout 0.1, label smoothing 0.1, Adam
  (0.9, 0.98), inverse-sqrt warm-up and number of updates; timed from the end of the first log
  interval (warm-up) to the end of the last update: kdgrid by a hook on its optimizer's step,
  fairseq by its own per-interval wps.
- decoding sentences/s at batch 64 (the test set) and latency at batch 1 (ms per sentence, the
  first --latency-sentences of it), cold (no untimed warm-up batch: fairseq-generate has none),
  timing the decoder calls only, as fairseq-generate's own "Translated N sentences ... in Xs"
  timer does (model loading, subword encoding and detokenization excluded: kdgrid's model.generate,
  CTranslate2's translate_batch; kdgrid's whole translate() time is in peers.json): AT beam 5 and
  greedy with kdgrid (torch) vs fairseq-generate, and kdgrid with its CTranslate2 backend (kdgrid's
  weights; its generate() includes its id/piece conversions) vs CTranslate2 on fairseq's weights
  (ct2-fairseq-converter, Translator.translate_batch with max_batch_size, patience 1); NAT one
  pass and CMLM 10 passes (length beam 1, no early stop) vs fairseq-generate --task
  translation_lev --iter-decode-max-iter 0 / 9 --iter-decode-force-max-iter.
- the peak RSS of every run: each measured run is its own subprocess, read with os.wait4.

Same work: every decoding row shows each side's mean output length (words) and BLEU against the
synthetic references (sacrebleu), every training row the target tokens per update. Both toolkits
read the same sentencepiece pieces (fairseq-preprocess --srcdict holds kdgrid's whole vocabulary,
--joined-dictionary). The decoding models (a few hundred updates, cached in the work dir) are
each toolkit's own, so their outputs differ as two trainings do; the CTranslate2 rows decode the
same weights as their kdgrid / fairseq counterparts. Differences that stay are printed with the
table.

    bench/.peers-venv/bin/python bench/peers.py [--quick] [--sizes 2+2 tiny] [--threads 2]
        [--max-tokens 2048] [--batches 64 1] [--repeats 3] [--parts train at nat]

Defaults: the synthetic corpus with one target mode (8000 training pairs, BLEU against its single
reference), a joint 2000-piece BPE vocabulary, 40 updates per timed training run, 3 repeats: ~11-14
minutes on 2 busy cores once the decoding models exist; training those 6 models (300 updates each)
adds ~15-35 minutes to the first run. --quick (small data, 30-update models, one repeat): ~4 minutes.

Work files (data, models, logs, peers.json with every run's numbers) go to bench/.peers-work/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable  # the peers' venv: fairseq, ctranslate2 and kdgrid side by side
SIZES = {"2+2": dict(layers=2, d_model=256, ffn=1024, heads=4),
         "tiny": dict(layers=3, d_model=256, ffn=1024, heads=4)}  # the paper's `tiny`
LR, WARMUP, DROPOUT, SMOOTHING = 0.002, 100, 0.1, 0.1
MAX_LEN_A, MAX_LEN_B = 1.2, 10  # AT length limit, kdgrid's default, given to every AT decoder
FAIRSEQ_ARCH = {"at": "transformer", "nat": "nonautoregressive_transformer", "cmlm": "cmlm_transformer"}
KDGRID_KIND = {"at": "transformer", "nat": "nat", "cmlm": "cmlm"}
KIND_NAME = {"at": "AT", "nat": "NAT", "cmlm": "CMLM"}
AT_BEAMS = (5, 1)  # beam 5 and greedy
NAT_PASSES = {"nat": 1, "cmlm": 10}

DIFFERENCES = [
    "the decoding models are each toolkit's own training (same data, settings and updates; other initial "
    "weights, batches and dropout draws), so their outputs differ as two trainings do; the CTranslate2 rows "
    "decode the very weights of their kdgrid / fairseq counterparts",
    "fairseq's NAT task (translation_lev) prepends bos to sources and targets: its NAT/CMLM encoder reads "
    "one more token per sentence and its decoder predicts bos + y + eos (kdgrid: y); the bos also counts in "
    "fairseq's max_tokens, so its NAT batches hold a few % fewer target tokens (tok/update)",
    "fairseq batches training sentences by its own sizes and seed, kdgrid by its own: same max_tokens, not "
    "the same batches (tokens/s normalises for it)",
    "kdgrid's training runs end with one validation (200 sentences) and a saved model file, outside the timed "
    "updates but inside their peak RSS; fairseq runs with --disable-validation --no-save",
    "kdgrid's CTranslate2 backend runs beam search with patience 2 (kdgrid.ct2.PATIENCE: CTranslate2 goes on "
    "until 2 x beam hypotheses have finished, so its outputs differ from kdgrid's torch search in ~5 of 1,000 "
    "sentences) and calls translate_batch once per distinct length limit in a batch; CTranslate2 on fairseq's "
    "weights runs with patience 1, one call",
    "AT length limit 1.2 x source + 10: fairseq per batch (longest source), kdgrid per sentence, CTranslate2 "
    "on fairseq's weights per call (longest test source); it matters only for hypotheses that reach it",
    "kdgrid's decoders never emit unk (nor NAT specials); fairseq-generate and CTranslate2-on-fairseq may",
    "the NAT length head: kdgrid's linear layer has a bias, fairseq's has none",
]


# -- running one measured process -------------------------------------------------------------
def environment(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",  # fairseq 0.12's checkpoints are pickles
            "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO / "src")}


# The measured process is started by this small launcher, not by the bench itself: a child's
# ru_maxrss starts from the RSS of the process it was forked from (Linux keeps the pre-exec peak),
# so children of the bench (~300 MB with torch and fairseq imported) would all read >= 300 MB.
# Forked from the launcher (python -S, ~10 MB), every run reads its own peak.
LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(cmd: list, log: Path, threads: int) -> dict:
    """Run `cmd` to completion, output to `log`: its peak RSS in MB (os.wait4's ru_maxrss: the
    process and any child it waited for), the same reading for kdgrid and every peer, and its
    wall seconds (start-up and loading included)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    rss_file = log.with_name(log.name + ".maxrss")
    begin = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call([str(c) for c in (PY, "-S", "-c", LAUNCHER, rss_file, *cmd)], stdout=out,
                               stderr=subprocess.STDOUT, cwd=REPO, env=environment(threads))
    if code:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"exit {code}: {' '.join(map(str, cmd))}\n--- {log} ---\n{tail}")
    return {"rss_mb": int(rss_file.read_text()) / 1024, "wall_s": time.perf_counter() - begin}


# -- data: synthetic text, kdgrid's subwords, fairseq's binarised copy of the same pieces -----
def prepare_data(work: Path, a) -> Path:
    from kdgrid import synthetic, vocab
    from kdgrid.batching import save_ids
    from kdgrid.corpus import write_lines

    data = work / f"data-{a.train_sentences}-{a.test_sentences}-{a.latency_sentences}-v{a.vocab_size}"
    if (data / "done").exists():
        return data
    data.mkdir(parents=True, exist_ok=True)
    # one target mode: each source has one translation (up to synonyms), so BLEU against the
    # single reference measures the decoders, not which mode a model happened to pick
    spec = synthetic.SyntheticSpec(seed=1, train=a.train_sentences, valid=200, test=a.test_sentences, modes=1)
    splits = synthetic.generate(spec)
    splits["lat"] = splits["test"][: a.latency_sentences]
    for split, pairs in splits.items():
        write_lines(data / f"{split}.src", [s for s, _ in pairs])
        write_lines(data / f"{split}.tgt", [t for _, t in pairs])
    v = vocab.train([data / "train.src", data / "train.tgt"], data / "spm.model", a.vocab_size, "bpe", 1.0, 0, 1)
    (data / "pieces").mkdir(exist_ok=True)
    for split, pairs in splits.items():
        for side, lines in (("src", [s for s, _ in pairs]), ("tgt", [t for _, t in pairs])):
            if split in ("train", "valid"):
                save_ids(data / f"{split}.{side}.npz", v.encode(lines))
            write_lines(data / "pieces" / f"{split}.{side}", [" ".join(p) for p in v.sp.encode(lines, out_type=str)])
    # fairseq's dictionary: kdgrid's whole vocabulary but its 5 specials (fairseq has its own 4
    # and masks with unk), so both output layers have the same size (V and V - 1)
    write_lines(data / "dict.txt", [f"{v.sp.id_to_piece(i)} 1" for i in range(5, len(v))])
    p = data / "pieces"
    run([PY, "-m", "fairseq_cli.preprocess", "--source-lang", "src", "--target-lang", "tgt",
         "--trainpref", p / "train", "--validpref", p / "valid", "--testpref", f"{p / 'test'},{p / 'lat'}",
         "--destdir", data / "bin", "--srcdict", data / "dict.txt", "--joined-dictionary", "--workers", "1"],
        data / "preprocess.log", 1)
    (data / "done").touch()
    return data


# -- training -----------------------------------------------------------------------------------
def kdgrid_model_params(kind: str, size: dict) -> dict:
    params = {"d_model": size["d_model"], "ffn": size["ffn"], "encoder_layers": size["layers"],
              "decoder_layers": size["layers"], "heads": size["heads"], "dropout": DROPOUT,
              "attention_dropout": 0.0, "pre_norm": True}
    if kind == "nat":
        params.update(decoder_input="copy", length_beam=1)
    if kind == "cmlm":
        params.update(length_beam=1)
    return params


def kdgrid_train(data: Path, out: Path, kind: str, size: dict, threads: int, max_tokens: int, updates: int,
                 log_every: int) -> dict:
    train = {"max_tokens": max_tokens, "lr": LR, "warmup_updates": WARMUP, "max_updates": updates,
             "log_every": log_every, "valid_every": 10**6, "label_smoothing": SMOOTHING, "seed": 1, "bf16": "false"}
    shutil.rmtree(out / "train", ignore_errors=True)  # a fresh run, never a resumed one
    ran = run([PY, REPO / "bench" / "peers_kdgrid.py", "train", "--kind", KDGRID_KIND[kind],
               "--model-params", json.dumps(kdgrid_model_params(kind, size)), "--train-params", json.dumps(train),
               "--vocab", data / "spm.model", "--train-src", data / "train.src.npz",
               "--train-tgt", data / "train.tgt.npz", "--valid-src", data / "valid.src.npz",
               "--valid-tgt", data / "valid.tgt.npz", "--out", out / "model.pt", "--work-dir", out / "train",
               "--threads", threads, "--timing", out / "timing.json"], out / "log", threads)
    t = json.loads((out / "timing.json").read_text())
    ends, tokens = t["ends"], t["tokens"]
    if len(ends) != updates:
        raise RuntimeError(f"kdgrid ran {len(ends)} updates, {updates} asked ({out / 'log'})")
    timed = tokens[log_every:]  # after the first log interval
    return {"value": sum(timed) / (ends[-1] - ends[log_every - 1]), **ran,
            "tokens_per_update": statistics.mean(timed), "threads": t["threads"]}


def fairseq_train_args(data: Path, kind: str, size: dict, max_tokens: int, updates: int, log_every: int) -> list:
    d, ffn, layers, heads = size["d_model"], size["ffn"], size["layers"], size["heads"]
    args = [PY, "-m", "fairseq_cli.train", data / "bin", "--cpu", "--seed", 1, "--source-lang", "src",
            "--target-lang", "tgt", "--arch", FAIRSEQ_ARCH[kind],
            "--encoder-layers", layers, "--decoder-layers", layers, "--encoder-embed-dim", d,
            "--decoder-embed-dim", d, "--encoder-ffn-embed-dim", ffn, "--decoder-ffn-embed-dim", ffn,
            "--encoder-attention-heads", heads, "--decoder-attention-heads", heads,
            "--encoder-normalize-before", "--decoder-normalize-before", "--share-all-embeddings",
            "--dropout", DROPOUT, "--attention-dropout", 0, "--activation-dropout", 0,
            "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--adam-eps", 1e-8, "--weight-decay", 0,
            "--clip-norm", 0, "--lr", LR, "--lr-scheduler", "inverse_sqrt", "--warmup-updates", WARMUP,
            "--warmup-init-lr", 1e-7, "--max-tokens", max_tokens, "--max-update", updates,
            "--required-batch-size-multiple", 1, "--num-workers", 0, "--log-format", "json",
            "--log-interval", log_every, "--disable-validation", "--label-smoothing", SMOOTHING]
    if kind == "at":
        return args + ["--task", "translation", "--criterion", "label_smoothed_cross_entropy"]
    args += ["--task", "translation_lev", "--criterion", "nat_loss", "--pred-length-offset",
             "--length-loss-factor", 0.1]
    if kind == "nat":
        return args + ["--noise", "full_mask", "--src-embedding-copy"]
    return args + ["--noise", "random_mask"]


def fairseq_train(data: Path, out: Path, kind: str, size: dict, threads: int, max_tokens: int, updates: int,
                  log_every: int) -> dict:
    ran = run(fairseq_train_args(data, kind, size, max_tokens, updates, log_every) + ["--no-save"], out / "log",
              threads)
    intervals = [json.loads(line[line.index("{"):]) for line in (out / "log").read_text().splitlines()
                 if "| train_inner |" in line]
    if len(intervals) != updates // log_every:
        raise RuntimeError(f"fairseq logged {len(intervals)} intervals, {updates // log_every} expected "
                           f"({out / 'log'})")
    tokens = seconds = 0.0
    for k in intervals[1:]:  # after the first log interval
        wpb, bsz, wps = float(k["wpb"]), float(k["bsz"]), float(k["wps"])
        seconds += wpb * log_every / wps
        tokens += (wpb - (bsz if kind != "at" else 0)) * log_every  # y + eos: without the NAT task's bos
    return {"value": tokens / seconds, **ran, "tokens_per_update": tokens / (log_every * (len(intervals) - 1))}


def decoding_models(data: Path, work: Path, size_name: str, a) -> dict:
    """Each toolkit's AT, NAT and CMLM, trained a few hundred updates once (cached), and the
    CTranslate2 conversion of fairseq's AT."""
    size = SIZES[size_name]
    where = work / f"models-{data.name}-{size_name}-u{a.model_updates}"
    models = {}
    for kind in ("at", "nat", "cmlm"):
        out = where / f"kdgrid-{kind}"
        if not (out / "model.pt").exists():
            print(f"  training kdgrid {kind} for decoding ({a.model_updates} updates)", flush=True)
            kdgrid_train(data, out, kind, size, a.threads[0], 2048, a.model_updates, 10)
        models[f"kdgrid-{kind}"] = out / "model.pt"
        out = where / f"fairseq-{kind}"
        if not (out / "checkpoint_last.pt").exists():
            print(f"  training fairseq {kind} for decoding ({a.model_updates} updates)", flush=True)
            run(fairseq_train_args(data, kind, size, 2048, a.model_updates, 10)
                + ["--save-dir", out, "--no-epoch-checkpoints"], out / "log", a.threads[0])
        models[f"fairseq-{kind}"] = out / "checkpoint_last.pt"
    out = where / "ct2-fairseq-at"
    if not (out / "model.bin").exists():
        run([Path(PY).parent / "ct2-fairseq-converter", "--model_path", models["fairseq-at"], "--data_dir",
             data / "bin", "--output_dir", out, "--unsafe_deserialization", "--force"], where / "ct2-convert.log", 1)
    models["ct2-fairseq-at"] = out
    return models


# -- decoding -----------------------------------------------------------------------------------
def kdgrid_decode(data, out, model, options, batch, threads, split, backend="torch") -> dict:
    ran = run([PY, REPO / "bench" / "peers_kdgrid.py", "decode", "--model", model, "--vocab", data / "spm.model",
               "--src", data / f"{split}.src", "--hyp", out / "hyp", "--timing", out / "timing.json",
               "--options", json.dumps(options), "--backend", backend, "--batch", batch, "--threads", threads],
              out / "log", threads)
    t = json.loads((out / "timing.json").read_text())
    return {"seconds": t["seconds"], "translate_seconds": t["translate_seconds"], **ran,
            "hyps": (out / "hyp").read_text().splitlines()}


def fairseq_decode(data, out, checkpoint, kind, beam, batch, threads, split) -> dict:
    args = [PY, "-m", "fairseq_cli.generate", data / "bin", "--path", checkpoint, "--cpu", "--source-lang", "src",
            "--target-lang", "tgt", "--gen-subset", "test" if split == "test" else "test1",
            "--batch-size", batch, "--required-batch-size-multiple", 1, "--num-workers", 0,
            "--post-process", "sentencepiece", "--nbest", 1]
    if kind == "at":
        args += ["--task", "translation", "--beam", beam, "--lenpen", 1.0, "--max-len-a", MAX_LEN_A,
                 "--max-len-b", MAX_LEN_B]
    else:
        args += ["--task", "translation_lev", "--iter-decode-max-iter", NAT_PASSES[kind] - 1,
                 "--iter-decode-force-max-iter", "--iter-decode-eos-penalty", 0, "--beam", 1]
    ran = run(args, out / "log", threads)
    text = (out / "log").read_text()
    done = re.search(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in [\d.]+s \(([\d.]+) sentences/s", text)
    if not done:
        raise RuntimeError(f"no 'Translated ...' line in {out / 'log'}")
    n = int(done.group(1).replace(",", ""))
    hyps = {int(m.group(1)): m.group(2) for m in re.finditer(r"^D-(\d+)\t[^\t]*\t(.*)$", text, re.M)}
    return {"seconds": n / float(done.group(3)), **ran, "hyps": [hyps.get(i, "") for i in range(n)]}


def ct2_decode(data, out, model_dir, beam, batch, threads, split) -> dict:
    ran = run([PY, Path(__file__).resolve(), "ct2-translate", model_dir, data / "pieces" / f"{split}.src",
               data / "spm.model", out / "hyp", out / "timing.json", beam, batch, threads], out / "log", threads)
    t = json.loads((out / "timing.json").read_text())
    return {"seconds": t["seconds"], **ran, "hyps": (out / "hyp").read_text().splitlines()}


def ct2_translate(argv: list[str]) -> None:
    """The CTranslate2 peer run: Translator.translate_batch on fairseq's converted AT, on the
    same source pieces; only translate_batch is timed."""
    import ctranslate2
    import sentencepiece as spm

    model_dir, src, spm_model, hyp, timing = argv[:5]
    beam, batch, threads = map(int, argv[5:8])
    sources = [line.split() for line in Path(src).read_text().splitlines()]
    translator = ctranslate2.Translator(model_dir, device="cpu", compute_type="default", inter_threads=1,
                                        intra_threads=threads)
    limit = int(MAX_LEN_A * (max(map(len, sources)) + 1)) + MAX_LEN_B  # + 1: the source's eos
    begin = time.perf_counter()
    results = translator.translate_batch(sources, max_batch_size=batch, batch_type="examples", beam_size=beam,
                                         length_penalty=1.0, max_decoding_length=limit)
    seconds = time.perf_counter() - begin
    sp = spm.SentencePieceProcessor(model_file=spm_model)
    Path(hyp).write_text("".join(sp.decode_pieces(r.hypotheses[0]) + "\n" for r in results))
    Path(timing).write_text(json.dumps({"seconds": seconds, "sentences": len(sources)}))


# -- the comparisons ----------------------------------------------------------------------------
def comparisons(data: Path, models: dict, size_name: str, threads: int, a, ct2_backend: bool) -> list[dict]:
    """Each row: what is measured, who against whom, the quantity (train | speed | latency) and
    the kdgrid and peer runs (functions of their output folder)."""
    size, rows = SIZES[size_name], []
    if "train" in a.parts:
        for kind in ("at", "nat", "cmlm"):
            for mt in a.max_tokens:
                args = (kind, size, threads, mt, a.updates, a.log_every)
                rows.append({"what": f"train {KIND_NAME[kind]}: target tok/s, max_tokens {mt}", "quantity": "train",
                             "pair": f"kdgrid `{KDGRID_KIND[kind]}` vs fairseq `{FAIRSEQ_ARCH[kind]}`",
                             "kdgrid_run": lambda out, args=args: kdgrid_train(data, out, *args),
                             "peer_run": lambda out, args=args: fairseq_train(data, out, *args)})
    for batch in a.batches:
        split, quantity = ("lat", "latency") if batch == 1 else ("test", "speed")
        shown = "ms/sent at batch 1" if batch == 1 else f"sent/s at batch {batch}"
        if "at" in a.parts:
            for beam in AT_BEAMS:
                opts = {"method": "beam" if beam > 1 else "greedy", "beam": beam, "lenpen": 1.0,
                        "max_len_a": MAX_LEN_A, "max_len_b": MAX_LEN_B}
                run_args = (opts, batch, threads, split)
                what = f"AT {'beam 5' if beam > 1 else 'greedy'}: {shown}"
                rows.append({"what": what, "quantity": quantity, "pair": "kdgrid (torch) vs fairseq-generate",
                             "kdgrid_run": lambda out, r=run_args: kdgrid_decode(data, out, models["kdgrid-at"], *r),
                             "peer_run": lambda out, b=beam, r=run_args[1:]: fairseq_decode(
                                 data, out, models["fairseq-at"], "at", b, *r)})
                if ct2_backend:
                    rows.append({"what": what, "quantity": quantity,
                                 "pair": "kdgrid's CTranslate2 backend vs CTranslate2 on fairseq's weights",
                                 "kdgrid_run": lambda out, r=run_args: kdgrid_decode(
                                     data, out, models["kdgrid-at"], *r, backend="ctranslate2"),
                                 "peer_run": lambda out, b=beam, r=run_args[1:]: ct2_decode(
                                     data, out, models["ct2-fairseq-at"], b, *r)})
        if "nat" in a.parts:
            for kind in ("nat", "cmlm"):
                opts = {"length_beam": 1} | ({"max_iter": NAT_PASSES[kind] - 1, "adaptive": False}
                                             if kind == "cmlm" else {})
                run_args = (opts, batch, threads, split)
                passes = "1 pass" if kind == "nat" else f"{NAT_PASSES[kind]} passes"
                rows.append({"what": f"{KIND_NAME[kind]} {passes}: {shown}", "quantity": quantity,
                             "pair": "kdgrid vs fairseq-generate",
                             "kdgrid_run": lambda out, k=kind, r=run_args: kdgrid_decode(
                                 data, out, models[f"kdgrid-{k}"], *r),
                             "peer_run": lambda out, k=kind, r=run_args[1:]: fairseq_decode(
                                 data, out, models[f"fairseq-{k}"], k, 1, *r)})
    for row in rows:
        row["group"] = (f"{size_name}: {size['layers']}+{size['layers']} layers, d{size['d_model']}, ffn{size['ffn']}, "
                        f"{size['heads']} heads; {threads} threads")
    return rows


def summarise(result: dict, quantity: str, refs: list[str]) -> dict:
    """The measured value of one decoding run and its same-work numbers."""
    from kdgrid.metrics import bleu

    if quantity == "train":
        return result
    hyps = result.pop("hyps")
    n = len(hyps)
    value = 1000 * result["seconds"] / n if quantity == "latency" else n / result["seconds"]
    return {**result, "value": value, "words": statistics.mean(len(h.split()) for h in hyps),
            "bleu": bleu.score(hyps, refs[:n])["bleu"]}


# -- the table ----------------------------------------------------------------------------------
def number(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def paired(kdgrid: list[dict], peer: list[dict], key: str, lower_better: bool) -> str:
    """The median of the per-repeat ratios, each kdgrid run against the peer run beside it (a
    change of the machine's load between repeats cancels out), and their range."""
    ratios = sorted((p[key] / k[key]) if lower_better else (k[key] / p[key]) for k, p in zip(kdgrid, peer))
    spread = f" ({ratios[0]:.2f}-{ratios[-1]:.2f})" if len(ratios) > 1 else ""
    return f"{statistics.median(ratios):.2f}{spread}"


def table(rows: list[dict]) -> str:
    """One markdown table per model size and thread count; medians over the repeats."""
    lines = []
    for group in dict.fromkeys(row["group"] for row in rows):
        lines += ["", f"**{group}**", "",
                  "| measured | kdgrid vs peer | kdgrid | peer | ratio, >1: kdgrid better (range) "
                  "| same work: kdgrid vs peer |",
                  "| --- | --- | ---: | ---: | ---: | --- |"]
        for row in (r for r in rows if r["group"] == group):
            k, p = row["kdgrid"], row["peer_runs"]

            def med(runs, key):
                return statistics.median(r[key] for r in runs)

            km, pm = med(k, "value"), med(p, "value")
            lower_better = row["quantity"] == "latency"
            if row["quantity"] == "train":
                check = f"tok/update {med(k, 'tokens_per_update'):.0f} vs {med(p, 'tokens_per_update'):.0f}"
            else:
                check = (f"{med(k, 'words'):.2f} vs {med(p, 'words'):.2f} words/sent; "
                         f"BLEU {med(k, 'bleu'):.1f} vs {med(p, 'bleu'):.1f}; kdgrid's whole translate() "
                         f"{statistics.median(r['translate_seconds'] / r['seconds'] for r in k):.2f}x its generate()")
            what = row["what"] + (" (lower better; ratio peer/kdgrid)" if lower_better else "")
            lines.append(f"| {what} | {row['pair']} | {number(km)} | {number(pm)} | "
                         f"{paired(k, p, 'value', lower_better)} | {check} |")
            kr, pr = med(k, "rss_mb"), med(p, "rss_mb")
            lines.append(f"| ↳ peak RSS, MB (lower better; ratio peer/kdgrid) | | {kr:.0f} | {pr:.0f} | "
                         f"{paired(k, p, 'rss_mb', True)} | |")
    return "\n".join(lines)


def vocabularies(data: Path) -> str:
    from kdgrid.vocab import Vocab

    fairseq_dict = len((data / "bin" / "dict.src.txt").read_text().splitlines()) + 4  # + its 4 specials
    return f"vocabulary kdgrid {len(Vocab.load(data / 'spm.model'))}, fairseq {fairseq_dict}"


def versions() -> str:
    from importlib.metadata import version  # without importing fairseq here (its import logs)

    return ", ".join(f"{name} {version(package)}" for name, package in
                     (("torch", "torch"), ("fairseq", "fairseq-fixed"), ("ctranslate2", "ctranslate2")))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ct2-translate"]:  # a measured run started by this script
        ct2_translate(argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["2+2"],
                    help="2+2: 2+2 layers d256 ffn1024 4 heads; tiny: the paper's 3+3 of the same widths")
    ap.add_argument("--threads", nargs="+", type=int, default=[2], help="CPU threads given to both toolkits")
    ap.add_argument("--max-tokens", nargs="+", type=int, default=[2048], help="training batch budget(s)")
    ap.add_argument("--batches", nargs="+", type=int, default=[64, 1],
                    help="decoding batch sizes: 1 times latency on --latency-sentences, others sent/s on the test set")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parts", nargs="+", choices=["train", "at", "nat"], default=["train", "at", "nat"])
    ap.add_argument("--updates", type=int, default=40, help="updates per timed training run")
    ap.add_argument("--log-every", type=int, default=10, help="log interval; the first is warm-up, untimed")
    ap.add_argument("--model-updates", type=int, default=300, help="updates of the (cached) decoding models")
    ap.add_argument("--train-sentences", type=int, default=8000)
    ap.add_argument("--test-sentences", type=int, default=500)
    ap.add_argument("--latency-sentences", type=int, default=50)
    ap.add_argument("--vocab-size", type=int, default=2000)
    ap.add_argument("--work", type=Path, default=REPO / "bench" / ".peers-work")
    ap.add_argument("--quick", action="store_true", help="a ~4 minute smoke run: small data, one repeat")
    a = ap.parse_args(argv)
    if a.quick:
        a.train_sentences, a.test_sentences, a.latency_sentences = 2000, 100, 10
        a.updates, a.log_every, a.model_updates, a.repeats = 20, 5, 30, 1
    if a.updates % a.log_every or a.updates < 2 * a.log_every:
        ap.error("--updates must be a multiple of --log-every, at least two intervals")
    start = time.perf_counter()
    try:  # kdgrid's CTranslate2 backend: its rows only where it imports
        import kdgrid.ct2  # noqa: F401

        ct2_backend = True
    except ImportError:
        ct2_backend = False
    a.work.mkdir(parents=True, exist_ok=True)
    print(f"# kdgrid vs peers ({versions()}); work files in {a.work}", flush=True)
    data = prepare_data(a.work, a)
    refs = {split: (data / f"{split}.tgt").read_text().splitlines() for split in ("test", "lat")}
    all_rows = []
    for size_name in a.sizes:
        models = decoding_models(data, a.work, size_name, a)
        for threads in a.threads:
            rows = comparisons(data, models, size_name, threads, a, ct2_backend)
            for row in rows:
                row["kdgrid"], row["peer_runs"] = [], []
            for repeat in range(a.repeats):
                print(f"  {size_name}, {threads} threads: repeat {repeat + 1}/{a.repeats} "
                      f"({time.perf_counter() - start:.0f}s)", flush=True)
                for number, row in enumerate(rows):
                    sides = [("kdgrid", row["kdgrid_run"]), ("peer_runs", row["peer_run"])]
                    for side, fn in sides if repeat % 2 == 0 else sides[::-1]:
                        out = a.work / "runs" / data.name / size_name / f"t{threads}" / f"{number:02d}-{side}"
                        split = "lat" if row["quantity"] == "latency" else "test"
                        row[side].append(summarise(fn(out / f"r{repeat}"), row["quantity"], refs[split]))
            all_rows += rows
    print()
    print(f"kdgrid vs peers on {a.train_sentences} synthetic training pairs, {a.test_sentences} test / "
          f"{a.latency_sentences} latency sentences, {vocabularies(data)}; {a.updates} updates per training "
          f"run (the first {a.log_every} untimed); medians of {a.repeats} alternating repeat(s); {versions()}")
    if not ct2_backend:
        print("(kdgrid.ct2 is not importable: the CTranslate2-backend rows are left out)")
    print()
    print(table(all_rows))
    print()
    print("Differences in work that remain:")
    for d in DIFFERENCES:
        print(f"- {d}")
    wall = time.perf_counter() - start
    raw = [{**{k: v for k, v in row.items() if not k.endswith("_run")},
            "ratio": paired(row["kdgrid"], row["peer_runs"], "value", row["quantity"] == "latency"),
            "rss_ratio": paired(row["kdgrid"], row["peer_runs"], "rss_mb", True)} for row in all_rows]
    (a.work / "peers.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "rows": raw,
                                                    "versions": versions(), "wall_seconds": wall}, indent=1))
    print(f"\nwall time of the bench: {wall / 60:.1f} min ({a.work / 'peers.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
