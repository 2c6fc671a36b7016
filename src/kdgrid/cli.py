"""`python -m kdgrid VERB ...`: one verb per workflow rule, every file an explicit argument.

Hyperparameters arrive as one JSON object (`--params`), built by the workflow from the validated
config. A KdgridError (bad input) is printed as one line naming the file/line or key, exit code 2.
A verb with several outputs writes them inside `all_or_nothing`: they appear together when it
succeeds, and none of them (nor a temporary) when it fails, even after its first write.
"""

from __future__ import annotations

import argparse
import sys

from kdgrid import cli_evaluate, cli_filter, cli_store, cli_teachers
from kdgrid.cli_analysis import cmd_aggregate, cmd_align, cmd_data_metrics, cmd_language_mix
from kdgrid.errors import KdgridError, all_or_nothing, json_option, write_json
from kdgrid.store import MAKER_VERBS, code_line

_json = json_option


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))


def _decoding_threads(params: dict, n: int) -> None:
    """A job that decodes with CTranslate2 gives torch one thread from the start and CTranslate2
    the job's n: with torch's pool at 2 threads, CTranslate2's own 2 ran a batch-1 beam search at
    ~40 ms a sentence against ~7 ms (bench/peers.py, 2 threads; setting torch to 1 later did not
    help). Where the model kind falls back to torch, ct2.for_decoding gives torch its n again."""
    from kdgrid.decoding_backend import split_options

    _threads(1 if split_options(params)[0]["backend"] == "ctranslate2" else n)


def _device():
    from kdgrid.devices import device

    return device()


# -- verbs -----------------------------------------------------------------------------------
def cmd_prepare(a) -> None:
    from kdgrid import corpus, importers
    from kdgrid.filter.noise import inject_noise  # corpus.noise

    p = _json(a.params, "--params")
    data = importers.load(p, a.download_dir)
    wanted = {(split, lang): path for split, lang, path in a.ref_out}
    have = {(split, lang) for split in ("valid", "test") for lang in data[split]["refs"]}
    if set(wanted) != have or bool(a.train_lang) != (data["train"]["lang"] is not None):
        raise KdgridError(f"the corpus has references {sorted(have)} but the workflow asked for "
                          f"{sorted(wanted)}: corpus.multiway and the target languages disagree")
    stats = {"source": p["source"], "splits": data["stats"]}
    if bool(a.train_noise) != bool(p.get("noise")):
        raise KdgridError("--train-noise and corpus.noise go together (the kind of every noisy training line)")
    if p.get("noise"):  # noise injected into train only, after cleaning; valid and test stay as they are
        kinds, stats["noise"] = inject_noise(data["train"], p["noise"])
    with all_or_nothing(*a.train, *a.valid, *a.test, *wanted.values(), a.train_lang, a.train_noise, a.stats):
        if a.train_noise:
            corpus.write_lines(a.train_noise, kinds)
        for split, (src_out, tgt_out) in (("train", a.train), ("valid", a.valid), ("test", a.test)):
            corpus.write_lines(src_out, data[split]["src"])
            corpus.write_lines(tgt_out, data[split]["tgt"])
        for (split, lang), path in wanted.items():
            corpus.write_lines(path, data[split]["refs"][lang])
        if a.train_lang:
            corpus.write_lines(a.train_lang, data["train"]["lang"])
        write_json(a.stats, stats)


def cmd_prepare_test_set(a) -> None:
    """One more test set (corpus.files.tests): its files or sacrebleu set, normalized as the corpus."""
    from kdgrid import corpus, importers

    src, tgts = importers.read_split(_json(a.split, "--split"), a.download_dir, a.normalize)
    if list(tgts) != [None]:
        raise KdgridError("--split: a test set beside the primary one has one target side (not multiway)")
    with all_or_nothing(a.src, a.tgt):
        corpus.write_lines(a.src, src)
        corpus.write_lines(a.tgt, tgts[None])


def _require(params: dict, keys, option: str) -> None:
    missing = [k for k in keys if k not in params]
    if missing:
        raise KdgridError(f"{option}: missing key(s) {', '.join(missing)}")


def cmd_vocab(a) -> None:
    from kdgrid import vocab
    from kdgrid.batching import save_ids
    from kdgrid.corpus import read_lines

    if len(a.encode) != len(a.encoded):
        raise KdgridError("--encode and --encoded need the same number of files")
    p = _json(a.params, "--params")
    _require(p, ("size", "model_type", "character_coverage", "max_sentences", "seed"), "--params")
    texts = [read_lines(src) for src in a.encode]  # read every input before writing any output
    with all_or_nothing(a.model, *a.encoded):
        v = vocab.train(a.train_text, a.model, p["size"], p["model_type"], p["character_coverage"],
                        p["max_sentences"], p["seed"], a.threads)
        encoded = [v.encode(lines, threads=a.threads) for lines in texts]
        for ids, dst in zip(encoded, a.encoded):
            save_ids(dst, ids)


