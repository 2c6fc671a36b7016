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


sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))
import config_check  # noqa: E402
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
TEACHERS = config["grid"]["teachers"]
METHODS = config["grid"]["methods"]
STUDENTS = config["grid"]["students"]
DISTILLED = [f"{t}.{m}" for t in TEACHERS for m in METHODS]
COLUMNS = ["raw"] + DISTILLED
THREADS = config["compute"]["threads"]
SHARDS = config["distill"]["shards"]
SPLITS = ["train", "valid", "test"]
ENV = str(Path(workflow.basedir) / "envs" / "kdgrid.yaml")  # for `--sdm conda`
SIDES = ["src", "tgt"]
# teachers that rescore students' candidates (students.X.decode.rescore) are trained even when the
# grid distills with none of them
RESCORERS = sorted(
    {
        config["students"][s]["decode"]["rescore"]
        for s in STUDENTS
        if config["students"][s].get("decode", {}).get("rescore")
    }
)


def target_languages():
    """Multi-way corpora: the target languages (reference files per language); else []."""
    c = config["corpus"]
    if not c["multiway"]:
        return []
    if c["source"] == "synthetic":
        return [f"m{m}" for m in range(c["synthetic"]["modes"])]
    return list(c["files"]["train"]["tgt"])


LANGS = target_languages()


def references(split):
    """Reference files of valid/test: one per language in a multi-way corpus."""
    return [f"{R}/data/{split}.ref.{lang}" for lang in LANGS] or [f"{R}/data/{split}.tgt"]


def cells():
    """The grid, one (student, data) pair per cell; data is `raw` or `teacher.method`."""
    return [(s, d) for s in STUDENTS for d in COLUMNS]


def choice(names):
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


wildcard_constraints:
    teacher=choice(sorted({*TEACHERS, *RESCORERS})),
    method=choice(METHODS),
    student=choice(STUDENTS),
    data=choice(COLUMNS),
    shard=r"\d+",
    split="valid|test",


def q(obj):
    """A parameter object as one shell-quoted JSON word."""
    return shlex.quote(json.dumps(obj, sort_keys=True, separators=(",", ":")))


def teacher_model(name):
    size, arch = config["teacher_sizes"][name], config["teacher"]["architecture"]
    return {
        "d_model": size["d_model"],
        "ffn": size["ffn"],
        "heads": size["heads"],
        "encoder_layers": size.get("encoder_layers", size.get("layers")),
        "decoder_layers": size.get("decoder_layers", size.get("layers")),
        "dropout": size.get("dropout", arch["dropout"]),
        "attention_dropout": size.get("attention_dropout", arch["attention_dropout"]),
        "pre_norm": arch["pre_norm"],
    }


def accelerator():
    """GPU switches of the config, passed to every training job."""
    return {"bf16": str(config["compute"]["bf16"]).lower(), "compile": config["compute"]["compile"]}


def teacher_train(name):
    return {**config["teacher"]["train"], **config["teacher_sizes"][name].get("train", {}), **accelerator()}


def teacher_decode():
    return {**config["decoding"], **config["teacher"]["evaluate"]}


def method_params(name):
    return {**config["decoding"], **config["methods"][name]}


def student_train(name):
    return {**config["student"]["train"], **config["students"][name].get("train", {}), **accelerator()}


def student_decode(name):
    """Decoding options of a student; `rescore` travels as the rescoring model's file instead."""
    decode = {**config["decoding"], **config["students"][name].get("decode", {})}
    decode.pop("rescore", None)
    return decode


def student_rescorer(wildcards):
    """The teacher model that ranks a student's candidates, if its decode options name one."""
    name = config["students"][wildcards.student].get("decode", {}).get("rescore")
    return [f"{R}/teachers/{name}/model.pt"] if name else []


def metric_params():
    return {"faithfulness": config["metrics"]["faithfulness"]}


def data_labels(student, data):
    teacher, _, method = data.partition(".")
    return {"student": student, "data": data, "teacher": teacher if method else None, "method": method or None}


def corpus_inputs(wildcards):
    """Local corpus files (URLs and sacrebleu sets are fetched and checked by the verb)."""
    c = config["corpus"]
    if c["source"] != "files":
        return []
    paths = []
    for spec in c["files"].values():
        sides = [spec.get("src"), *(spec["tgt"].values() if LANGS else [spec.get("tgt")])]
        paths += [side for side in sides if isinstance(side, str)]
    return paths


def student_targets(wildcards):
    if wildcards.data == "raw":
        return f"{R}/vocab/train.tgt.npz"
    return f"{R}/distill/{wildcards.data}/train.tgt.npz"


def data_metric_files():
    return [f"{R}/data/data_metrics.json"] + [f"{R}/distill/{d}/data_metrics.json" for d in DISTILLED]


def language_files():
    if not LANGS:
        return []
    return [f"{R}/teachers/{t}/test.languages.json" for t in TEACHERS] + [
        f"{R}/students/{s}/{d}/languages.json" for s, d in cells()
    ]


def mem_mb(rule):
    """A rule's memory (compute.resources), doubled, tripled, ... on retries."""
    return per_attempt(config["compute"]["resources"][rule]["mem_mb"])


def runtime(rule):
    """A rule's time limit in minutes (compute.resources), likewise growing with the attempt."""
    return per_attempt(config["compute"]["resources"][rule]["runtime"])


def cost_jobs():
    """Every job of the grid with its benchmark file, its log and the scope its cost is charged to,
    `scope/rule[/names]`: a cell's own jobs, or, counted once, the shared jobs of a data column
    (a distilled set, or raw), of a teacher, or of the setup. Paths come from the rules themselves;
    call this after every rule is defined (report.smk)."""
    jobs = []

    def add(name, label, **wildcards):
        r = getattr(rules, name)
        jobs.append(
            (
                "/".join(label[:1] + [name] + label[1:]),
                expand(r.benchmark, **wildcards)[0],
                expand(r.log[0], **wildcards)[0],
            )
        )

    add("prepare", ["setup"])
    add("vocab", ["setup"])
    for t in dict.fromkeys([*TEACHERS, *RESCORERS]):  # rescoring teachers are trained too
        add("train_teacher", ["teacher", t], teacher=t)
    for t in TEACHERS:
        for split in ("valid", "test"):
            add("evaluate_teacher", ["teacher", t], teacher=t, split=split)
        add("align_teacher_valid", ["teacher", t], teacher=t)
        add("teacher_valid_metrics", ["teacher", t], teacher=t)
        if LANGS:
            add("language_mix_teacher", ["teacher", t], teacher=t)
    add("align_raw", ["data", "raw"])
    add("data_metrics_raw", ["data", "raw"])
    for d in DISTILLED:
        t, m = d.split(".", 1)
        for k in range(SHARDS):
            add("distill", ["data", d], teacher=t, method=m, shard=k)
        for name in ("gather", "encode_distilled", "align_distilled", "data_metrics_distilled"):
            add(name, ["data", d], teacher=t, method=m)
    for s, d in cells():
        for name in ("train_student", "evaluate_student", *(["language_mix_student"] if LANGS else [])):
            add(name, ["cell", s, d], student=s, data=d)
    return jobs


def cost_labels():
    return [label for label, _, _ in cost_jobs()]


def cost_benchmarks():
    return [benchmark for _, benchmark, _ in cost_jobs()]


def cost_logs():
    return [log for _, _, log in cost_jobs()]
