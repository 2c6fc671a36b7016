# Validation, the grid's cells, and the per-cell parameters every rule passes to its verb.
import json
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod


# The rules call `kdgrid VERB ...`, a shell function that runs `python -m kdgrid` with the
# interpreter Snakemake itself runs in, so `.venv/bin/snakemake` works without an activated venv
# (under `--sdm conda`: the job environment's python). Jobs import kdgrid from this checkout even
# in environments that lack it (`--sdm conda` builds envs/kdgrid.yaml without the package, and
# clears PYTHONPATH, which a prefix survives).
def _braces(text):
    return text.replace("{", "{{").replace("}", "}}")


_conda = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
_python = "python" if _conda else _braces(shlex.quote(sys.executable))
_src = _braces(shlex.quote(os.path.join(workflow.basedir, "src")))
# A custom prefix replaces Snakemake's own `set -euo pipefail`: keep it.
shell.prefix(
    f"set -euo pipefail; export PYTHONPATH={_src}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    f'kdgrid() {{{{ {_python} -m kdgrid "$@"; }}}}; '
)


# Planning imports the workflow's checks and kdgrid's torch-free modules (the method kinds, the
# decoding backend's keys) from this checkout, as the jobs do, whether or not this Snakemake's
# Python has kdgrid installed.
sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
import config_check  # noqa: E402
import filter_check  # noqa: E402
import teacher_check  # noqa: E402
from kdgrid import decoding_backend  # noqa: E402
from kdgrid.methods import kinds as method_kinds  # noqa: E402
from resources import per_attempt  # noqa: E402

CONFIG_SOURCES = [
    "workflow/defaults.yaml",
    *([str(p) for p in workflow.config_settings.configfiles] or ["config.yaml"]),
]


