"""Bad inputs and bad configs, each hit the way a user hits it, in one table.

A row is a case: what goes wrong, how a user runs into it (`python -m kdgrid VERB` with explicit
files, `snakemake -n` on a config, or a real `snakemake` run of a tiny config), and the fragment the
message must contain. Every row checks the same four things:

- a non-zero exit (2 for the CLI: a bad input, not a crash);
- one clear line that names what is wrong (the file and line, or the config key);
- no Python traceback;
- nothing left at the declared output paths (nor a half-written temporary beside them), so that
  Snakemake never takes a failed step for a complete one.

Most bad inputs are found before a verb writes anything. The rows marked "after the first write"
meet a verb that had begun writing: a KdgridError is injected into a real later step (writing the
test split, scoring, the third chunk of a shard; tests/inject_faults.py), after checking that
something was written already, so that they test the all-or-nothing writes of multi-output verbs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import TOY, env, snakemake, write_config

from kdgrid.corpus import write_lines

WORDS = ["a b c", "b c d e", "c d", "d e f g", "e f", "a c e", "b d f", "f e d c b", "a a b", "g f", "c c", "e d"]
GOOD_SRC = [f"{s} ." for s in WORDS]
GOOD_TGT = [f"{s.upper()} !" for s in WORDS]
SPLITS = ("train", "valid", "test")
CLEAN = {"normalize": "NFC", "drop_empty": True, "max_words": 250, "max_ratio": 3.0, "dedup": False}
VOCAB_PARAMS = {"size": 24, "model_type": "unigram", "character_coverage": 1.0, "max_sentences": 0, "seed": 1}
MODEL = {"d_model": 16, "ffn": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "dropout": 0.0}
TRAIN = {"max_updates": 1, "max_tokens": 256, "valid_every": 1, "warmup_updates": 1, "log_every": 1}
DECODE = {"kind": "beam", "beam": 2, "max_tokens": 256}


# -- shared tiny fixtures (built once, in this process) --------------------------------------
@dataclass
class Fx:
    src: Path  # 12 good source lines
    tgt: Path
    vocab: Path  # sentencepiece model trained on src + tgt
    other_vocab: Path  # trained on other text: a different vocabulary
    model: Path  # an untrained Transformer, saved with `vocab`
    src_ids: Path  # src and tgt encoded with `vocab`
    tgt_ids: Path


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Fx:
    import torch

    from kdgrid import vocab
    from kdgrid.batching import save_ids
    from kdgrid.checkpoint import save_model
    from kdgrid.models import build

    d = tmp_path_factory.mktemp("fixtures")
    f = Fx(src=d / "good.src", tgt=d / "good.tgt", vocab=d / "spm.model", other_vocab=d / "other.model",
           model=d / "model.pt", src_ids=d / "src.npz", tgt_ids=d / "tgt.npz")
    write_lines(f.src, GOOD_SRC)
    write_lines(f.tgt, GOOD_TGT)
    v = vocab.train([f.src, f.tgt], f.vocab, VOCAB_PARAMS["size"])
    write_lines(d / "other.txt", [f"zz{i} yy{i} xx{i}" for i in range(30)])
    vocab.train([d / "other.txt"], f.other_vocab, VOCAB_PARAMS["size"])
    save_ids(f.src_ids, v.encode(GOOD_SRC))
    save_ids(f.tgt_ids, v.encode(GOOD_TGT))
    cfg = {**MODEL, **v.model_ids()}
    torch.manual_seed(0)
    save_model(f.model, build("transformer", cfg), {"vocab_sha256": v.sha256, "model_config": cfg})
    return f


# -- how a case is run ----------------------------------------------------------------------
@dataclass
class Run:
    how: str  # "cli": argv after `python -m kdgrid`; "dry": `snakemake -n`; "real": a snakemake run
    argv: list = field(default_factory=list)
    outputs: list = field(default_factory=list)  # declared outputs that must not exist afterwards
    config: dict | None = None  # dry/real: overrides of tests/configs/toy.yaml
    log: str | None = None  # real: the log that holds the verb's message, relative to the workdir
    fault: str | None = None  # cli: a fault of tests/inject_faults.py, raised after the first write


def after_first_write(fault: str, make) -> callable:
    """A cli case run with `fault` injected after the verb's first write (see inject_faults.py)."""
    def setup(t, f):
        run = make(t, f)
        run.fault = fault
        return run
    return setup