def cmd_encode(a) -> None:
    from kdgrid.batching import save_ids
    from kdgrid.corpus import read_lines
    from kdgrid.vocab import Vocab

    save_ids(a.output, Vocab.load(a.vocab).encode(read_lines(a.input), threads=a.threads))


def cmd_train(a) -> None:
    import torch

    from kdgrid.batching import load_ids
    from kdgrid.devices import init_distributed
    from kdgrid.models import MODELS, build
    from kdgrid.train import Trainer, train_config
    from kdgrid.vocab import MASK, Vocab

    if a.kind == "ensemble":
        raise KdgridError("--kind ensemble: an ensemble is not trained; train its members, then join them "
                          "with `kdgrid ensemble`")
    _threads(a.threads)
    init_distributed()  # torchrun workers (a job with --gpus > 1, or gloo on CPUs)
    v = Vocab.load(a.vocab)
    tcfg = train_config(_json(a.train_params, "--train-params"))
    model_cfg = {**_json(a.model_params, "--model-params"), **v.model_ids()}
    if not getattr(MODELS.get(a.kind), "autoregressive", False):  # NATs (and unknown kinds: build says)
        model_cfg["mask"] = MASK
    wrap = _json(a.wrap, "--wrap") if a.wrap is not None else None
    torch.manual_seed(tcfg.seed)  # weight initialisation
    model = build(a.kind, model_cfg).to(_device())
    meta = {**_json(a.labels, "--labels"), "model_config": model_cfg, "seed": tcfg.seed,
            "vocab_sha256": v.sha256, "vocab_model": v.proto}
    if wrap is not None or a.init_teacher or a.kd_teacher:
        from kdgrid.kd import prepare

        # after the seeded random init (a resumed run then loads its checkpoint over the copy)
        model, record = prepare(model, wrap, a.init_teacher, a.kd_teacher, _device(), vocab_sha256=v.sha256)
        if record:
            meta["wrapper"] = record
    sides = {}
    for split in ("train", "valid"):
        src_path, tgt_path = getattr(a, f"{split}_src"), getattr(a, f"{split}_tgt")
        src, tgt = load_ids(src_path), load_ids(tgt_path)
        if len(src) != len(tgt):
            raise KdgridError(f"{src_path} has {len(src)} sentences but {tgt_path} has {len(tgt)}; "
                              "rerun the rules that wrote them")
        sides[split] = (src, tgt)
    student = getattr(model, "student", model)  # a training wrapper's student
    from kdgrid.models.feasibility import has_limit, infeasible_pairs

    if has_limit(student):  # CTC, DAT: the pairs they cannot fit are counted, not hidden
        meta["infeasible_pairs"] = infeasible_pairs(student, sides, tcfg.max_len)
    trainer = Trainer(model, sides["train"], sides["valid"], tcfg, a.work_dir, meta)
    trainer.run(a.out)


def _load_for_decoding(model_path, vocab_path):
    from kdgrid.checkpoint import load_for_decoding

    return load_for_decoding(model_path, vocab_path, _device())


def cmd_distill(a) -> None:
    from kdgrid.distill import distill_shard

    params = _json(a.params, "--params")
    _decoding_threads(params, a.threads)
    distill_shard(a.model, a.vocab, a.src, a.out, a.shard, a.shards, a.chunk, params, _device(), a.threads,
                  ref=a.ref)


def cmd_gather(a) -> None:
    from kdgrid.shards import gather

    gather(a.src, a.shards, a.out, a.count)