def prepared_train_sentences():
    """Training sentences of an already prepared corpus (its stats.json), else None."""
    stats = Path("results", str(config.get("corpus", {}).get("name", "")), "data", "stats.json")
    try:
        return int(json.loads(stats.read_text())["splits"]["train"]["kept"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


try:
    config_check.check(
        config,
        Path(workflow.basedir) / "workflow/schemas/config.schema.yaml",
        CONFIG_SOURCES,
        prepared_train_sentences(),
    )
except config_check.ConfigError as e:
    raise WorkflowError(str(e)) from None

R = f"results/{config['corpus']['name']}"


def _teacher_replicas():
    """grid.teacher_seeds: {replica: (teacher, seed)} for each grid teacher's seeds other than its
    own (the run with its own seed keeps its name). A replica `<t>-seed<N>` is a teacher size of its
    own, t's with train.seed N, so its training, distilled sets, alignments and student cells are
    any teacher's jobs; the report folds its columns into t's (COLUMN_REPLICAS)."""
    out = {}
    for t in config["grid"]["teachers"]:
        own = {**config["teacher"]["train"], **config["teacher_sizes"][t].get("train", {})}.get("seed", 1)
        for seed in config["grid"].get("teacher_seeds") or []:
            if seed != own:
                out[f"{t}-seed{seed}"] = (t, seed)
    return out


TEACHER_REPLICAS = _teacher_replicas()
for _replica, (_teacher, _seed) in TEACHER_REPLICAS.items():
    _size = config["teacher_sizes"][_teacher]
    config["teacher_sizes"][_replica] = {**_size, "train": {**_size.get("train", {}), "seed": _seed}}
TEACHERS = [
    name
    for t in config["grid"]["teachers"]
    for name in [t, *(r for r, (base, _) in TEACHER_REPLICAS.items() if base == t)]
]
METHODS = config["grid"]["methods"]
FILE_METHODS = [m for m in METHODS if config["methods"][m]["kind"] == method_kinds.FILE_KIND]
IMPORTED_TEACHER = [method_kinds.IMPORTED] if FILE_METHODS else []  # the teacher part of their columns
STUDENTS = config["grid"]["students"]
DECODING = decoding_backend.verb_params(config["decoding"])  # every AT decode's options (backend: kdgrid.ct2)
TORCH_DECODING = decoding_backend.verb_params(config["decoding"], autoregressive=False)  # NATs', MoE's


def method_columns():
    """{column: (method, round)} of every distilled column `teacher.column`, in grid order: a
    method yields its own name (round None); a ban method one column per round from 2 on, <name>2
    .. <name>R (its round 1 is the column of its `from` method); a moe method only for teachers
    whose size declares experts; a method with `teachers:` only for those (kdgrid.methods.kinds)."""
    out = {}
    for t in TEACHERS:
        for m in METHODS:
            spec = config["methods"][m]
            # a replica (grid.teacher_seeds) makes the columns its teacher makes
            if not method_kinds.fits(spec, TEACHER_REPLICAS.get(t, (t, None))[0], config["teacher_sizes"][t]):
                continue
            cols = method_kinds.columns(m, spec, config["teacher_sizes"][t])
            for r, c in enumerate(cols, 2):  # a ban method's columns are its rounds 2 .. R
                out[f"{t}.{c}"] = (m, r if spec["kind"] == "ban" else None)
    for m in FILE_METHODS:  # an imported set: one column of no teacher of this grid
        out[f"{method_kinds.IMPORTED}.{m}"] = (m, None)
    return out


# The corpus filter (filter_check.py, filter.smk). The one switch: with corpus.clean.filter every grid
# job reads the pair filter_apply kept (filtered/); the vocabulary and the filter's own teacher stay on
# the unfiltered data (the cycle broken). Without it: today's paths, every command unchanged.
FILTER = filter_check.filter_spec(config)
CLEAN_FILTER = filter_check.clean_filter_spec(config)
NOISE = filter_check.noise_spec(config)
_TRAIN_DIR = f"{R}/filtered" if CLEAN_FILTER else f"{R}/data"
_TRAIN_IDS_DIR = f"{R}/filtered" if CLEAN_FILTER else f"{R}/vocab"
TRAIN_SRC, TRAIN_TGT = f"{_TRAIN_DIR}/train.src", f"{_TRAIN_DIR}/train.tgt"
TRAIN_SRC_IDS, TRAIN_TGT_IDS = f"{_TRAIN_IDS_DIR}/train.src.npz", f"{_TRAIN_IDS_DIR}/train.tgt.npz"


def prepare_params():
    """The corpus block for `kdgrid prepare`: without clean.filter (filter_apply's, after the vocabulary:
    changing it must not prepare the corpus again); corpus.noise with its defaults filled in."""
    corpus = {**config["corpus"], "clean": {k: v for k, v in config["corpus"]["clean"].items() if k != "filter"}}
    corpus.pop("test_name", None)  # more test sets (and their name) are prepare_test_set's: adding one
    if "files" in corpus:  # prepares nothing again
        corpus["files"] = {k: v for k, v in corpus["files"].items() if k != "tests"}
    if NOISE:
        corpus["noise"] = NOISE
    return corpus


COLUMN_METHODS = method_columns()
DISTILLED = list(COLUMN_METHODS)
COLUMNS = ["raw"] + DISTILLED


def _column_replicas():
    """{column: [report column, teacher seed]} of every column of a teacher with replicas (its own
    columns included), e.g. cpu_s-seed2.beam -> [cpu_s.beam, 2]; empty without grid.teacher_seeds."""
    out = {}
    for column in DISTILLED:
        teacher, _, rest = column.partition(".")
        base, seed = TEACHER_REPLICAS.get(teacher, (teacher, None))
        if seed is not None or any(b == teacher for b, _ in TEACHER_REPLICAS.values()):
            own = {**config["teacher"]["train"], **config["teacher_sizes"][base].get("train", {})}.get("seed", 1)
            out[column] = [f"{base}.{rest}", own if seed is None else seed]
    return out


COLUMN_REPLICAS = _column_replicas()
REPORT_COLUMNS = [c for c in COLUMNS if COLUMN_REPLICAS.get(c, [c])[0] == c]  # the grid's columns
METHOD_OF = {d.split(".", 1)[1]: mr for d, mr in COLUMN_METHODS.items()}  # column -> (method, round)
BAN_ROUNDS = sorted(c for c, (_, r) in METHOD_OF.items() if r)  # columns a re-trained AT makes (rounds >= 2)
THREADS = config["compute"]["threads"]
SHARDS = config["distill"]["shards"]
SPLITS = ["train", "valid", "test"]
SCORED_SPLITS = ["valid", "test"]  # what evaluate_teacher scores a teacher on, in one job
ENV = str(Path(workflow.basedir) / "envs" / "kdgrid.yaml")  # for `--sdm conda`
SIDES = ["src", "tgt"]


def student_teachers():
    """Teachers that students use directly, trained even when the grid distills with none of them:
    rescorers of students' candidates (students.X.decode.rescore), and the teachers students start
    from or learn the distribution of (students.X.init.from, students.X.kd.teacher)."""
    names = set()
    for s in STUDENTS:
        student = config["students"][s]
        names.update(filter(None, [student.get("decode", {}).get("rescore")]))
        names.update(config_check.wrap_teachers(student))
    return sorted(names)


STUDENT_TEACHERS = student_teachers()
# Ensemble teachers (teacher_sizes.<name>.ensemble): made from their members' model files, not
# trained; members outside grid.teachers are trained all the same (not evaluated, no columns).
ENSEMBLES = {t: m for t, m in teacher_check.ensembles(config).items() if t in TEACHERS}
ENSEMBLE_MEMBERS = [m for m in teacher_check.trained(TEACHERS, config) if m not in TEACHERS]
# Teachers trained elsewhere (teacher_sizes.<name>.import): imported with their own vocabulary.
IMPORTS = {t: s for t, s in teacher_check.imports(config).items() if t in TEACHERS}


def target_languages():
    """Multi-way corpora: the target languages (reference files per language); else []."""
    c = config["corpus"]
    if not c["multiway"]:
        return []
    if c["source"] == "synthetic":
        return [f"m{m}" for m in range(c["synthetic"]["modes"])]
    return list(c["files"]["train"]["tgt"])


LANGS = target_languages()
# corpus.files.tests: the named test sets beside the primary one (workflow/rules/test_sets.smk)
TEST_SETS = list(config["corpus"].get("files", {}).get("tests", {})) if config["corpus"]["source"] == "files" else []
TEST_NAME = config["corpus"]["test_name"]  # what the report calls the primary test set


def test_set_inputs(name):
    """Local files of a named test set (URLs and sacrebleu sets are fetched by the verb)."""
    spec = config["corpus"]["files"]["tests"][name]
    return [side for side in (spec.get("src"), spec.get("tgt")) if isinstance(side, str)]


def references(split):
    """Reference files of valid/test: one per language in a multi-way corpus."""
    return [f"{R}/data/{split}.ref.{lang}" for lang in LANGS] or [f"{R}/data/{split}.tgt"]


def choice(names):
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


wildcard_constraints:
    teacher=choice(sorted({*TEACHERS, *STUDENT_TEACHERS, *ENSEMBLE_MEMBERS, *IMPORTED_TEACHER})),
    method=choice(sorted(METHOD_OF)),
    ban=choice(BAN_ROUNDS),
    data=choice(COLUMNS),
    shard=r"\d+",
    testset=choice(TEST_SETS),


def q(obj):
    """A parameter object as one shell-quoted JSON word."""
    return shlex.quote(json.dumps(obj, sort_keys=True, separators=(",", ":")))


def teacher_model(name):
    size, arch = config["teacher_sizes"][name], config["teacher"]["architecture"]
    if name in ENSEMBLES:  # what grid.md's teacher table shows for it
        return {"ensemble": ENSEMBLES[name], "combine": ensemble_combine(name)}
    if name in IMPORTS:
        model = IMPORTS[name]["model"]
        return {"imported": model if isinstance(model, str) else model["url"]}
    return {
        "d_model": size["d_model"],
        "ffn": size["ffn"],
        "heads": size["heads"],
        "encoder_layers": size.get("encoder_layers", size.get("layers")),
        "decoder_layers": size.get("decoder_layers", size.get("layers")),
        "dropout": size.get("dropout", arch["dropout"]),
        "attention_dropout": size.get("attention_dropout", arch["attention_dropout"]),
        "pre_norm": arch["pre_norm"],
        # a mixture-of-experts teacher (model kind moe): K experts and their prior
        **({"experts": size["experts"], "prior": size.get("expert_prior", "uniform")} if "experts" in size else {}),
    }


def teacher_kind(name):
    """The model kind of a teacher size: moe where it declares experts, ensemble where it joins
    other sizes, else transformer."""
    if name in ENSEMBLES:
        return "ensemble"
    return "moe" if "experts" in config["teacher_sizes"][name] else "transformer"


def ensemble_combine(name):
    return config["teacher_sizes"][name].get("combine", "logprob_mean")


def teacher_vocab(name):
    """The vocabulary a teacher decodes with: an imported one's own, written beside its model file;
    the grid's otherwise."""
    return f"{R}/teachers/{name}/spm.model" if name in IMPORTS else VOCAB


def torch_only(name):
    """Teachers CTranslate2 cannot run (an MoE's expert start tokens, an ensemble's members)."""
    return teacher_kind(name) in ("moe", "ensemble")


def accelerator():
    """GPU switches of the config, passed to every training job."""
    return {"bf16": str(config["compute"]["bf16"]).lower(), "compile": config["compute"]["compile"]}


def teacher_train(name):
    return {**config["teacher"]["train"], **config["teacher_sizes"][name].get("train", {}), **accelerator()}


def teacher_decode(name=None):
    """A teacher's evaluation decoding; an MoE teacher's with the prior's expert (kdgrid.models.moe:
    per sentence p(k|x)'s argmax, expert 0 under a uniform prior), as its beam column distills."""
    torch_ = name is not None and torch_only(name)
    return {**(TORCH_DECODING if torch_ else DECODING), **config["teacher"]["evaluate"]}


def method_params(column, teacher=None):
    """A distilled column's decoding options: its method's, with the kind's defaults; a ban round's
    without rounds, from and size, so its jobs do not change with the round count. An ensemble
    teacher's with torch."""
    method = METHOD_OF[column][0]
    spec = config["methods"][method]
    ban_round = METHOD_OF[column][1] is not None  # a Born-Again AT decodes, not the teacher
    # (an MoE teacher's plain columns keep the backend key: their jobs, and files, stay as they were)
    ensemble = teacher is not None and not ban_round and teacher_kind(teacher) == "ensemble"
    torch_ = spec["kind"] == "moe" or ensemble
    return {
        **(TORCH_DECODING if torch_ else DECODING),
        **method_kinds.distill_options(spec, method, column),
    }


def distill_model(wildcards):
    """The model that translates a column: the teacher, or in a ban round (r >= 2) the AT trained
    on round r-1's set."""
    if wildcards.method in BAN_ROUNDS:
        return f"{R}/bans/{wildcards.teacher}.{wildcards.method}/model.pt"
    return f"{R}/teachers/{wildcards.teacher}/model.pt"


def distill_reference(wildcards):
    """The real training targets, for methods that pick candidates by them (interpolate)."""
    kind = config["methods"][METHOD_OF[wildcards.method][0]]["kind"]
    return [TRAIN_TGT] if kind in method_kinds.NEEDS_REFERENCE else []


def metric_params():
    return {"faithfulness": config["metrics"]["faithfulness"]}


def corpus_inputs(wildcards):
    """Local corpus files (URLs and sacrebleu sets are fetched and checked by the verb)."""
    c = config["corpus"]
    if c["source"] != "files":
        return []
    paths = []
    for split, spec in c["files"].items():
        if split == "tests":  # prepare_test_set's
            continue
        sides = [spec.get("src"), *(spec["tgt"].values() if LANGS else [spec.get("tgt")])]
        paths += [side for side in sides if isinstance(side, str)]
    return paths


def data_metric_files():
    return [f"{R}/data/data_metrics.json"] + [f"{R}/distill/{d}/data_metrics.json" for d in DISTILLED]


def language_files():
    if not LANGS:
        return []
    return [f"{R}/teachers/{t}/test.languages.json" for t in TEACHERS] + [
        f"{R}/students/{s}/{d}/languages.json" for s, d in cells()
    ]
