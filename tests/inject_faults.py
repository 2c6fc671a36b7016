"""`python tests/inject_faults.py FAULT VERB ARGS...`: run `python -m kdgrid VERB ARGS...` with one
fault injected AFTER the verb has begun writing, for the bad-input table (test_bad_inputs.py).

A fault is a KdgridError ("injected fault: ...") raised from a real step of the verb: writing the
test split, scoring the hypotheses, translating the third chunk of a shard, saving the second
encoded file, drawing the second plot. Each first checks that the verb had already written
something (the output or its temporary), and stops with a RuntimeError (a traceback, which fails
the row) if not, so a row can only pass by cleaning up after a late failure, never by failing early.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kdgrid.errors import KdgridError


def written(path) -> bool:
    """`path` exists, or a finished temporary of it (`.NAME.*`) is waiting beside it."""
    path = Path(path)
    return path.exists() or (path.parent.exists() and any(path.parent.glob(f".{path.name}.*")))


def option(argv: list[str], name: str) -> list[str]:
    """The values after `--name` (up to the next option)."""
    i = argv.index(name) + 1
    values = []
    while i < len(argv) and not argv[i].startswith("--"):
        values.append(argv[i])
        i += 1
    return values


def require(condition: bool, what: str) -> None:
    if not condition:
        raise RuntimeError(f"the fault came before {what}: this row would not test a late failure")


def prepare_test_split(argv):
    """`prepare` fails writing the test split, after train and valid were written."""
    from kdgrid import corpus

    real = corpus.write_lines
    earlier = option(argv, "--train") + option(argv, "--valid")

    def write_lines(path, lines):
        if Path(path).name.startswith("test."):
            require(all(written(p) for p in earlier), "train and valid were written")
            raise KdgridError(f"{path}: injected fault while writing the test split")
        return real(path, lines)

    corpus.write_lines = write_lines


def evaluate_scoring(argv):
    """`evaluate` fails scoring, after writing the hypotheses."""
    from kdgrid.metrics import bleu

    def score(hypotheses, references):
        require(written(option(argv, "--hyp")[0]), "the hypotheses were written")
        raise KdgridError("injected fault while scoring the hypotheses")

    bleu.score = score


def distill_third_chunk(argv):
    """`distill` fails translating its third chunk, after two finished chunks were written."""
    from kdgrid import methods

    real, calls = methods.distill, []
    parts = Path(option(argv, "--out")[0] + ".parts")

    def translate(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            require(len(list(parts.glob("0*.txt"))) == 2, "two chunks were written")
            raise KdgridError("injected fault while translating chunk 3")
        return real(*args, **kw)

    methods.distill = translate  # the dispatch every distillation chunk goes through


def vocab_second_encoding(argv):
    """`vocab` fails saving its second encoded file, after the model and the first one."""
    from kdgrid import batching

    real, calls = batching.save_ids, []

    def save_ids(path, seqs):
        calls.append(path)
        if len(calls) == 2:
            first = [option(argv, "--model")[0], option(argv, "--encoded")[0]]
            require(all(written(p) for p in first), "the model and the first encoded file were written")
            raise KdgridError(f"{path}: injected fault while saving the second encoded file")
        return real(path, seqs)

    batching.save_ids = save_ids


def aggregate_complexity_plot(argv):
    """`aggregate` fails drawing BLEU against C(d), after the tables and the heatmap."""
    from kdgrid import report

    def bleu_vs_complexity(*args, **kw):
        earlier = [option(argv, o)[0] for o in ("--csv", "--long-csv", "--teachers-csv", "--data-csv",
                                                "--costs-csv", "--md", "--png")]
        require(all(written(p) for p in earlier), "the tables and the heatmap were written")
        raise KdgridError("injected fault while drawing BLEU against C(d)")

    report.bleu_vs_complexity = bleu_vs_complexity


FAULTS = {f.__name__.replace("_", "-"): f for f in (prepare_test_split, evaluate_scoring, distill_third_chunk,
                                                      vocab_second_encoding, aggregate_complexity_plot)}

if __name__ == "__main__":
    fault, argv = sys.argv[1], sys.argv[2:]
    FAULTS[fault](argv)
    from kdgrid.cli import main

    sys.exit(main(argv))
