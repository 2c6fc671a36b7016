"""Validate the merged kdgrid config: the JSON schema, then cross-key rules the schema cannot say.

Every problem is reported at once, each naming its config key, so a dry run shows them all.
Plain Python (no Snakemake, no torch) so tests can call it directly. The facts it checks against
(method kinds, --wrap defaults, which students rescore) live once, in kdgrid's torch-free modules:
kdgrid.methods.kinds, kdgrid.kd.specs and kdgrid.models.configs.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import filter_check
import jsonschema
import yaml

# kdgrid from this checkout, as the jobs import it (common.smk's PYTHONPATH): the Snakemake that
# plans may run where kdgrid is not installed (`--sdm conda` builds the package into no env).
SRC = str(Path(__file__).resolve().parents[1] / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)
import teacher_check  # noqa: E402  (imports kdgrid)

from kdgrid.kd import specs as wrap_specs  # noqa: E402
from kdgrid.methods import kinds as method_kinds  # noqa: E402
from kdgrid.models import configs as model_configs  # noqa: E402


class ConfigError(ValueError):
    pass


def key_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


NAME_PATTERN = "^[A-Za-z0-9_-]+$"
STRUCTURAL = {"required", "additionalProperties", "type", "minProperties", "not"}


def _closest(err):
    """For oneOf/anyOf failures, descend into the alternative the user evidently meant: the only
    one whose errors are about values rather than the shape (wrong keys or types)."""
    while err.context:
        branches: dict = {}
        for sub in err.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        meant = [errs for errs in branches.values() if not all(e.validator in STRUCTURAL for e in errs)]
        pool = meant[0] if len(meant) == 1 else err.context
        err = max(pool, key=jsonschema.exceptions.relevance)
    return err


def _duplicates(items: list) -> str:
    """'non-unique name 'beam' (items 0 and 2)' for each repeated item, in list order."""
    positions: dict = {}
    for i, item in enumerate(items):
        positions.setdefault(repr(item), []).append(i)
    repeated = [(name, at) for name, at in positions.items() if len(at) > 1]
    return "; ".join(f"non-unique name {name} (items {', '.join(map(str, at[:-1]))} and {at[-1]})"
                     for name, at in repeated)


# Settings that moved: the old key's new home, for a config written for an earlier kdgrid.
MOVED = {"metrics": {"floor": "moved to metrics.faithfulness.floor (with smoothing: floor; or "
                              "smoothing: add_alpha and alpha)"}}
# Decoding options that only iterative students have.
ITERATIVE = {"inat", "cmlm", "levt", "inst"}


def _schema_problems(config: dict, schema_path) -> list[str]:
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        err = _closest(err)
        where = key_path(err.absolute_path)
        size = err.instance if len(err.absolute_path) == 2 and err.absolute_path[0] == "teacher_sizes" else None
        made = {teacher_check.KEY, "combine", teacher_check.IMPORT}  # an ensemble's or an import's keys
        if isinstance(size, dict) and made & set(size) and set(size) - made:
            problems.append(f"{where}: an ensemble or imported teacher under the name of a trained size "
                            f"(workflow/defaults.yaml defines {err.absolute_path[1]!r}, and your keys merge into "
                            "it); give it a name of its own")
            continue
        if err.validator == "additionalProperties":
            where = key_path(err.absolute_path) if err.absolute_path else "(top level)"
            moved = [f"{where}.{k}: {hint}" for k, hint in MOVED.get(where, {}).items() if k in err.instance]
            problems += moved or [f"{where}: {err.message.replace('Additional properties', 'unknown keys')}"
                                  " (check the spelling; workflow/defaults.yaml lists every setting)"]
        elif err.validator == "pattern" and err.validator_value == NAME_PATTERN:  # names become path parts
            problems.append(f"{where}: name {err.instance!r} may only use letters, digits, _ and -")
        elif err.validator == "uniqueItems" and err.validator_value:
            problems.append(f"{where}: {_duplicates(err.instance)}; list each name once")
        elif where.endswith(".expert") and err.instance == "best":  # the value before single-expert decoding
            problems.append(f"{where}: {err.message}; `best` is now `mixture_best` (per sentence the mixture's "
                            "best output); the default `each` makes one column per expert")
        else:
            problems.append(f"{where}: {err.message}")
    return problems


def _semantic_problems(c: dict) -> list[str]:
    problems = []
    grid = c["grid"]
    for key, defined, where in (("teachers", c["teacher_sizes"], "teacher_sizes"),
                                ("methods", c["methods"], "methods"),
                                ("students", c["students"], "students")):
        for i, name in enumerate(grid[key]):
            if name not in defined:
                problems.append(f"grid.{key}[{i}]: {name!r} is not defined under {where} "
                                f"(defined: {', '.join(sorted(defined))})")
    decoded = [m for m in grid["methods"] if c["methods"].get(m, {}).get("kind") != method_kinds.FILE_KIND]
    if decoded and not grid["teachers"]:  # a file method's set needs no teacher
        problems.append(f"grid.methods: {', '.join(decoded)} decode with a teacher, but grid.teachers is empty")
    problems += _teacher_seed_problems(c)
    rescorers = [c["students"][s].get("decode", {}).get("rescore") for s in grid["students"]
                 if s in c["students"]]
    method_problems, ban_sizes = _method_problems(c)
    problems += method_problems
    wrapped = [t for s in grid["students"] if s in c["students"] for t in wrap_teachers(c["students"][s])]
    problems += teacher_check.problems(c) + teacher_check.file_method_problems(c)
    trained = [*grid["teachers"], *filter(None, rescorers), *wrapped, *ban_sizes]
    for name in teacher_check.trained(trained, c):  # the ATs trained (an ensemble's members)
        size = c["teacher_sizes"].get(name)
        if size is None or teacher_check.KEY in size or teacher_check.IMPORT in size:  # teacher_check's
            continue
        if size["d_model"] % size["heads"]:
            problems.append(f"teacher_sizes.{name}.heads: d_model {size['d_model']} is not divisible "
                            f"by heads {size['heads']}; pick heads that divide d_model")
        if "layers" not in size and not {"encoder_layers", "decoder_layers"} <= set(size):
            problems.append(f"teacher_sizes.{name}: set layers (or encoder_layers and decoder_layers)")
        if "expert_prior" in size and "experts" not in size:
            problems.append(f"teacher_sizes.{name}.expert_prior: a prior over experts needs experts: K "
                            "(K >= 2, a mixture-of-experts teacher); set experts or drop expert_prior")
    for name in grid["students"]:
        st = c["students"].get(name)
        if st is None:
            continue
        problems += _rescore_problems(name, st, c["teacher_sizes"])
        problems += _wrap_problems(name, st, c["teacher_sizes"], c["teacher"]["architecture"].get("pre_norm", True))
        train = {**c["student"]["train"], **st.get("train", {})}
        if "glance" in st and not st["glance"].get("anneal_updates") and not train.get("max_updates"):
            problems.append(f"students.{name}.glance.anneal_updates: the student's training stops by epochs "
                            "(max_updates 0), so give the updates over which the glancing ratio falls")
        if "glance" in st and c["compute"].get("compile"):
            problems.append(f"students.{name}.glance: compute.compile does not go with glancing (its ratio "
                            "changes every update and its two passes rewind the random generator); switch one off")
        problems += _decode_problems(name, st)
        if "adaptive" in st.get("decode", {}) and st["kind"] not in ITERATIVE:
            problems.append(f"students.{name}.decode.adaptive: kind {st['kind']!r} does not iterate; "
                            f"only {', '.join(sorted(ITERATIVE))} stop adaptively")
        model = st["model"]
        if "d_model" in model and "heads" in model and model["d_model"] % model["heads"]:
            problems.append(f"students.{name}.model.heads: d_model {model['d_model']} is not divisible "
                            f"by heads {model['heads']}; pick heads that divide d_model")
    corpus = c["corpus"]
    if corpus["source"] == "synthetic":
        syn = corpus.get("synthetic", {})
        if corpus.get("files", {}).get("tests"):
            problems.append("corpus.files.tests: the synthetic corpus has one test set; more test sets "
                            "need corpus.source: files")
        if syn.get("max_len", 4) < syn.get("min_len", 4):
            problems.append(f"corpus.synthetic.max_len: {syn['max_len']} is below min_len {syn['min_len']}")
    else:
        files = corpus.get("files", {})
        missing = [s for s in ("train", "valid", "test") if s not in files]
        if missing:
            problems.append(f"corpus.files: source is 'files' but {', '.join(missing)} "
                            "{src: PATH, tgt: PATH} are missing")
        extra = files.get("tests", {})
        if corpus.get("test_name") in extra:
            problems.append(f"corpus.test_name: {corpus['test_name']!r} is also a name under corpus.files.tests; "
                            "name the primary test set (files.test) differently")
        if extra and corpus.get("multiway"):
            problems.append("corpus.files.tests: more test sets need a single-target corpus; a multiway "
                            "corpus scores its one test set per language (set corpus.multiway: false or "
                            "drop corpus.files.tests)")
        for split, spec in [*((s, v) for s, v in files.items() if s != "tests"),
                            *((f"tests.{n}", v) for n, v in extra.items())]:
            mapping = isinstance(spec.get("tgt"), dict) and "url" not in spec["tgt"]
            if corpus.get("multiway") and not mapping:
                problems.append(f"corpus.files.{split}.tgt: corpus.multiway is on, so tgt must map "
                                "each language to a file, e.g. {de: PATH, fr: PATH}")
            elif mapping and not corpus.get("multiway"):
                problems.append(f"corpus.files.{split}.tgt: a language mapping needs corpus.multiway: true")
        if corpus.get("multiway"):
            langs = {split: list(spec.get("tgt", {})) for split, spec in files.items()
                     if split != "tests" and "tgt" in spec}
            if len({tuple(v) for v in langs.values()}) > 1:
                problems.append(f"corpus.files: every split needs the same target languages, got {langs}")
    for section in ("teacher", "student"):
        problems += _train_problems(c[section]["train"], f"{section}.train")
    for name, st in c["students"].items():
        if name in grid["students"]:
            problems += _train_problems({**c["student"]["train"], **st.get("train", {})},
                                        f"students.{name}.train (merged with student.train)")
    return problems


TEACHER_REPLICA = re.compile(r"-seed\d+$")  # grid.teacher_seeds: the replica <t>-seed<N> of teacher t


def _teacher_seed_problems(c: dict) -> list[str]:
    """grid.teacher_seeds: the replicas' names are free, and each teacher's own seed is among them
    (its run keeps the teacher's name and paths)."""
    problems = [f"teacher_sizes: {name!r} ends like a teacher replica's name (<teacher>-seed<N>, "
                "grid.teacher_seeds); rename the size" for name in c["teacher_sizes"] if TEACHER_REPLICA.search(name)]
    seeds = c["grid"].get("teacher_seeds")
    for t in c["grid"]["teachers"] if seeds else []:
        own = {**c["teacher"]["train"], **c["teacher_sizes"].get(t, {}).get("train", {})}.get("seed", 1)
        if own not in seeds:
            problems.append(f"grid.teacher_seeds: {seeds} lacks teacher {t}'s own seed {own} (its training seed, "
                            f"teacher.train.seed or teacher_sizes.{t}.train.seed): add {own}, whose run keeps "
                            f"the name {t}")
    return problems


def _method_problems(c: dict) -> tuple[list[str], list[str]]:
    """The grid's methods: options that fit their kind, nbest within the beam, a BAN size that
    exists and a `from` that names a beam-kind method of the grid, a moe method with an MoE teacher
    (and an expert it has), column names used once.
    Also returns the teacher sizes the BAN rounds train."""
    problems, ban_sizes, seen = [], [], {}
    grid, sizes = c["grid"], c["teacher_sizes"]
    moe_teachers = {t: sizes[t]["experts"] for t in grid["teachers"] if sizes.get(t, {}).get("experts")}
    for name in grid["methods"]:
        spec = c["methods"].get(name)
        if spec is None:
            continue
        kind, where = spec["kind"], f"methods.{name}"
        taken = method_kinds.KIND_OPTIONS.get(kind)
        for key in spec:
            if key == "kind" or key in method_kinds.GENERAL_OPTIONS:
                continue
            if taken is not None and key not in taken:
                problems.append(f"{where}.{key}: kind {kind!r} takes no {key} (its options: {', '.join(taken)})")
            elif taken is None and key in method_kinds.SECTION5_OPTIONS:
                owner = next(k for k, opts in method_kinds.KIND_OPTIONS.items() if key in opts)
                problems.append(f"{where}.{key}: only kind {owner!r} takes {key} (this method's kind is {kind!r})")
        opts = method_kinds.resolved(spec)
        outside = [t for t in spec.get("teachers", []) if t not in grid["teachers"]]
        if outside:
            problems.append(f"{where}.teachers: {', '.join(map(repr, outside))} not in grid.teachers "
                            f"({', '.join(grid['teachers']) or 'none'}): the method would make no column for "
                            "it; add it to grid.teachers or drop it here")
        if kind == "interpolate" and opts["nbest"] > opts["beam"]:
            problems.append(f"{where}.nbest: {opts['nbest']} is more than beam {opts['beam']}: the n-best list "
                            "comes from the beam (raise beam, or leave it out: it defaults to nbest)")
        if kind == "ban":
            size = spec.get("size")
            named = size not in (None, method_kinds.STUDENT_SIZE, method_kinds.TEACHER_SIZE)
            if not named and (size or method_kinds.STUDENT_SIZE) in sizes:
                problems.append(f"{where}.size: {size or method_kinds.STUDENT_SIZE!r} means the "
                                f"{'students' if size != method_kinds.TEACHER_SIZE else 'teacher'}' size here, but "
                                "teacher_sizes also defines a size of that name; rename that size")
            if not named and size != method_kinds.TEACHER_SIZE and grid["students"]:
                first = grid["students"][0]
                body = c["students"].get(first, {}).get("model", {})
                missing = [k for k in ("d_model", "ffn", "heads") if k not in body]
                if "layers" not in body and not {"encoder_layers", "decoder_layers"} <= set(body):
                    missing.append("layers (or encoder_layers and decoder_layers)")
                if missing:
                    problems.append(f"{where}.size: student (the default) trains an AT of the first grid student's "
                                    f"body, but students.{first}.model has no {', '.join(missing)}; set them, or "
                                    "give size: teacher or a teacher_sizes name")
            if named and size not in sizes:
                problems.append(f"{where}.size: {size!r} is neither 'student', 'teacher' nor defined under "
                                f"teacher_sizes (defined: {', '.join(sorted(sizes))})")
            elif named and opts["rounds"] > 1:
                ban_sizes.append(size)
            source = opts["from"]
            beams = [m for m in grid["methods"] if c["methods"].get(m, {}).get("kind") == "beam"]
            if source not in beams:
                problems.append(f"{where}.from: {source!r} is not a method of kind 'beam' in grid.methods "
                                f"(beam-kind methods there: {', '.join(beams) or 'none'}); round 1 of a ban "
                                "method is that method's column: add it to grid.methods or name another")
            else:
                mine = set(spec.get("teachers", grid["teachers"]))
                missing = sorted(mine - set(c["methods"][source].get("teachers", grid["teachers"])))
                if missing:
                    problems.append(f"{where}.from: method {source!r} makes no column for teacher(s) "
                                    f"{', '.join(missing)} (its `teachers`), so round 1 of {name!r} is missing "
                                    f"there; list them under methods.{source}.teachers or drop them here")
        if kind == "moe":
            if not moe_teachers:
                problems.append(f"{where}: kind 'moe' decodes with a mixture-of-experts teacher, but none of "
                                f"grid.teachers ({', '.join(grid['teachers']) or 'none'}) declares experts "
                                "(teacher_sizes.<name>.experts); add one, or drop the method")
            expert = opts["expert"]
            for t, k in moe_teachers.items():
                if isinstance(expert, int) and expert >= k and t in spec.get("teachers", grid["teachers"]):
                    problems.append(f"{where}.expert: {expert} but teacher {t} has {k} experts "
                                    f"(0..{k - 1}); pick one of them, 'each' or 'mixture_best'")
        shapes = [sizes.get(t, {}) for t in grid["teachers"]] if kind == "moe" else [{}]
        for column in dict.fromkeys(col for size in shapes for col in method_kinds.columns(name, spec, size)):
            if column in seen and seen[column] != name:
                problems.append(f"{where}: its column {column!r} is also a column of method {seen[column]!r}; "
                                "rename one (a ban method's rounds add 2, 3, ... to its name, a moe method's "
                                "experts 0, 1, ..., its mixture_best _mixbest)")
            seen.setdefault(column, name)
    return problems, ban_sizes


# Kinds that decode several candidates per sentence, with their models' default length_beam and
# samples (kdgrid.models.configs: the config classes' own defaults).
RESCORABLE = {kind: model_configs.candidate_defaults(kind) for kind in model_configs.RESCORABLE}


def _rescore_problems(name: str, st: dict, teacher_sizes: dict) -> list[str]:
    decode = st.get("decode", {})
    teacher = decode.get("rescore")
    where = f"students.{name}.decode.rescore"
    if not teacher:
        return []
    if teacher not in teacher_sizes:
        return [f"{where}: {teacher!r} is not defined under teacher_sizes "
                f"(defined: {', '.join(sorted(teacher_sizes))})"]
    kind = st["kind"]
    if kind == "transformer":
        return [f"{where}: kind 'transformer' is autoregressive (its beam search ranks its own "
                f"candidates); only {', '.join(RESCORABLE)} candidates can be rescored"]
    if kind not in RESCORABLE:
        return [f"{where}: kind {kind!r} keeps one candidate per sentence, so there is nothing to "
                f"rescore; only {', '.join(RESCORABLE)} candidates can be rescored"]
    options = {**RESCORABLE[kind], **{k: decode[k] for k in RESCORABLE[kind] if k in decode}}
    if "samples" in decode and "samples" not in RESCORABLE[kind]:
        return [f"students.{name}.decode.samples: kind {kind!r} draws no samples (only flowseq "
                "does); raise length_beam to rescore several candidates"]
    n = 1
    for value in options.values():
        n *= value
    if n < 2:
        shown = ", ".join(f"{k} {v}" for k, v in options.items())
        return [f"{where}: one candidate per sentence ({shown}) leaves nothing to rescore; raise "
                + " or ".join(options)]
    return []


# Students that learn from a teacher (training wrappers, kdgrid.kd): `init` copies a teacher's
# weights before training, `kd` adds word-level KD towards its token distribution (with `online`,
# through a low-rank adapter on the frozen teacher that learns alongside); `glance` (GLAT) needs
# no teacher: it glances at the gold target while training. The defaults and the
# kinds each wrapper takes are kdgrid.kd.specs'; --wrap passes the defaults in full, so a job's
# command says exactly how its student learned.
WRAP_DEFAULTS = wrap_specs.wrap_defaults()
WIDTH = ("d_model", "ffn", "heads")


def wrap_spec(st: dict) -> dict:
    """A student's --wrap object: its init and kd with every default filled in ({} for a plain
    student); mix_weight only with loss 'mix', the only loss it weighs."""
    spec = {}
    if "init" in st:
        spec["init"] = {**WRAP_DEFAULTS["init"], **st["init"]}
    if "glance" in st:
        spec["glance"] = {**WRAP_DEFAULTS["glance"], **st["glance"]}
    if "kd" in st:
        kd = {**WRAP_DEFAULTS["kd"], **st["kd"]}
        if kd["loss"] != "mix":
            kd.pop("mix_weight")
        if "online" in kd:
            kd["online"] = {**WRAP_DEFAULTS["online"], **kd["online"]}
        spec["kd"] = kd
    return spec


def _decode_problems(name: str, st: dict) -> list[str]:
    """decode.method and the DA-Transformer's decode options, for the kinds that take them."""
    kind, decode, problems = st["kind"], st.get("decode", {}), []
    methods = model_configs.DECODE_METHODS.get(kind)
    if "method" in decode and decode["method"] not in (methods or ()):
        problems.append(f"students.{name}.decode.method: kind {kind!r} " + (
            f"decodes by {', '.join(methods)}, not {decode['method']!r}" if methods else
            f"has one way to decode; decode.method is for kinds {', '.join(model_configs.DECODE_METHODS)}"))
    dat_keys = model_configs.DAT_DECODE_KEYS
    if kind == "dat":
        method = decode.get("method", methods[0])
        for key in decode:
            if key not in dat_keys:
                problems.append(f"students.{name}.decode.{key}: kind 'dat' does not take it; its decode options are "
                                f"{', '.join(dat_keys)}")
            elif dat_keys[key] and method not in dat_keys[key]:
                problems.append(f"students.{name}.decode.{key}: applies to method {' or '.join(dat_keys[key])}; "
                                f"this student decodes by {method}")
    shared = {"method", "temperature"} if kind == "transformer" else {"method"}  # method: checked above
    for key in dat_keys:
        if kind != "dat" and key in decode and key not in shared:
            problems.append(f"students.{name}.decode.{key}: a DA-Transformer option (kind dat); kind {kind!r} "
                            "does not take it")
    return problems


def wrap_teachers(st: dict) -> list[str]:
    """The teacher sizes a student learns from (init.from, kd.teacher), each once."""
    return list(dict.fromkeys(filter(None, [st.get("init", {}).get("from"), st.get("kd", {}).get("teacher")])))


def _wrap_problems(name: str, st: dict, teacher_sizes: dict, teacher_pre_norm: bool = True) -> list[str]:
    problems, kind, defined = [], st["kind"], ", ".join(sorted(teacher_sizes))
    for section, key in (("init", "from"), ("kd", "teacher")):
        teacher = st.get(section, {}).get(key)
        if teacher is not None and teacher not in teacher_sizes:
            problems.append(f"students.{name}.{section}.{key}: {teacher!r} is not defined under teacher_sizes "
                            f"(defined: {defined})")
    kd = st.get("kd")
    loss = (kd or {}).get("loss", WRAP_DEFAULTS["kd"]["loss"])
    if kd is not None and kind not in wrap_specs.KD_KINDS:
        problems.append(f"students.{name}.kd: kind {kind!r} has no token distribution per target position to "
                        f"match a teacher's; word-level KD is for kinds {', '.join(wrap_specs.KD_KINDS)}")
    if kd is not None and "mix_weight" in kd and loss != "mix":
        problems.append(f"students.{name}.kd.mix_weight: only loss 'mix' weighs forward against reverse KL "
                        f"(this student's loss is {loss!r}); set loss: mix or drop mix_weight")
    if "glance" in st and kind not in wrap_specs.GLANCE_KINDS:
        problems.append(f"students.{name}.glance: kind {kind!r} cannot glance (one parallel pass whose decoder "
                        f"inputs take gold embeddings); glance is for kinds {', '.join(wrap_specs.GLANCE_KINDS)}")
    if "glance" in st and kd is not None:
        problems.append(f"students.{name}: glance and kd do not compose (word-level KD scores the plain model's "
                        "positions; glancing feeds some of them the gold tokens): keep one, e.g. as two students")
    init = st.get("init")
    if init is not None and kind not in wrap_specs.INIT_KINDS:
        problems.append(f"students.{name}.init: kind {kind!r} does not build on the Transformer body a teacher's "
                        f"weights fit; init is for kinds {', '.join(wrap_specs.INIT_KINDS)}")
    elif init is not None and init["from"] in teacher_sizes:
        problems += _init_fit_problems(name, st["model"], init["from"], teacher_sizes[init["from"]])
        if st["model"].get("pre_norm", True) != teacher_pre_norm:
            problems.append(f"students.{name}.init.from: the student's pre_norm is {st['model'].get('pre_norm', True)} "
                            f"but the teachers' (teacher.architecture.pre_norm) is {teacher_pre_norm}; copied "
                            "layers need the same normalization order: set both alike")
    return problems


def _init_fit_problems(name: str, model: dict, teacher: str, size: dict) -> list[str]:
    """Copying weights needs the teacher's width (d_model, ffn, heads) and at most its depth."""
    where = f"students.{name}.init.from"
    if teacher_check.KEY in size or teacher_check.IMPORT in size:  # no body to copy: teacher_check says so
        return []
    theirs = {**{k: size[k] for k in WIDTH},
              **{f"{s}_layers": size.get(f"{s}_layers", size.get("layers")) for s in ("encoder", "decoder")}}
    unset = [k for k in theirs if k not in model]
    if unset:
        return [f"{where}: copying teacher size {teacher}'s weights needs the student's width and depth; set "
                f"students.{name}.model.{', '.join(unset)} (teacher size {teacher}: "
                f"{', '.join(f'{k} {theirs[k]}' for k in unset)})"]
    problems = []
    if any(model[k] != theirs[k] for k in WIDTH):
        def shown(dims):
            return ", ".join(f"{k} {dims[k]}" for k in WIDTH)
        problems.append(f"{where}: student {name} ({shown(model)}) and teacher size {teacher} ({shown(theirs)}) "
                        "differ in width; copying weights needs the same d_model, ffn and heads (pick a teacher "
                        f"size of the student's width, or change students.{name}.model)")
    for stack in ("encoder", "decoder"):
        key = f"{stack}_layers"
        if theirs[key] is not None and model[key] > theirs[key]:
            problems.append(f"{where}: student {name} has {model[key]} {stack} layers but teacher size {teacher} "
                            f"has {theirs[key]}; init copies teacher layers into the student's (init.layers picks "
                            f"which), so the student may have at most {theirs[key]}")
    return problems


def _shard_problems(c: dict, train_sentences: int | None) -> list[str]:
    """More distillation shards than training sentences leaves shards empty and makes planning
    crawl (100,000 shards do not plan in a minute). The count is the synthetic generator's, or
    that of an already prepared corpus (results/<name>/data/stats.json)."""
    corpus, shards = c["corpus"], c["distill"]["shards"]
    if corpus["source"] == "synthetic":
        syn = corpus.get("synthetic", {})
        train_sentences = syn.get("train", 0) * (syn.get("modes", 1) if corpus.get("multiway") else 1)
    if train_sentences is not None and shards > train_sentences:
        return [f"distill.shards: {shards} shards for {train_sentences} training sentences; use at most "
                f"{train_sentences} (a shard of a few thousand sentences keeps each job worth its start-up)"]
    return []


def _train_problems(train: dict, where: str) -> list[str]:
    if train.get("max_updates", 0) <= 0 and train.get("max_epochs", 0) <= 0:
        return [f"{where}: set max_updates or max_epochs above 0, or training never stops"]
    return []


def check(config: dict, schema_path, sources: list[str], train_sentences: int | None = None) -> None:
    """`train_sentences`: the prepared corpus's size where known (files corpora)."""
    problems = _schema_problems(config, schema_path)
    if not problems:  # cross-key rules assume the shapes the schema guarantees
        problems = (_semantic_problems(config) + _shard_problems(config, train_sentences)
                    + filter_check.problems(config))
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"invalid configuration (from {' + '.join(sources)}):\n{listed}")
