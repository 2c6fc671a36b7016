"""Teachers and distilled sets this grid does not make itself (torch-free: planning reads it).

An ensemble of trained sizes, `teacher_sizes.<name>: {ensemble: [a, b, ...], combine: ...}`
(kdgrid.models.ensemble), decodes and distils like any teacher, with torch (CTranslate2 has no
ensembles); it is no single network, so nothing that copies, rescores with or retrains a teacher's
network takes one. A `file` method imports a distilled set (kdgrid.cli_teachers): one column,
imported.<name>, checked against the training sources by one stated check.
"""

from __future__ import annotations

from kdgrid.methods import kinds as method_kinds

KEY = "ensemble"
IMPORT = "import"


def ensembles(c: dict) -> dict[str, list[str]]:
    """{ensemble size: its member sizes}."""
    return {name: list(size[KEY]) for name, size in c["teacher_sizes"].items() if KEY in size}


def imports(c: dict) -> dict[str, dict]:
    """{imported size: its import spec}: teachers trained elsewhere (kdgrid.cli_teachers)."""
    return {name: size[IMPORT] for name, size in c["teacher_sizes"].items() if IMPORT in size}


def trained(names, c: dict) -> list[str]:
    """`names` with each ensemble replaced by its members: the sizes whose training they need."""
    groups = ensembles(c)
    return list(dict.fromkeys(m for n in names for m in groups.get(n, [n])))


def _uses(c: dict) -> list[tuple[str, str, str]]:
    """(config key, teacher size, what it does with the network) of every use that needs one network."""
    grid, out = c["grid"], []
    for s in grid["students"]:
        st = c["students"].get(s, {})
        out += [(f"students.{s}.init.from", st.get("init", {}).get("from"), "copy its weights from"),
                (f"students.{s}.kd.teacher", st.get("kd", {}).get("teacher"), "score the student's positions with"),
                (f"students.{s}.decode.rescore", st.get("decode", {}).get("rescore"), "rescore candidates with")]
    for m in grid["methods"]:
        spec = c["methods"].get(m, {})
        if spec.get("kind") == "ban":
            out.append((f"methods.{m}.size", spec.get("size"), "train a Born-Again AT of its size"))
            if spec.get("size") == "teacher":
                out += [(f"methods.{m}.size", t, "train a Born-Again AT of its size (size: teacher)")
                        for t in spec.get("teachers", grid["teachers"])]
    if "filter" in c:
        out.append(("filter.teacher", c["filter"].get("teacher"), "embed sentence pairs with"))
    return [(where, t, why) for where, t, why in out if t]


def problems(c: dict) -> list[str]:
    sizes, groups, out = c["teacher_sizes"], ensembles(c), []
    for name, members in groups.items():
        for i, m in enumerate(members):
            where = f"teacher_sizes.{name}.ensemble[{i}]"
            if m not in sizes:
                out.append(f"{where}: {m!r} is not defined under teacher_sizes (defined: {', '.join(sorted(sizes))})")
            elif m in groups:
                out.append(f"{where}: {m!r} is itself an ensemble; list its members instead")
            elif "experts" in sizes[m]:
                out.append(f"{where}: {m!r} is a mixture-of-experts teacher; an ensemble joins plain Transformer "
                           "teachers (each member decodes with kdgrid.search)")
        repeated = sorted({m for m in members if members.count(m) > 1})
        if repeated:
            out.append(f"teacher_sizes.{name}.ensemble: lists {', '.join(repeated)} more than once; identical "
                       "members decode as one (list each once)")
    imported = imports(c)
    for name, members in groups.items():
        for i, m in enumerate(members):
            if m in imported:
                out.append(f"teacher_sizes.{name}.ensemble[{i}]: {m!r} is an imported teacher, with a vocabulary of "
                           "its own; an ensemble's members share this grid's (train them here)")
    for name, spec in imported.items():
        where = f"teacher_sizes.{name}.import"
        fairseq = spec.get("format") == "fairseq"
        for key, pin in (("model", "sha256"), ("dict", "dict_sha256"), ("spm", "spm_sha256")):
            if key != "model" and not fairseq:
                if key in spec or pin in spec:
                    out.append(f"{where}.{key}: a kdgrid model file carries its vocabulary; {key} is for "
                               "format: fairseq")
                continue
            if key not in spec:
                out.append(f"{where}.{key}: a fairseq teacher needs its {key} (a path with {pin}, or "
                           "{url, sha256})")
            elif isinstance(spec[key], str) and pin not in spec:
                out.append(f"{where}.{pin}: {key} is a local path; pin it with its sha256 (sha256sum {spec[key]})")
            elif not isinstance(spec[key], str) and pin in spec:
                out.append(f"{where}.{pin}: {key} is {{url, sha256}}, which carries its own checksum; drop this one")
    for where, t, why in _uses(c):
        if t in groups:
            out.append(f"{where}: {t!r} is an ensemble teacher (teacher_sizes.{t}.ensemble), which decodes but is "
                       f"no single network to {why}; name one of its members ({', '.join(groups[t])})")
        elif t in imported:
            out.append(f"{where}: {t!r} is an imported teacher (teacher_sizes.{t}.import), with a vocabulary and "
                       f"size of its own: not usable here to {why} (train a teacher size in this grid for that)")
    if c["grid"].get("teacher_seeds"):
        for t in c["grid"]["teachers"]:
            if t in groups or t in imported:
                out.append(f"grid.teacher_seeds: teacher {t!r} is {'an ensemble' if t in groups else 'imported'}; "
                           "seed replicas are of teachers this grid trains (drop it from grid.teachers or drop "
                           "teacher_seeds)")
    return out


def file_method_problems(c: dict) -> list[str]:
    """The grid's file methods: their targets pinned (a path by sha256, a URL side by its own), one
    alignment check, no `teachers` (the column is no teacher's), and the column's teacher part free."""
    out = []
    files = [m for m in c["grid"]["methods"] if c["methods"].get(m, {}).get("kind") == method_kinds.FILE_KIND]
    for m in files:
        spec, where = c["methods"][m], f"methods.{m}"
        if "tgt" not in spec:
            out.append(f"{where}: kind 'file' needs tgt, the distilled targets (a path with sha256, or "
                       "{url, sha256})")
        elif isinstance(spec["tgt"], str) and "sha256" not in spec:
            out.append(f"{where}.sha256: tgt is a local path; pin it with its sha256 (sha256sum {spec['tgt']})")
        elif not isinstance(spec.get("tgt"), str) and "sha256" in spec:
            out.append(f"{where}.sha256: tgt is {{url, sha256}}, which carries its own checksum; drop this one")
        if ("src" in spec) == ("src_sha256" in spec):
            out.append(f"{where}: give one alignment check: src (the set's own sources, matched to the training "
                       "sources line by line) or src_sha256 (the sha256 of the data/train.src it was made from)")
        if "teachers" in spec:
            out.append(f"{where}.teachers: a file method makes one column ({method_kinds.IMPORTED}.{m}), of no teacher "
                       "of this grid; drop teachers")
    if files and method_kinds.IMPORTED in c["teacher_sizes"]:
        out.append(f"teacher_sizes: {method_kinds.IMPORTED!r} names the file methods' columns "
                   f"({method_kinds.IMPORTED}.<method>); rename that size")
    return out
