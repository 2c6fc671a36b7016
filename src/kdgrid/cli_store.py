"""The shared store's verbs (kdgrid.store): `store_put` keeps a product this grid made (a teacher,
a distilled set, an alignment) under its recipe's key, with the cost of the jobs that made it;
`store_fetch` writes a stored product where this grid expects it, with a record of what it reused
(the cost table charges the product its recorded cost, marked as reused, and counts what it saved)."""

from __future__ import annotations

import sys
from pathlib import Path

from kdgrid.errors import KdgridError, json_option, write_json

VERBS = ("store_put", "store_fetch")


def _named(pairs: list[str], option: str) -> dict:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise KdgridError(f"{option} {pair!r}: expected NAME=PATH")
        out[name] = value
    return out


def _producer_jobs(jobs: list[list[str]]) -> list[dict]:
    """The jobs that made the product, from (rule, benchmark, log) triples: their time and memory
    (the benchmark files that exist) and GPUs (their logs' `kdgrid device:` lines)."""
    from kdgrid import costs

    return [{"rule": rule, **costs.read_benchmark(bench), "gpus": costs.gpus_in_log(log)}
            for rule, bench, log in jobs if Path(bench).is_file()]


def cmd_store_put(a) -> None:
    """Store the product if the jobs that made it, and those that made what it was made from, ran
    the code its key names (their logs say which); else record why not: a product made by other
    code, or before kdgrid wrote its code to the logs, is not passed off as the current code's."""
    from kdgrid import store

    record = {"kind": a.kind, "key": a.key, "store": str(a.store)}
    why_not = store.made_by_code([log for _, _, log in a.job] + a.code_logs, a.code)
    if why_not:
        write_json(a.record, {**record, "stored": False, "why": why_not})
        print(f"kdgrid store_put: not stored: {why_not}", file=sys.stderr)
        return
    checks = {name: store.file_sha256(path) for name, path in _named(a.check, "--check").items()}
    entry = store.put(a.store, a.kind, a.key, _named(a.files, "--files"), json_option(a.recipe, "--recipe"),
                      a.code, _producer_jobs(a.job), json_option(a.origin, "--origin"), checks)
    write_json(a.record, {**record, "stored": True, **{k: entry[k] for k in ("files", "jobs", "origin")},
                          **({"kept": entry["kept"]} if "kept" in entry else {})})


def cmd_store_fetch(a) -> None:
    from kdgrid import store
    from kdgrid.store import file_sha256

    outputs = _named(a.files, "--files")
    entry = store.fetch(a.store, a.kind, a.key, outputs)
    for name, path in _named(a.check, "--check").items():
        if entry.get("checks", {}).get(name) not in (None, file_sha256(path)):
            for out in outputs.values():
                Path(out).unlink(missing_ok=True)
            raise KdgridError(f"{path}: differs from the {name} the stored {a.kind} was made from (same recipe, "
                              "another file: this grid's data made by other code?); set share.store to another "
                              "folder, or null, so that this grid makes its own")
    if a.vocab:
        _check_vocabulary(outputs, a.vocab)
    write_json(a.record, {k: entry[k] for k in ("kind", "key", "files", "jobs", "origin", "code", "recipe")}
               | {"store": str(a.store), "labels": json_option(a.labels, "--labels")})


def _check_vocabulary(outputs: dict, vocab_path) -> None:
    """A stored teacher decodes with the vocabulary it was trained with: this grid's, made from the
    same recipe, must be the same file (sentencepiece is deterministic here; a difference would make
    every token id wrong, so it stops the grid instead)."""
    from kdgrid.checkpoint import load_model
    from kdgrid.store import file_sha256

    want = file_sha256(vocab_path)
    for path in outputs.values():
        if str(path).endswith(".pt") and load_model(path)[1].get("vocab_sha256") != want:
            for out in outputs.values():
                Path(out).unlink(missing_ok=True)
            raise KdgridError(f"{path}: the stored teacher was trained with another vocabulary than {vocab_path} "
                              "(same recipe, another sentencepiece model: another sentencepiece version?); set "
                              "share.store to another folder, or null, so that this grid trains its own")


def add_verbs(verb) -> None:
    """Register the verbs with kdgrid.cli's `verb(name, fn, help)`."""
    p = verb("store_put", cmd_store_put, "keep a product of this grid in the shared store (share.store)")
    p.add_argument("--store", required=True, help="the store folder")
    p.add_argument("--kind", required=True, help="teacher | distilled | alignment")
    p.add_argument("--key", required=True, help="the recipe's key (the workflow's share.smk)")
    p.add_argument("--recipe", required=True, help="the recipe (JSON), recorded with the entry")
    p.add_argument("--code", required=True, help="the code fingerprint the key holds")
    p.add_argument("--files", nargs="+", required=True, help="NAME=PATH of each file of the product")
    p.add_argument("--job", nargs=3, action="append", default=[], metavar=("RULE", "BENCHMARK", "LOG"),
                   help="each job that made it: its cost (benchmark, GPUs in its log) and its code (log)")
    p.add_argument("--origin", default="{}", help="where it was made (results folder, config files)")
    p.add_argument("--code-logs", nargs="*", default=[],
                   help="logs of the jobs that made what it was made from (a set's teacher): their code too")
    p.add_argument("--check", nargs="*", default=[], help="NAME=PATH: files it was made from, their sha256 recorded")
    p.add_argument("--record", required=True, help="JSON: what was stored (or kept, when already there)")

    p = verb("store_fetch", cmd_store_fetch, "write a stored product where this grid expects it")
    p.add_argument("--store", required=True)
    p.add_argument("--kind", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--files", nargs="+", required=True, help="NAME=PATH: each file of the entry to write")
    p.add_argument("--labels", default="{}", help="what this grid calls the product (recorded)")
    p.add_argument("--vocab", help="a teacher's: this grid's vocabulary, checked against the one it was trained with")
    p.add_argument("--check", nargs="*", default=[],
                   help="NAME=PATH: this grid's files it was made from, checked against the recorded sha256")
    p.add_argument("--record", required=True, help="JSON: the entry reused, its recorded jobs and cost")