def cli(verb, outputs, **options) -> Run:
    argv = [verb]
    for key, value in options.items():
        argv.append("--" + key.replace("_", "-"))
        argv += [str(x) for x in value] if isinstance(value, (list, tuple)) else [str(value)]
    return Run("cli", argv, list(outputs))


def prepare(t: Path, f: Fx, train=None, **extra) -> Run:
    """`prepare` of a 'files' corpus whose valid/test are good and whose train split is `train`."""
    good = {"src": str(f.src), "tgt": str(f.tgt)}
    files = {"train": train or good, "valid": good, "test": good}
    o = t / "data"
    outs = [o / f"{s}.{side}" for s in SPLITS for side in ("src", "tgt")]
    run = cli("prepare", outs + [o / "stats.json"], params=json.dumps({"source": "files", "files": files,
                                                                          "clean": CLEAN}),
              train=outs[0:2], valid=outs[2:4], test=outs[4:6], stats=o / "stats.json",
              download_dir=t / "downloads")
    for flag, value in extra.items():
        run.argv += [f"--{flag.replace('_', '-')}", *map(str, value)]
    return run


def side(t: Path, name: str, lines=None, raw: bytes | None = None) -> str:
    path = t / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        write_lines(path, lines)
    return str(path)


def bad_train(src=None, tgt=None, src_raw=None, src_name="train.src"):
    """A prepare case whose train split has the given sides (default: the good ones)."""
    def setup(t, f):
        s = side(t, src_name, src, src_raw) if (src is not None or src_raw is not None) else str(f.src)
        return prepare(t, f, {"src": s, "tgt": side(t, "train.tgt", tgt) if tgt is not None else str(f.tgt)})
    return setup


