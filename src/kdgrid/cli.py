"""`python -m kdgrid VERB ...`: one verb per workflow rule, every file an explicit argument.

Hyperparameters arrive as one JSON object (`--params`), built by the workflow from the validated
config. A KdgridError (bad input) is printed as one line naming the file/line or key, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from kdgrid.errors import KdgridError, read_json, write_json


def _json(value: str, option: str) -> dict:
    try:
        obj = json.loads(value)
    except json.JSONDecodeError as e:
        raise KdgridError(f"{option}: not valid JSON ({e.msg} at column {e.pos + 1})") from None
    if not isinstance(obj, dict):
        raise KdgridError(f"{option}: expected a JSON object")
    return obj


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))


def _device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# -- verbs -----------------------------------------------------------------------------------
def cmd_prepare(a) -> None:
    from kdgrid import corpus, importers

    p = _json(a.params, "--params")
    data = importers.load(p, a.download_dir)
    for split, (src_out, tgt_out) in (("train", a.train), ("valid", a.valid), ("test", a.test)):
        corpus.write_lines(src_out, data[split]["src"])
        corpus.write_lines(tgt_out, data[split]["tgt"])
    wanted = {(split, lang): path for split, lang, path in a.ref_out}
    have = {(split, lang) for split in ("valid", "test") for lang in data[split]["refs"]}
    if set(wanted) != have or bool(a.train_lang) != (data["train"]["lang"] is not None):
        raise KdgridError(f"the corpus has references {sorted(have)} but the workflow asked for "
                          f"{sorted(wanted)}: corpus.multiway and the target languages disagree")
    for (split, lang), path in wanted.items():
        corpus.write_lines(path, data[split]["refs"][lang])
    if a.train_lang:
        corpus.write_lines(a.train_lang, data["train"]["lang"])
    write_json(a.stats, {"source": p["source"], "splits": data["stats"]})


def cmd_vocab(a) -> None:
    from kdgrid import vocab
    from kdgrid.batching import save_ids
    from kdgrid.corpus import read_lines

    if len(a.encode) != len(a.encoded):
        raise KdgridError("--encode and --encoded need the same number of files")
    p = _json(a.params, "--params")
    v = vocab.train(a.train_text, a.model, p["size"], p["model_type"], p["character_coverage"],
                    p["max_sentences"], p["seed"], a.threads)
    for src, dst in zip(a.encode, a.encoded):
        save_ids(dst, v.encode(read_lines(src), threads=a.threads))


def cmd_encode(a) -> None:
    from kdgrid.batching import save_ids
    from kdgrid.corpus import read_lines
    from kdgrid.vocab import Vocab

    save_ids(a.output, Vocab.load(a.vocab).encode(read_lines(a.input), threads=a.threads))


def cmd_train(a) -> None:
    import torch

    from kdgrid.batching import load_ids
    from kdgrid.models import build
    from kdgrid.train import Trainer, train_config
    from kdgrid.vocab import MASK, Vocab

    _threads(a.threads)
    v = Vocab.load(a.vocab)
    tcfg = train_config(_json(a.train_params, "--train-params"))
    model_cfg = {**_json(a.model_params, "--model-params"), **v.model_ids()}
    if a.kind != "transformer":
        model_cfg["mask"] = MASK
    torch.manual_seed(tcfg.seed)  # weight initialisation
    model = build(a.kind, model_cfg).to(_device())
    meta = {**_json(a.labels, "--labels"), "model_config": model_cfg, "seed": tcfg.seed,
            "vocab_sha256": v.sha256, "vocab_model": v.proto}
    trainer = Trainer(model, (load_ids(a.train_src), load_ids(a.train_tgt)),
                      (load_ids(a.valid_src), load_ids(a.valid_tgt)), tcfg, a.work_dir, meta)
    trainer.run(a.out)


def _load_for_decoding(model_path, vocab_path):
    from kdgrid.checkpoint import load_model
    from kdgrid.vocab import Vocab

    model, meta = load_model(model_path, _device())
    v = Vocab.load(vocab_path)
    if meta.get("vocab_sha256") != v.sha256:
        raise KdgridError(f"{model_path} was trained with a different vocabulary than {vocab_path}; "
                          "rerun its training rule")
    return model, meta, v


def cmd_distill(a) -> None:
    from kdgrid.corpus import read_lines, write_lines
    from kdgrid.translate import translate

    if not 0 <= a.shard < a.shards:
        raise KdgridError(f"--shard {a.shard} is outside 0..{a.shards - 1}")
    _threads(a.threads)
    p = _json(a.params, "--params")
    model, _, v = _load_for_decoding(a.model, a.vocab)
    lines = read_lines(a.src)
    lo, hi = a.shard * len(lines) // a.shards, (a.shard + 1) * len(lines) // a.shards
    opts = {k: p[k] for k in p if k not in ("kind", "max_tokens")}
    opts["method"] = p["kind"]
    if "seed" in opts:  # each shard draws its own random numbers
        opts["seed"] = int(opts["seed"]) * 100_003 + a.shard
    texts, _ = translate(model, v, lines[lo:hi], opts, p["max_tokens"], a.threads,
                         what=f"distill shard {a.shard + 1}/{a.shards}")
    write_lines(a.out, texts)


def cmd_gather(a) -> None:
    from kdgrid.corpus import iter_lines, write_lines

    expected = sum(1 for _ in iter_lines(a.src))
    counts = [sum(1 for _ in iter_lines(path)) for path in a.shards]
    if sum(counts) != expected:
        shown = ", ".join(f"{path}: {n}" for path, n in zip(a.shards, counts))
        raise KdgridError(f"the {len(a.shards)} shards hold {sum(counts)} lines but {a.src} has "
                          f"{expected} ({shown}); rerun the distill jobs of the short shards")
    write_lines(a.out, (line for path in a.shards for line in iter_lines(path)))


def cmd_evaluate(a) -> None:
    from kdgrid.corpus import read_lines, read_parallel, write_lines
    from kdgrid.metrics import bleu
    from kdgrid.translate import translate

    _threads(a.threads)
    p = _json(a.params, "--params")
    model, meta, v = _load_for_decoding(a.model, a.vocab)
    src = [s for s, _ in read_parallel(a.src, a.ref[0])]
    refs = [read_lines(r) for r in a.ref]
    for path, r in zip(a.ref, refs):
        if len(r) != len(src):
            raise KdgridError(f"{path}: {len(r)} references but {a.src} has {len(src)} lines")
    opts = {k: val for k, val in p.items() if k != "max_tokens"}
    hyps, stats = translate(model, v, src, opts, p["max_tokens"], a.threads, what="evaluate")
    write_lines(a.hyp, hyps)
    scores = bleu.score(hyps, refs)
    labels = _json(a.labels, "--labels")
    write_json(a.scores, {**labels, **scores, "references": [str(r) for r in a.ref], "decode": stats,
                          "decode_options": opts, "parameters": sum(x.numel() for x in model.parameters()),
                          "updates": meta.get("updates"), "model": a.model})


def cmd_align(a) -> None:
    from kdgrid.metrics.align import align

    p = _json(a.params, "--params")
    align([tuple(pair) for pair in a.pair], a.threads, p.get("n_samplers", 3), p.get("rel_iterations", 1.0))


def cmd_data_metrics(a) -> None:
    from kdgrid.metrics import bleu
    from kdgrid.metrics.complexity import data_metrics

    if bool(a.distilled) != bool(a.distilled_links):
        raise KdgridError("--distilled and --distilled-links go together")
    p = _json(a.params, "--params")
    out = {**_json(a.labels, "--labels"), **data_metrics(a.src, a.real, a.real_links, a.distilled,
                                                         a.distilled_links, p["floor"])}
    if a.distilled:  # how close the teacher's translations are to the real targets
        b = bleu.streamed_bleu(a.distilled, a.real)
        out["bleu_vs_real"], out["bleu_signature"] = b["bleu"], b["bleu_signature"]
    write_json(a.out, out)


def cmd_language_mix(a) -> None:
    from kdgrid.metrics.language import LanguageModels, language_mix

    models = LanguageModels.train(a.train_tgt, a.train_lang)
    write_json(a.out, {**_json(a.labels, "--labels"), **language_mix(models, a.hyp)})


def cmd_aggregate(a) -> None:
    from kdgrid import grid, report
    from kdgrid.errors import atomic_output

    p = _json(a.params, "--params")
    g = grid.build([read_json(f) for f in a.scores], [read_json(f) for f in a.teacher_scores],
                   p["students"], p["columns"], data_metrics=[read_json(f) for f in a.data_metrics],
                   teacher_metrics=[read_json(f) for f in a.teacher_metrics],
                   languages=[read_json(f) for f in a.languages])
    if a.test_src:  # the trivial baseline every student must beat: output the source unchanged
        from kdgrid.corpus import read_lines
        from kdgrid.metrics import bleu

        src = read_lines(a.test_src)
        g["copy_source"] = bleu.score(src, [read_lines(r) for r in a.test_refs])
    grid.write_csv(g, a.csv)
    grid.write_long_csv(g, a.long_csv)
    with atomic_output(a.md) as f:
        f.write(grid.markdown(g, f"kdgrid grid: {p['corpus']}"))
    report.heatmap(g, a.png, title=f"{p['corpus']}: student test BLEU")
    report.bleu_vs_complexity(g, a.complexity_png, title=f"{p['corpus']}: student BLEU against C(d)",
                              pdf=a.complexity_pdf)
    if a.languages_png:
        report.language_mix(g, a.languages_png, title=f"{p['corpus']}: p(language | output)")


# -- argument parsing -------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kdgrid", description=__doc__)
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name, fn, help_):
        p = sub.add_parser(name, help=help_)
        p.set_defaults(fn=fn)
        p.add_argument("--threads", type=int, default=1, help="CPU threads for torch / encoding")
        return p

    p = verb("prepare", cmd_prepare, "build train/valid/test text from the configured corpus")
    p.add_argument("--params", required=True)
    for split in ("train", "valid", "test"):
        p.add_argument(f"--{split}", nargs=2, required=True, metavar=("SRC", "TGT"))
    p.add_argument("--stats", required=True)
    p.add_argument("--download-dir", default="downloads", help="cache for {url, sha256} sides")
    p.add_argument("--train-lang", help="multi-way corpora: the target language of each train line")
    p.add_argument("--ref-out", nargs=3, action="append", default=[], metavar=("SPLIT", "LANG", "PATH"),
                   help="multi-way corpora: where the valid/test references of one language go")

    p = verb("vocab", cmd_vocab, "train the joint sentencepiece model and encode splits")
    p.add_argument("--train-text", nargs="+", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--params", required=True)
    p.add_argument("--encode", nargs="*", default=[])
    p.add_argument("--encoded", nargs="*", default=[])

    p = verb("encode", cmd_encode, "encode one text file with a sentencepiece model")
    for o in ("--vocab", "--input", "--output"):
        p.add_argument(o, required=True)

    p = verb("train", cmd_train, "train any model kind (teachers and students)")
    for o in ("--kind", "--model-params", "--train-params", "--vocab", "--train-src", "--train-tgt",
              "--valid-src", "--valid-tgt", "--out", "--work-dir"):
        p.add_argument(o, required=True)
    p.add_argument("--labels", default="{}")

    p = verb("distill", cmd_distill, "translate one shard of the training sources with a teacher")
    for o in ("--model", "--vocab", "--src", "--out", "--params"):
        p.add_argument(o, required=True)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)

    p = verb("gather", cmd_gather, "concatenate distillation shards, checking the line count")
    p.add_argument("--src", required=True)
    p.add_argument("--shards", nargs="+", required=True)
    p.add_argument("--out", required=True)

    p = verb("evaluate", cmd_evaluate, "decode a test set and score it (BLEU, chrF, speed)")
    for o in ("--model", "--vocab", "--src", "--hyp", "--scores", "--params"):
        p.add_argument(o, required=True)
    p.add_argument("--ref", nargs="+", required=True, help="one file per reference (multi-way: per language)")
    p.add_argument("--labels", default="{}")

    p = verb("align", cmd_align, "word-align corpora jointly with eflomal (grow-diag-final-and)")
    p.add_argument("--pair", nargs=3, action="append", required=True, metavar=("SRC", "TGT", "LINKS"))
    p.add_argument("--params", default="{}")

    p = verb("data_metrics", cmd_data_metrics, "complexity and faithfulness of a corpus from its links")
    for o in ("--src", "--real", "--real-links", "--out"):
        p.add_argument(o, required=True)
    p.add_argument("--distilled")
    p.add_argument("--distilled-links")
    p.add_argument("--params", required=True)
    p.add_argument("--labels", default="{}")

    p = verb("language_mix", cmd_language_mix, "p(language | sentence) of an output set (multi-way corpora)")
    for o in ("--train-tgt", "--train-lang", "--hyp", "--out"):
        p.add_argument(o, required=True)
    p.add_argument("--labels", default="{}")

    p = verb("aggregate", cmd_aggregate, "collect cell scores into grid tables and a heatmap")
    p.add_argument("--scores", nargs="+", required=True)
    p.add_argument("--teacher-scores", nargs="*", default=[])
    p.add_argument("--data-metrics", nargs="*", default=[])
    p.add_argument("--teacher-metrics", nargs="*", default=[])
    p.add_argument("--languages", nargs="*", default=[])
    p.add_argument("--languages-png")
    p.add_argument("--complexity-pdf")
    p.add_argument("--test-src", help="with --test-refs: score copying the source as a baseline")
    p.add_argument("--test-refs", nargs="*", default=[])
    for o in ("--params", "--csv", "--long-csv", "--md", "--png", "--complexity-png"):
        p.add_argument(o, required=True)
    return ap


VERBS = ("prepare", "vocab", "encode", "train", "distill", "gather", "evaluate", "align", "data_metrics",
         "language_mix", "aggregate")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except KdgridError as e:
        print(f"kdgrid {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kdgrid {args.verb}: interrupted", file=sys.stderr)
        return 130
    return 0
