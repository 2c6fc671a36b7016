"""Teachers and distilled sets from elsewhere: `ensemble` joins trained teachers into one decoder
whose model file holds them all (kdgrid.models.ensemble); `import_teacher` takes a teacher trained
elsewhere (a kdgrid model file with the vocabulary it carries, or a fairseq Transformer with its
dictionary and sentencepiece model); `import_distilled` takes a distilled set
made elsewhere (a released one, another grid's) as a column of this grid, after checking that it
translates this grid's training sources."""

from __future__ import annotations

from kdgrid.errors import KdgridError, json_option

VERBS = ("ensemble", "import_teacher", "import_distilled")
# Teachers a grid can import (teacher_sizes.<name>.import): the model kinds that distil with kdgrid.search.
IMPORTABLE_KINDS = ("transformer",)  # (an MoE's experts would need the grid to know them at planning)
IMPORT_FORMATS = ("kdgrid", "fairseq")  # a kdgrid model file; a fairseq Transformer (kdgrid.fairseq_import)


def cmd_ensemble(a) -> None:
    from kdgrid.checkpoint import load_model, save_model
    from kdgrid.importers import sha256_of
    from kdgrid.models.configs import ENSEMBLE_COMBINES, ENSEMBLE_MEMBER_KINDS
    from kdgrid.models.ensemble import Ensemble
    from kdgrid.vocab import Vocab

    params = json_option(a.params, "--params")
    unknown = sorted(set(params) - {"combine"})
    if unknown:
        raise KdgridError(f"--params: unknown key(s) {', '.join(unknown)}; an ensemble takes combine "
                          f"({' | '.join(ENSEMBLE_COMBINES)})")
    combine = params.get("combine", ENSEMBLE_COMBINES[0])
    vocab = Vocab.load(a.vocab)
    members, record = [], []
    for path in a.members:
        model, meta = load_model(path)
        if model.kind not in ENSEMBLE_MEMBER_KINDS:
            raise KdgridError(f"{path}: a model of kind {model.kind!r}; an ensemble takes "
                              f"{', '.join(ENSEMBLE_MEMBER_KINDS)} members")
        if meta.get("vocab_sha256") != vocab.sha256:
            raise KdgridError(f"{path} was trained with another vocabulary than {a.vocab}; the members of an "
                              "ensemble share the grid's vocabulary (rerun its training rule)")
        members.append(model)
        record.append({"model": str(path), "sha256": sha256_of(path), "teacher": meta.get("teacher"),
                       "updates": meta.get("updates"), "seed": meta.get("seed")})
    try:
        ensemble = Ensemble.of(members, combine)
    except ValueError as e:
        raise KdgridError(f"--params / --members: {e}") from None
    meta = {**json_option(a.labels, "--labels"), "vocab_sha256": vocab.sha256, "vocab_model": vocab.proto,
            "members": record, "combine": combine}
    save_model(a.out, ensemble, meta)


def _pinned(p: dict, key: str, where: str, download_dir):
    """(local path, sha256) of the import's `key` file: a path checked against its sha256 option
    (`sha256` for the model, `<key>_sha256` for the others), or a {url, sha256} side (checked by its
    fetch). Hashed once: a teacher's model file can be gigabytes."""
    from kdgrid.importers import sha256_of, side_path

    if key not in p:
        raise KdgridError(f"{where}.{key}: missing; a {p.get('format', 'kdgrid')} teacher needs it")
    path = side_path(p[key], download_dir)
    pin = "sha256" if key == "model" else f"{key}_sha256"
    digest = sha256_of(path)
    if isinstance(p[key], str) and digest != p.get(pin):
        raise KdgridError(f"{path}: sha256 {digest}, but {where}.{pin} is {p.get(pin)}; the file changed, "
                          f"or set {pin} to the file's")
    return path, digest