_GZ = gzip.compress(("ein Satz mit Wörtern .\n" * 4000).encode())
TRUNCATED_GZ = _GZ[: len(_GZ) // 2]


def checksum_mismatch(t, f):
    url = f.src.resolve().as_uri()
    run = prepare(t, f, {"src": {"url": url, "sha256": "0" * 64}, "tgt": str(f.tgt)})
    cached = hashlib.sha256(url.encode()).hexdigest()[:12] + "-" + f.src.name
    run.outputs.append(t / "downloads" / cached)  # a file that failed its checksum is not kept
    return run


def vocab(t, f, params=None, train_text=None, encode=()) -> Run:
    model = t / "vocab" / "spm.model"
    encoded = [t / "vocab" / f"{i}.npz" for i in range(len(encode))]
    return cli("vocab", [model, *encoded], train_text=train_text or [f.src, f.tgt], model=model,
               params=json.dumps({**VOCAB_PARAMS, **(params or {})}), encode=list(encode), encoded=encoded)


def train(t, f, kind="transformer", model=None, train_params=None, src=None, tgt=None,
          model_params_json=None) -> Run:
    out = t / "model.pt"
    return cli("train", [out], kind=kind, model_params=model_params_json or json.dumps({**MODEL, **(model or {})}),
               train_params=json.dumps({**TRAIN, **(train_params or {})}), vocab=f.vocab,
               train_src=src or f.src_ids, train_tgt=tgt or f.tgt_ids, valid_src=f.src_ids,
               valid_tgt=f.tgt_ids, out=out, work_dir=t / "work")


def distill(t, f, model=None, vocab_path=None, params=None, params_json=None, **shard) -> Run:
    """`distill` of the 12 good lines; its outputs: the shard and its chunks (OUT.parts/)."""
    out = t / "distill" / "0.tgt"
    return cli("distill", [out, t / "distill" / "0.tgt.parts"], model=model or f.model,
               vocab=vocab_path or f.vocab, src=f.src, out=out,
               params=params_json or json.dumps({**DECODE, **(params or {})}), **shard)


def evaluate(t, f, model=None, ref=None, labels="{}", length_beam=2, **extra) -> Run:
    hyp, scores = t / "test.hyp", t / "scores.json"
    params = {"method": "greedy", "length_beam": length_beam, "max_tokens": 256}
    return cli("evaluate", [hyp, scores], model=model or f.model, vocab=f.vocab, src=f.src,
               ref=ref or f.tgt, hyp=hyp, scores=scores, labels=labels, params=json.dumps(params), **extra)


def saved_model(t, f, kind="nat", vocab_path=None) -> str:
    """An untrained model of `kind` saved as trained with `vocab_path` (default: the good one)."""
    import torch

    from kdgrid.checkpoint import save_model
    from kdgrid.models import build
    from kdgrid.vocab import Vocab

    v = Vocab.load(vocab_path or f.vocab)
    cfg = {**MODEL, **v.model_ids(), **({} if kind == "transformer" else {"mask": 4})}
    torch.manual_seed(0)
    path = t / f"{kind}.pt"
    save_model(path, build(kind, cfg), {"vocab_sha256": v.sha256, "model_config": cfg})
    return str(path)


def gather(shard_lines: dict) -> callable:
    """`gather` of shard files 0.tgt, 1.tgt, ...; a shard given as None is missing."""
    def setup(t, f):
        src = side(t, "train.src", ["s"] * 4)
        paths = []
        for k, lines in shard_lines.items():
            paths.append(t / f"{k}.tgt")
            if lines is not None:
                write_lines(paths[-1], lines)
        return cli("gather", [t / "train.tgt"], src=src, shards=paths, out=t / "train.tgt")
    return setup


def aggregate(t, f) -> Run:
    """`aggregate` of one cell into its tables and pictures."""
    cell = {"student": "nat", "data": "raw", "bleu": 1.5, "chrf": 20.0, "bleu_signature": "b",
            "chrf_signature": "c", "decode": {"sentences_per_second": 10.0, "seconds": 1.2}}
    (t / "scores.json").write_text(json.dumps(cell))
    o = t / "grid"
    outs = {"csv": o / "grid.csv", "long_csv": o / "grid_long.csv", "teachers_csv": o / "teachers.csv",
            "data_csv": o / "data.csv", "costs_csv": o / "costs.csv", "md": o / "grid.md", "png": o / "grid.png",
            "complexity_png": o / "bleu_vs_c.png", "complexity_pdf": o / "bleu_vs_c.pdf"}
    return cli("aggregate", outs.values(), scores=t / "scores.json", **outs,
               params=json.dumps({"students": ["nat"], "columns": ["raw"], "corpus": "toy"}))


def short_ids(t: Path, f: Fx) -> Path:
    """The first 7 of the 12 encoded targets."""
    from kdgrid.batching import load_ids, save_ids

    ids = load_ids(f.tgt_ids)
    save_ids(t / "short.npz", [ids[i] for i in range(7)])
    return t / "short.npz"


def dry(**overrides):
    """`snakemake -n` on tests/configs/toy.yaml with `overrides`: it must stop before writing anything."""
    return lambda t, f: Run("dry", config=overrides, outputs=[t / "results"])


def real_prepare_with_bad_checksum(t, f):
    """A real run of `prepare` (the only job needed for the target) on a corpus whose train source
    is a file:// URL with the wrong checksum."""
    good = {"src": str(f.src), "tgt": str(f.tgt)}
    files = {"train": {"src": {"url": f.src.resolve().as_uri(), "sha256": "0" * 64}, "tgt": str(f.tgt)},
             "valid": good, "test": good}
    data = t / "results" / "bad" / "data"
    outs = [data / f"{s}.{x}" for s in SPLITS for x in ("src", "tgt")] + [data / "stats.json"]
    return Run("real", ["results/bad/data/stats.json"], outs,
               config={"corpus": {"name": "bad", "source": "files", "files": files}},
               log="results/bad/logs/prepare.log")


# -- the table -----------------------------------------------------------------------------
CASES = [
    # corpora, through `prepare`
    pytest.param(bad_train(["a", "b", "c"], ["x", "y"]), ["train.src: has 3 lines but", "train.tgt has 2"],
                 id="prepare-mismatched-line-counts"),
    pytest.param(bad_train([], []), ["train.src: empty corpus"], id="prepare-empty-corpus"),
    pytest.param(bad_train(["", " "], ["x", "y"]), ["train: empty corpus after cleaning"],
                 id="prepare-empty-after-cleaning"),
    pytest.param(bad_train(src_raw=b"ok\nauch ok\nkaputt \xc3\x28 hier\n", tgt=["x", "y", "z"]),
                 ["train.src: line 3: invalid UTF-8"], id="prepare-invalid-utf8"),
    pytest.param(bad_train(src_raw=TRUNCATED_GZ, tgt=["x"], src_name="train.src.gz"),
                 ["train.src.gz: corrupt or truncated gzip"], id="prepare-truncated-gz"),
    pytest.param(bad_train(src_raw=b"plain text\n", tgt=["x"], src_name="train.src.gz"),
                 ["train.src.gz: corrupt or truncated gzip", "Not a gzipped file"], id="prepare-gz-not-gzip"),
    pytest.param(checksum_mismatch, ["good.src: sha256 mismatch (expected 0000"], id="prepare-url-checksum-mismatch"),
    pytest.param(lambda t, f: prepare(t, f, {"src": str(t / "missing.src"), "tgt": str(f.tgt)}),
                 ["missing.src: file not found"], id="prepare-missing-input-file"),
    pytest.param(lambda t, f: prepare(t, f, ref_out=["test", "de", t / "data" / "test.ref.de"]),
                 ["corpus.multiway and the target languages disagree"], id="prepare-multiway-disagrees"),
    pytest.param(after_first_write("prepare-test-split", prepare),
                 ["test.src: injected fault while writing the test split"],
                 id="prepare-fails-after-writing-train-and-valid"),
    # vocabularies and encoding
    pytest.param(lambda t, f: vocab(t, f, {"size": 0}), ["vocab size (vocab.size) must exceed", "got 0"],
                 id="vocab-size-zero"),
    pytest.param(lambda t, f: vocab(t, f, {"size": -8}), ["vocab.size", "got -8"], id="vocab-size-negative"),
    pytest.param(lambda t, f: vocab(t, f, {"model_type": "bpee"}), ["vocab.model_type", "'bpee'"],
                 id="vocab-unknown-model-type"),
    pytest.param(lambda t, f: vocab(t, f, train_text=[side(t, "blank.txt", ["", "  "])]),
                 ["blank.txt: empty corpus"], id="vocab-empty-text"),
    pytest.param(lambda t, f: vocab(t, f, encode=[f.src, side(t, "bad.txt", raw=b"gut\n\xff schlecht\n")]),
                 ["bad.txt: line 2: invalid UTF-8"], id="vocab-encode-invalid-utf8"),
    pytest.param(after_first_write("vocab-second-encoding", lambda t, f: vocab(t, f, encode=[f.src, f.tgt])),
                 ["1.npz: injected fault while saving the second encoded file"],
                 id="vocab-fails-after-writing-the-model-and-one-encoding"),
    pytest.param(lambda t, f: cli("vocab", [t / "spm.model"], train_text=[f.src], model=t / "spm.model",
                                  params='{"size": 24}'),
                 ["--params", "model_type"], id="vocab-params-missing-key"),
    pytest.param(lambda t, f: cli("encode", [t / "x.npz"], vocab=f.vocab, output=t / "x.npz",
                                  input=side(t, "bad.txt", raw=b"gut\n\xff schlecht\n")),
                 ["bad.txt: line 2: invalid UTF-8"], id="encode-invalid-utf8"),
    pytest.param(lambda t, f: cli("encode", [t / "x.npz"], vocab=f.src, input=f.src, output=t / "x.npz"),
                 ["good.src: not a sentencepiece model"], id="encode-garbage-vocab"),
    # training
    pytest.param(lambda t, f: train(t, f, kind="natt"), ["unknown model kind 'natt'"], id="train-unknown-kind"),
    pytest.param(lambda t, f: train(t, f, model={"d_model": 30, "heads": 4}),
                 ["d_model 30 is not divisible by heads 4"], id="train-heads-do-not-divide-d_model"),
    pytest.param(lambda t, f: train(t, f, model={"d_model": 0}), ["d_model", "0"], id="train-zero-d_model"),
    pytest.param(lambda t, f: train(t, f, train_params={"max_update": 3}), ["unknown training option(s) max_update"],
                 id="train-unknown-option"),
    pytest.param(lambda t, f: train(t, f, train_params={"lr": -1}), ["lr", "-1"], id="train-negative-lr"),
    pytest.param(lambda t, f: train(t, f, train_params={"max_updates": "ten"}), ["max_updates"],
                 id="train-option-of-wrong-type"),
    pytest.param(lambda t, f: train(t, f, model_params_json="{d_model: 16"), ["--model-params: not valid JSON"],
                 id="train-bad-json"),
    pytest.param(lambda t, f: train(t, f, src=side(t, "cut.npz", raw=f.src_ids.read_bytes()[:300])),
                 ["cut.npz: not a readable encoded corpus"], id="train-truncated-npz"),
    pytest.param(lambda t, f: train(t, f, tgt=short_ids(t, f)), ["src.npz", "short.npz", "12", "7"],
                 id="train-mismatched-encoded-sides"),
    # decoding a teacher: distill
    pytest.param(lambda t, f: distill(t, f, shard=2, shards=2), ["--shard 2 is outside 0..1"],
                 id="distill-shard-out-of-range"),
    pytest.param(lambda t, f: distill(t, f, model=side(t, "cut.pt", raw=f.model.read_bytes()[:2000])),
                 ["cut.pt: not a readable model file"], id="distill-truncated-model"),
    pytest.param(lambda t, f: distill(t, f, vocab_path=f.other_vocab),
                 ["model.pt was trained with a different vocabulary than", "other.model"],
                 id="distill-model-of-another-vocabulary"),
    pytest.param(lambda t, f: distill(t, f, params={"beam": 0}), ["beam size must be positive, got 0"],
                 id="distill-zero-beam"),
    pytest.param(lambda t, f: distill(t, f, params={"max_tokens": 0}), ["max_tokens must be positive, got 0"],
                 id="distill-zero-max_tokens"),
    pytest.param(lambda t, f: distill(t, f, params={"kind": "nucleus"}), ["unknown method kind 'nucleus'"],
                 id="distill-unknown-method"),
    pytest.param(lambda t, f: distill(t, f, params={"beem": 3}), ["beem"], id="distill-unknown-decoding-option"),
    pytest.param(lambda t, f: distill(t, f, params_json='{"kind": "beam"}'), ["--params", "max_tokens"],
                 id="distill-params-missing-key"),
    pytest.param(after_first_write("distill-third-chunk", lambda t, f: distill(t, f, chunk=4)),
                 ["injected fault while translating chunk 3"], id="distill-fails-after-two-chunks"),
    # gathering shards
    pytest.param(gather({0: ["w", "x"], 1: ["y"]}), ["shards hold 3 lines but", "has 4", "1.tgt: 1"],
                 id="gather-short-shard"),
    pytest.param(gather({0: ["w", "x"], 1: None}), ["1.tgt: file not found"], id="gather-missing-shard"),
    # evaluation
    pytest.param(lambda t, f: evaluate(t, f, model=side(t, "junk.pt", raw=b"<html>404 not found</html>")),
                 ["junk.pt: not a readable model file"], id="evaluate-garbage-model"),
    pytest.param(lambda t, f: evaluate(t, f, ref=side(t, "short.ref", GOOD_TGT[:5])),
                 ["good.src: has 12 lines but", "short.ref has 5"], id="evaluate-mismatched-reference"),
    pytest.param(lambda t, f: evaluate(t, f, labels="[1, 2]"), ["--labels: expected a JSON object"],
                 id="evaluate-bad-labels"),
    pytest.param(lambda t, f: evaluate(t, f, rescorer=f.model),
                 ["--rescorer: the model is autoregressive"], id="evaluate-rescoring-an-at-model"),
    pytest.param(lambda t, f: evaluate(t, f, model=saved_model(t, f, "levt"), rescorer=f.model),
                 ["--rescorer: model kind 'levt' keeps one candidate per sentence"],
                 id="evaluate-rescoring-an-insertion-model"),
    pytest.param(lambda t, f: evaluate(t, f, model=saved_model(t, f), rescorer=f.model, length_beam=1),
                 ["--rescorer: one candidate per sentence"], id="evaluate-rescoring-one-candidate"),
    pytest.param(lambda t, f: evaluate(t, f, model=saved_model(t, f), rescorer=saved_model(t, f, "cmlm")),
                 ["cmlm.pt: rescoring needs an autoregressive model", "got kind 'cmlm'"],
                 id="evaluate-rescorer-not-autoregressive"),
    pytest.param(lambda t, f: evaluate(t, f, model=saved_model(t, f),
                                       rescorer=saved_model(t, f, "transformer", f.other_vocab)),
                 ["transformer.pt was trained with a different vocabulary"], id="evaluate-rescorer-other-vocabulary"),
    pytest.param(after_first_write("evaluate-scoring", lambda t, f: evaluate(t, f, model=saved_model(t, f))),
                 ["injected fault while scoring the hypotheses"], id="evaluate-fails-scoring-after-writing-hypotheses"),
    # the grid
    pytest.param(after_first_write("aggregate-complexity-plot", aggregate),
                 ["injected fault while drawing BLEU against C(d)"], id="aggregate-fails-after-tables-and-heatmap"),
    # configs, through `snakemake -n`
    pytest.param(dry(grid={"teachers": ["toy", "huge"]}),
                 ["grid.teachers[1]: 'huge' is not defined under teacher_sizes"], id="config-unknown-teacher"),
    pytest.param(dry(grid={"methods": ["nucleus"]}), ["grid.methods[0]: 'nucleus' is not defined under methods"],
                 id="config-unknown-method"),
    pytest.param(dry(grid={"students": ["nat", "cmlmm"]}), ["grid.students[1]: 'cmlmm' is not defined under students"],
                 id="config-unknown-student"),
    pytest.param(dry(grid={"methods": ["beam", "greedy", "beam"]}),
                 ["grid.methods: non-unique name 'beam' (items 0 and 2)"], id="config-duplicate-method"),
    pytest.param(dry(teacher_sizes={"toy": {"d_model": 30, "heads": 4}}),
                 ["teacher_sizes.toy.heads: d_model 30 is not divisible by heads 4"], id="config-heads-teacher"),
    pytest.param(dry(vocab={"size": 0}), ["vocab.size: 0 is less than the minimum of 16"], id="config-zero-vocab-size"),
    pytest.param(dry(methods={"beam": {"kind": "beam", "beam": -2}}),
                 ["methods.beam.beam: -2 is less than the minimum of 1"], id="config-negative-beam"),
    pytest.param(dry(teacher_sizes={"toy": {"d_model": 0}}), ["teacher_sizes.toy.d_model: 0 is less than the minimum"],
                 id="config-zero-d_model"),
    pytest.param(dry(decoding={"max_tokens": 0}), ["decoding.max_tokens: 0 is less than the minimum of 1"],
                 id="config-zero-max_tokens"),
    pytest.param(dry(teacher={"train": {"max_update": 40}}),
                 ["teacher.train: unknown keys are not allowed ('max_update' was unexpected)"],
                 id="config-unknown-training-option"),
    pytest.param(dry(techers={"toy": {}}), ["(top level): unknown keys are not allowed ('techers' was unexpected)"],
                 id="config-unknown-key-typo"),
    pytest.param(lambda t, f: Run("dry", outputs=[t / "results"], config={"corpus": {
        "source": "files", "files": {s: {"src": str(t / f"nowhere.{s}.src"), "tgt": str(f.tgt)} for s in SPLITS}}}),
        ["nowhere.train.src"], id="config-missing-corpus-file"),
    # a real run: the verb's message reaches the job's log; snakemake keeps no outputs
    pytest.param(real_prepare_with_bad_checksum, ["good.src: sha256 mismatch"], id="run-url-checksum-mismatch"),
]


def run_cli(run: Run, cwd: Path, capfd, monkeypatch) -> tuple[int, str]:
    """(exit code, stderr) of `python -m kdgrid ARGV`. A row without an injected fault calls the
    CLI's main() in this process: the same argument parsing, verb and error handling as the
    entry point (a crash raises here and fails the test, as a traceback would), without a torch
    import per row. A fault row runs tests/inject_faults.py in a subprocess, as does
    test_the_entry_point_exits_2_with_one_line, which holds the real entry point to the same."""
    if run.fault is not None:
        cmd = [sys.executable, str(Path(__file__).with_name("inject_faults.py")), run.fault, *run.argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env(), timeout=120)
        return proc.returncode, proc.stderr
    from kdgrid import cli as kdgrid_cli

    monkeypatch.chdir(cwd)
    capfd.readouterr()  # file descriptor 2 itself: what a library writes past sys.stderr counts too
    try:
        code = kdgrid_cli.main(list(run.argv))
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    return code, capfd.readouterr().err


def check_cli_failure(code: int, stderr: str, verb: str) -> str:
    """Exit 2, no traceback, exactly one error line, last, naming the verb; returns that line."""
    assert code == 2, f"exit {code}:\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if ": error:" in line]  # progress lines may come before
    assert errors == lines[-1:], f"want exactly one error line, last:\n{stderr[-3000:]}"
    assert errors[0].startswith(f"kdgrid {verb}: error: "), errors
    return errors[0]


def test_the_entry_point_exits_2_with_one_line(fx, tmp_path):
    """`python -m kdgrid` itself (the rows call main() in-process): a bad input exits 2 with one
    error line and no traceback, and writes nothing."""
    run = bad_train(["a", "b", "c"], ["x", "y"])(tmp_path, fx)
    proc = subprocess.run([sys.executable, "-m", "kdgrid", *run.argv], capture_output=True, text=True,
                          cwd=tmp_path, env=env(), timeout=120)
    message = check_cli_failure(proc.returncode, proc.stderr, "prepare")
    assert "train.src: has 3 lines but" in message
    assert not any(Path(out).exists() for out in run.outputs)


@pytest.mark.parametrize("setup,fragments", CASES)
def test_bad_input_stops_cleanly(setup, fragments, fx, tmp_path, capfd, monkeypatch):
    run = setup(tmp_path, fx)
    if run.how == "cli":
        code, stderr = run_cli(run, tmp_path, capfd, monkeypatch)
        message = check_cli_failure(code, stderr, run.argv[0])
    else:
        cfg = write_config(tmp_path / "config.yaml", TOY, **run.config)
        args = ["-n"] if run.how == "dry" else [*run.argv, "--cores", "1"]
        proc = snakemake(tmp_path, *args, configfile=cfg, check=False, timeout=300)
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        if run.how == "real":  # the verb's own message is in the job's log
            assert "Error in rule prepare" in text, text[-3000:]
            log = (tmp_path / run.log).read_text()
            assert "Traceback" not in log, log
            text = log
        hits = [line for line in text.splitlines() if all(fr in line for fr in fragments)]
        assert hits, f"no single line holds {fragments}:\n{text[-3000:]}"
        message = hits[0]
    for fragment in fragments:
        assert fragment in message, message
    for out in run.outputs:
        out = Path(out)
        assert not out.exists(), f"{out} was left behind"
        if out.parent.exists():  # nor the temporary an atomic write would rename onto it
            assert not list(out.parent.glob(f".{out.name}.*")), list(out.parent.iterdir())


def test_outputs_of_a_group_appear_together_or_not_at_all(tmp_path):
    """`all_or_nothing`, which every multi-output verb writes through, on its own."""
    from kdgrid.errors import all_or_nothing, atomic_output, write_json

    a, b, other = tmp_path / "a.txt", tmp_path / "sub" / "b.json", tmp_path / "cache.txt"
    with all_or_nothing(a, b, None):
        write_lines(a, ["first"])
        write_lines(a, ["second"])  # written twice: the later one wins, no temporary stays
        write_json(b, {"x": 1})
        write_lines(other, ["not declared: written at once"])
        assert other.exists() and not a.exists() and not b.exists()
    assert a.read_text() == "second\n" and json.loads(b.read_text()) == {"x": 1}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.json", "cache.txt", "sub"]

    c, d = tmp_path / "c.txt", tmp_path / "d.txt"
    with pytest.raises(KeyboardInterrupt), all_or_nothing(c, d):
        write_lines(c, ["written"])
        with atomic_output(d) as f:
            f.write("half")
            raise KeyboardInterrupt
    assert not c.exists() and not d.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.json", "cache.txt", "sub"]
