"""The measured runs of bench/peers.py: the synthetic data in both toolkits' formats, kdgrid's and
fairseq's training runs, and the decoding runs of kdgrid (torch or its CTranslate2 backend),
fairseq-generate and CTranslate2 on fairseq's weights; each run its own process, its peak RSS read
with os.wait4 (see peers.py for what is compared and how).

    python bench/peers_runs.py ct2-translate ...   (started by ct2_decode: the CTranslate2 peer run)
"""

from __future__ import annotations

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
def kdgrid_decode(data, out, model, options, batch, threads, split, backend="torch", ct2_search="exact") -> dict:
    ran = run([PY, REPO / "bench" / "peers_kdgrid.py", "decode", "--model", model, "--vocab", data / "spm.model",
               "--src", data / f"{split}.src", "--hyp", out / "hyp", "--timing", out / "timing.json",
               "--options", json.dumps(options), "--backend", backend, "--ct2-search", ct2_search, "--batch", batch,
               "--threads", threads],
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



if __name__ == "__main__" and sys.argv[1:2] == ["ct2-translate"]:
    ct2_translate(sys.argv[2:])