def cmd_import_teacher(a) -> None:
    """A teacher trained elsewhere, pinned by sha256, as this grid's teacher, with its own
    vocabulary written beside it (it segments text as it was trained to; what it distils is text,
    which this grid encodes with its own): a kdgrid model file (copied, with a record of where it
    came from), or a fairseq Transformer checkpoint with its dictionary and sentencepiece model
    (converted: kdgrid.fairseq_import)."""
    import hashlib

    from kdgrid.checkpoint import load_model, save_model
    from kdgrid.errors import all_or_nothing, atomic_output
    from kdgrid.vocab import Vocab

    p = json_option(a.params, "--params")
    where = f"teacher_sizes.{p.get('teacher', '?')}.import"
    fmt = p.get("format", "kdgrid")
    if fmt not in IMPORT_FORMATS:
        raise KdgridError(f"{where}.format: {fmt!r}; one of {', '.join(IMPORT_FORMATS)}")
    path, digest = _pinned(p, "model", where, a.download_dir)
    record = {"model": str(p["model"]), "sha256": digest, "format": fmt}
    if fmt == "fairseq":
        from kdgrid.fairseq_import import convert

        files = {key: _pinned(p, key, where, a.download_dir) for key in ("dict", "spm")}
        model, vocab_bytes, conversion = convert(path, files["dict"][0], files["spm"][0])
        meta = {"vocab_sha256": hashlib.sha256(vocab_bytes).hexdigest(), "vocab_model": vocab_bytes}
        record.update({f"{key}_sha256": d for key, (_, d) in files.items()}, conversion=conversion)
    else:
        model, meta = load_model(path)
        if model.kind not in IMPORTABLE_KINDS:
            raise KdgridError(f"{path}: a model of kind {model.kind!r}; a teacher is one of "
                              f"{', '.join(IMPORTABLE_KINDS)}")
        if not meta.get("vocab_model"):
            raise KdgridError(f"{path}: the model file carries no vocabulary (meta vocab_model); import a file "
                              "written by `kdgrid train`")
        record.update(kind=model.kind, teacher=meta.get("teacher"), updates=meta.get("updates"))
    vocab = Vocab(meta["vocab_model"], f"{path} (its vocabulary)")
    if vocab.sha256 != meta.get("vocab_sha256"):
        raise KdgridError(f"{path}: its vocabulary does not match the vocab_sha256 it records; a damaged file")
    with all_or_nothing(a.out, a.vocab_out):
        save_model(a.out, model, {**meta, **json_option(a.labels, "--labels"), "imported": record})
        with atomic_output(a.vocab_out, "wb") as f:
            f.write(meta["vocab_model"])


def _matched_by_source(grid_src: list[str], released_src: list[str], targets: list[str], where: str):
    """Each grid training source's target from the released (source, target) pairs, matched by the
    source text (the released set's own source side echoes what it translated): the grid's cleaning
    may have dropped or reordered lines. A source the released set lacks is an error; a source it
    holds twice with different targets takes the first (counted)."""
    if released_src == grid_src:  # the same sources in the same order: each line keeps its own target
        return list(targets), {"kind": "source_echo", "released_pairs": len(targets), "released_sources_unused": 0,
                               "conflicting_duplicates": 0, "matched": "by line"}
    table: dict = {}
    conflicts = 0
    for s, t in zip(released_src, targets):
        if s in table:
            conflicts += table[s] != t
        else:
            table[s] = t
    missing = [i for i, s in enumerate(grid_src) if s not in table]
    if missing:
        first = missing[0]
        raise KdgridError(f"{where}: {len(missing)} of {len(grid_src)} training sources have no line in the released "
                          f"sources (first: line {first + 1}, {grid_src[first][:60]!r}); the set was made from other "
                          "sources or another cleaning of them")
    used = set(grid_src)
    return [table[s] for s in grid_src], {"kind": "source_echo", "released_pairs": len(targets),
                                          "released_sources_unused": sum(1 for s in table if s not in used),
                                          "conflicting_duplicates": conflicts, "matched": "by source"}


