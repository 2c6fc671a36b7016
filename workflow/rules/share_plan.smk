# The shared store (share.store; kdgrid.store): the recipes and keys of the products this grid makes
# (teachers, distilled sets, alignments), and which of them to take from the store, decided when the
# jobs are planned; the rules that fetch and put them are share.smk's.
from kdgrid import store as kdgrid_store

# normalized: the fetch jobs' parameters do not change with a respelling of the same folder
STORE = os.path.normpath(os.path.abspath(config["share"]["store"])) if config["share"]["store"] else None
if STORE and Path(STORE).exists() and not Path(STORE).is_dir():
    raise WorkflowError(f"share.store: {STORE} is a file; name a folder every grid can read and write")
SHARE_TARGETS = []  # the store_put records the `all` rule asks for
REUSED_RECORDS = []  # (record, scope) of every fetched product: aggregate charges their recorded cost


def _hashed_sides(spec):
    """A corpus split spec with each file named by its sha256 instead of its path or URL."""
    if isinstance(spec, str):  # a local path
        return {"sha256": kdgrid_store.corpus_file_sha256(spec, Path(STORE) / ".hashes")}
    if isinstance(spec, dict) and "url" in spec:  # pinned by its own sha256
        return {"sha256": spec["sha256"]}
    if isinstance(spec, dict):
        return {k: v if k in ("sacrebleu", "langpair") else _hashed_sides(v) for k, v in spec.items()}
    return spec


def data_recipe(filtered=True):
    """What decides the grid's training pair and vocabulary: the corpus by content, its preparation
    and the vocabulary settings (not the corpus's name, nor any path). None for the filtered pair of
    corpus.clean.filter (the filter's chain is not keyed; filtered=False: the unfiltered pair)."""
    if filtered and CLEAN_FILTER:
        return None
    corpus = {k: v for k, v in prepare_params().items() if k != "name"}
    if "files" in corpus:
        corpus["files"] = _hashed_sides(corpus["files"])
    return {"corpus": corpus, "vocab": config["vocab"]}


def teacher_recipe(name, data):
    """A teacher's: its kind, size and training settings (seed included) on `data`; an ensemble's,
    its members' and the combine; an imported one's, its files' sha256s. None if not keyed."""
    if data is None:
        return None
    if name in ENSEMBLES:
        members = [teacher_recipe(m, data) for m in ENSEMBLES[name]]
        return None if None in members else {"ensemble": members, "combine": ensemble_combine(name)}
    if name in IMPORTS:
        spec = IMPORTS[name]
        pins = {
            k: spec[k] if k.endswith("sha256") else spec[k]["sha256"]
            for k in ("sha256", "dict_sha256", "spm_sha256", "model", "dict", "spm")
            if k in spec and (k.endswith("sha256") or isinstance(spec[k], dict))
        }
        return {"import": {"format": spec.get("format", "kdgrid"), **pins}, "data": data}
    return {"kind": teacher_kind(name), "model": teacher_model(name), "train": teacher_train(name), "data": data}


def set_recipe(column):
    """A distilled set's: its teacher's, the method's decoding settings, the sharding and the sources.
    Born-Again rounds and imported sets: None."""
    teacher, _, col = column.partition(".")
    if teacher == method_kinds.IMPORTED or METHOD_OF[col][1] is not None:
        return None
    data = data_recipe()
    recipe = teacher_recipe(teacher, data)
    if recipe is None:
        return None
    method = method_params(col, teacher)
    # a sampling method's, the shards and chunks too: it seeds each chunk of each shard (kdgrid.distill.chunk_seed)
    sharding = {"shards": SHARDS, "chunk_sentences": config["distill"]["chunk_sentences"]} if "seed" in method else {}
    return {"teacher": recipe, "method": method, **({"distill": sharding} if sharding else {}), "data": data}


def _job(rule, **wildcards):
    """(rule, benchmark, log) of one job that makes a product: its cost and the code it ran."""
    r = getattr(rules, rule)
    return (rule, str(r.benchmark).format(**wildcards), str(r.log[0]).format(**wildcards))