def cmd_export_ct2(a) -> None:
    from kdgrid import ct2

    model, _, v = _load_for_decoding(a.model, a.vocab)
    ct2.export(model, v, a.out, a.quantization)


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
    p.add_argument("--train-noise", help="with corpus.noise: the injected kind of every train line (clean: none)")
    p.add_argument("--ref-out", nargs=3, action="append", default=[], metavar=("SPLIT", "LANG", "PATH"),
                   help="multi-way corpora: where the valid/test references of one language go")

    p = verb("prepare_test_set", cmd_prepare_test_set, "one more test set (corpus.files.tests) as text")
    for o in ("--split", "--src", "--tgt"):
        p.add_argument(o, required=True)
    p.add_argument("--normalize", default="NFC", choices=("NFC", "NFKC", "none"))
    p.add_argument("--download-dir", default="downloads", help="cache for {url, sha256} sides")

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
    p.add_argument("--gpus", type=int, default=0,
                   help="GPUs the scheduler gave this job (the rule's gpu resource); 0: any visible")
    for o in ("--kind", "--model-params", "--train-params", "--vocab", "--train-src", "--train-tgt",
              "--valid-src", "--valid-tgt", "--out", "--work-dir"):
        p.add_argument(o, required=True)
    p.add_argument("--labels", default="{}")
    p.add_argument("--wrap", help='training wrappers, a JSON object: {"init": {"from": NAME, "layers": '
                   '"every_other"|"first"|"last"|"even"}, "kd": {"teacher": NAME, "loss": "fkl"|"rkl"|"mix", '
                   '"alpha", "temperature", "mix_weight", "online": {"rank", "lr", "lambda"}}} (see kdgrid.kd)')
    p.add_argument("--init-teacher", help="the model file --wrap's init copies weights from")
    p.add_argument("--kd-teacher", help="the model file --wrap's kd distils from")

    p = verb("distill", cmd_distill, "translate one shard of the training sources with a teacher")
    p.add_argument("--gpus", type=int, default=0,
                   help="GPUs the scheduler gave this job (the rule's gpu resource); 0: any visible")
    for o in ("--model", "--vocab", "--src", "--out", "--params"):
        p.add_argument(o, required=True)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--chunk", type=int, default=5000,
                   help="sentences per resumable chunk (finished chunks survive a killed job)")
    p.add_argument("--ref", help="the real targets of --src, for methods that read them (interpolate)")

    p = verb("gather", cmd_gather, "concatenate distillation shards, checking the line count")
    p.add_argument("--src", required=True)
    p.add_argument("--shards", nargs="+", required=True)
    p.add_argument("--count", type=int, help="the number of shards expected (default: as given)")
    p.add_argument("--out", required=True)

    cli_evaluate.add_verb(verb)

    p = verb("export-ct2", cmd_export_ct2, "write a Transformer (teacher, AT student) as a CTranslate2 model directory")
    for o in ("--model", "--vocab", "--out"):
        p.add_argument(o, required=True)
    p.add_argument("--quantization", help="store the weights as int8, int8_float16, float16, bfloat16, ... "
                   "(default: float32; CTranslate2 converts at load time to its compute_type)")

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
    p.add_argument("--valid-scores", nargs="*", default=[], help="each cell's valid-split scores (any order)")
    p.add_argument("--hyps", nargs="*", default=[], help="each cell's test hypotheses, in the order of --scores")
    p.add_argument("--teacher-scores", nargs="*", default=[])
    p.add_argument("--data-metrics", nargs="*", default=[])
    p.add_argument("--teacher-metrics", nargs="*", default=[])
    p.add_argument("--languages", nargs="*", default=[])
    p.add_argument("--languages-png")
    p.add_argument("--complexity-pdf")
    p.add_argument("--student-pngs", nargs="*", default=[],
                   help="one plot per student (BLEU against C(d)), in the order of params students")
    p.add_argument("--recommendations-csv", help="the answer per student: best set, runner-up, margin, reason")
    p.add_argument("--recommendations-json", help="the same with every column's point and the teachers' flags")
    p.add_argument("--test-src", help="with --test-refs: score copying the source as a baseline")
    p.add_argument("--test-refs", nargs="*", default=[])
    p.add_argument("--test-set", nargs=3, action="append", default=[], metavar=("NAME", "SRC", "REF"),
                   help="a named test set beside the primary one (corpus.files.tests)")
    p.add_argument("--set-scores", nargs="*", default=[], help="every cell's scores on the named test sets")
    p.add_argument("--set-hyps", nargs="*", default=[], help="their hypotheses, in the order of --set-scores")
    p.add_argument("--set-teacher-scores", nargs="*", default=[], help="the teachers' scores on the named sets")
    for o in ("--params", "--csv", "--long-csv", "--teachers-csv", "--data-csv", "--costs-csv", "--md", "--png",
              "--complexity-png"):
        p.add_argument(o, required=True)

    cli_teachers.add_verbs(verb)  # ensemble
    cli_store.add_verbs(verb)  # store_put, store_fetch
    cli_filter.add_verbs(verb)  # filter_labels, filter_teacher, filter_student, filter_report, filter_apply
    return ap


VERBS = ("prepare", "prepare_test_set", "vocab", "encode", "train", "distill", "gather", "evaluate", "align",
         "data_metrics", "language_mix", "aggregate", *cli_teachers.VERBS, *cli_store.VERBS,
         *cli_filter.VERBS)


def _place(args, argv: list[str]) -> int | None:
    """Give a job the GPUs its rule asked for (`--gpus N`). A training job with N > 1 reruns
    itself as N torchrun workers; returns their exit code, or None to go on in this process."""
    import os

    from kdgrid import devices

    if getattr(args, "gpus", 0) <= 0 or os.environ.get(devices.LAUNCHED):
        return None
    devices.claim(args.gpus)
    if args.verb == "train" and args.gpus > 1:
        return devices.launch_torchrun(args.gpus, devices.strip_gpus(argv))
    return None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    try:
        code = _place(args, argv)
        if code is not None:
            return code
        ran = code_line() if args.verb in MAKER_VERBS else None  # the code as the job starts, not as it ends
        args.fn(args)
        if hasattr(args, "gpus"):  # a verb that may run on a GPU names its device (for the cost table)
            from kdgrid.devices import announce

            announce()
        if ran:  # the code that made a product, for the shared store (kdgrid.store)
            print(ran, file=sys.stderr)
    except KdgridError as e:
        print(f"kdgrid {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kdgrid {args.verb}: interrupted", file=sys.stderr)
        return 130
    return 0