def cmd_import_distilled(a) -> None:
    from kdgrid.corpus import read_lines, write_lines
    from kdgrid.errors import all_or_nothing, write_json
    from kdgrid.importers import normalize, sha256_of, side_path

    p = json_option(a.params, "--params")
    name, form = p.get("method", "?"), p.get("normalize", "NFC")
    where = f"methods.{name}"
    if "tgt" not in p or ("src" in p) == ("src_sha256" in p):
        raise KdgridError(f"--params ({where}): give tgt and one alignment check, src (the set's own sources) or "
                          "src_sha256 (the sha256 of the training sources it was made from)")
    tgt = side_path(p["tgt"], a.download_dir)
    tgt_sha256 = sha256_of(tgt)
    if isinstance(p["tgt"], str):  # a local path: pinned by the method's sha256 (a URL side by its own)
        got = tgt_sha256
        if got != p.get("sha256"):
            raise KdgridError(f"{tgt}: sha256 {got}, but {where}.sha256 is {p.get('sha256')}; the file changed, or "
                              "set sha256 to the file's")
    targets = [normalize(t, form) for t in read_lines(tgt)]
    grid_src = read_lines(a.src)
    if "src" in p:
        src = side_path(p["src"], a.download_dir)
        released = [normalize(s, form) for s in read_lines(src)]
        if len(released) != len(targets):
            raise KdgridError(f"{src} has {len(released)} lines but {tgt} has {len(targets)}; {where}.src must be the "
                              "sources the set translates, line by line")
        out, check = _matched_by_source(grid_src, released, targets, f"{where} ({src})")
    else:
        got = sha256_of(a.src)
        if got != p["src_sha256"]:
            raise KdgridError(f"{a.src}: the grid's training sources have sha256 {got}, but {where}.src_sha256 says "
                              f"the set was made from {p['src_sha256']}; give the set's own sources as {where}.src "
                              "instead")
        if len(targets) != len(grid_src):
            raise KdgridError(f"{tgt} has {len(targets)} lines but {a.src} has {len(grid_src)}")
        out, check = targets, {"kind": "source_sha256", "src_sha256": got}
    record = {"method": name, "tgt": str(p["tgt"]), "tgt_sha256": tgt_sha256, "sentences": len(out),
              "empty_targets": sum(1 for t in out if not t), "alignment_check": check, "normalize": form}
    with all_or_nothing(a.out, a.record):
        write_lines(a.out, out)
        write_json(a.record, record)


def add_verbs(verb) -> None:
    """Register the verbs with kdgrid.cli's `verb(name, fn, help)`."""
    p = verb("ensemble", cmd_ensemble, "one teacher from trained ones: their next-token distributions combined")
    p.add_argument("--members", nargs="+", required=True, help="the members' model files (kind transformer)")
    p.add_argument("--vocab", required=True, help="the vocabulary every member was trained with")
    p.add_argument("--params", default="{}", help='{"combine": "logprob_mean" | "prob_mean"}')
    p.add_argument("--labels", default="{}")
    p.add_argument("--out", required=True)

    p = verb("import_teacher", cmd_import_teacher,
             "a teacher trained elsewhere (a kdgrid model file or a fairseq Transformer), pinned by sha256")
    p.add_argument("--params", required=True, help='{"teacher", "format": "kdgrid" | "fairseq", "model", "sha256", '
                   '"dict", "dict_sha256", "spm", "spm_sha256"} (each file a path or {url, sha256})')
    p.add_argument("--download-dir", default="downloads", help="cache for {url, sha256} model files")
    p.add_argument("--labels", default="{}")
    p.add_argument("--out", required=True, help="the teacher's model file in this grid")
    p.add_argument("--vocab-out", required=True, help="the teacher's own vocabulary (sentencepiece model)")

    p = verb("import_distilled", cmd_import_distilled,
             "a distilled set made elsewhere, checked against the training sources")
    p.add_argument("--src", required=True, help="the grid's training sources (data/train.src)")
    p.add_argument("--params", required=True, help='{"method", "tgt", "sha256", "src" | "src_sha256", "normalize"}')
    p.add_argument("--download-dir", default="downloads", help="cache for {url, sha256} sides")
    p.add_argument("--out", required=True, help="the distilled targets, one per training source")
    p.add_argument("--record", required=True, help="JSON: the file, its sha256 and the alignment check's counts")