def share_products():
    """{id: {kind, key, recipe, files {name: path}, made_by [(rule, benchmark, log)], scope}} of every
    product this grid makes that the store can hold."""
    code = kdgrid_store.code_fingerprint(config["share"]["code"])
    out = {}

    def add(pid, kind, recipe, files, made_by, scope, upstream=(), checks=None):
        if recipe is not None:
            key = kdgrid_store.key(kind, recipe, code)
            out[pid] = {
                "kind": kind,
                "key": key,
                "recipe": recipe,
                "code": code,
                "files": files,
                "made_by": made_by,
                "scope": scope,
                "upstream": list(upstream),  # the products it is made from (their code is its code too)
                "checks": checks or {},  # this grid's files it is made from, checked when it is taken
            }

    data = data_recipe()
    trained = [
        t
        for t in dict.fromkeys([*TEACHERS, *STUDENT_TEACHERS, *ENSEMBLE_MEMBERS])
        if t not in ENSEMBLES and t not in IMPORTS
    ]
    for t in trained:
        add(
            f"teacher.{t}",
            "teacher",
            teacher_recipe(t, data),
            {"model.pt": f"{R}/teachers/{t}/model.pt"},
            [_job("train_teacher", teacher=t)],
            f"teacher/{t}",
        )
    if FILTER:  # the filter's own teacher, on the unfiltered pair: a grid teacher's recipe
        size = FILTER["teacher"]
        recipe = teacher_recipe(size, data_recipe(filtered=False))
        add(
            "filter_teacher",
            "teacher",
            recipe and {**recipe, "kind": "transformer"},
            {"model.pt": FILTER_TEACHER},
            [_job("train_filter_teacher")],
            COST_SCOPES.get("train_filter_teacher"),
        )
    for column in DISTILLED:
        recipe = set_recipe(column)
        teacher, method = column.split(".", 1)
        shards = [_job("distill", teacher=teacher, method=method, shard=k) for k in range(SHARDS)]
        add(
            f"distilled.{column}",
            "distilled",
            recipe,
            {"train.tgt": f"{R}/distill/{column}/train.tgt"},
            shards + [_job("gather", teacher=teacher, method=method)],
            f"data/{column}",
            upstream=[f"teacher.{m}" for m in ENSEMBLES.get(teacher, [teacher])],
            checks={"train.src": TRAIN_SRC},
        )
        eflomal = config["metrics"]["eflomal"]
        align = f"{R}/distill/{column}/align"
        add(
            f"alignment.{column}",
            "alignment",
            recipe and {"set": recipe, "eflomal": eflomal, "data": data},
            {"real.links": f"{align}/real.links", "distilled.links": f"{align}/distilled.links"},
            [_job("align_distilled", teacher=teacher, method=method)],
            f"data/{column}",
            upstream=[f"distilled.{column}"],
            checks={"train.src": TRAIN_SRC, "train.tgt": TRAIN_TGT},
        )
    add(
        "alignment.raw",
        "alignment",
        data and {"raw": True, "eflomal": config["metrics"]["eflomal"], "data": data},
        {"train.links": f"{R}/data/align/train.links"},
        [_job("align_raw")],
        "data/raw",
        checks={"train.src": TRAIN_SRC, "train.tgt": TRAIN_TGT},
    )
    return out


def fetched_record(pid):
    return f"{R}/store/fetched/{pid}.json"


def _to_fetch(products):
    """{id: key} of the products to take from the store: those it holds that this grid has not made
    itself (missing here, or taken before under another recipe), and those this grid took from it
    before under the same recipe, with the key they were taken under (their jobs stay those fetch
    jobs, with the same parameters, so Snakemake sees no change and reruns nothing; a code change
    keeps them, as it keeps what a grid made itself). An alignment is taken only with its set (its
    key names the set's recipe, not its bytes)."""
    out = {}
    for pid, p in products.items():
        record = Path(fetched_record(pid))
        try:
            earlier = json.loads(record.read_text())
            # a file newer than the record was made here since (Snakemake gives a fetch job's outputs one time)
            if any(Path(f).exists() and Path(f).stat().st_mtime > record.stat().st_mtime for f in p["files"].values()):
                earlier = None
        except (OSError, ValueError):
            earlier = None
        present = all(Path(f).exists() for f in p["files"].values())
        kept = earlier is not None and earlier.get("recipe") == json.loads(json.dumps(p["recipe"]))
        # (its entry must still be there: Snakemake may rerun the fetch job, -R or a newer input)
        if kept and kdgrid_store.has(STORE, p["kind"], earlier["key"]):
            out[pid] = (earlier["key"], earlier.get("code"))
            continue
        made_here = earlier is None and present
        if not made_here and kdgrid_store.has(STORE, p["kind"], p["key"]):
            out[pid] = (p["key"], p["code"])
    # an alignment only with its set, taken under the same code (so made from the same bytes)
    return {
        pid: key
        for pid, (key, code) in out.items()
        if not pid.startswith("alignment.")
        or pid == "alignment.raw"
        or out.get(f"distilled.{pid[10:]}", (0, 0))[1] == code
    }


def _storable(pid):
    """Whether the code of what a product was made from is its key's: products it was made from
    that were taken from the store under another code's key make it unstorable."""
    return all(u not in FETCH or FETCH[u] == SHARED[u]["key"] for u in SHARED[pid]["upstream"] if u in SHARED)


def upstream_logs(pid):
    """Logs of the jobs that made, here, what a product was made from (and what that was made from)."""
    logs = []
    for u in SHARED[pid]["upstream"]:
        if u in SHARED and u not in FETCH:
            logs += [log for _, _, log in SHARED[u]["made_by"]] + upstream_logs(u)
    return logs


def entry_options(pid):
    """The store, kind and key options of a product's store_fetch (the key it is taken under) or
    store_put (its key now)."""
    return f"--store {shlex.quote(STORE)} --kind {SHARED[pid]['kind']} --key {FETCH.get(pid, SHARED[pid]['key'])}"


if STORE:
    SHARED = share_products()
    FETCH = _to_fetch(SHARED)
    PUT = sorted(pid for pid in SHARED if pid not in FETCH and _storable(pid))
    SHARE_TARGETS = [f"{R}/store/put/{pid}.json" for pid in PUT]
    REUSED_RECORDS = [(fetched_record(pid), SHARED[pid]["scope"]) for pid in sorted(FETCH) if SHARED[pid]["scope"]]
    FETCH_TEACHERS = sorted(pid.split(".", 1)[1] for pid in FETCH if pid.startswith("teacher."))
    FETCH_SETS = sorted(pid.split(".", 1)[1] for pid in FETCH if pid.startswith("distilled."))
    FETCH_ALIGNMENTS = sorted(
        pid.split(".", 1)[1] for pid in FETCH if pid.startswith("alignment.") and pid != "alignment.raw"
    )
