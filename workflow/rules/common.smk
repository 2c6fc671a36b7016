# Validation, the grid's cells, and the per-cell parameters every rule passes to its verb.
import json
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))
import config_check  # noqa: E402

CONFIG_SOURCES = ["workflow/defaults.yaml"] + (
    [str(p) for p in workflow.config_settings.configfiles] or ["config.yaml"]
)
try:
    config_check.check(
        config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml", CONFIG_SOURCES
    )
except config_check.ConfigError as e:
    raise WorkflowError(str(e)) from None

R = "results/" + config["corpus"]["name"]
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
RESCORERS = sorted({config["students"][s]["decode"]["rescore"] for s in STUDENTS
                    if config["students"][s].get("decode", {}).get("rescore")})


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
        "d_model": size["d_model"], "ffn": size["ffn"], "heads": size["heads"],
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
    return {**config["teacher"]["train"], **config["teacher_sizes"][name].get("train", {}),
            **accelerator()}


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
    return {"student": student, "data": data, "teacher": teacher if method else None,
            "method": method or None}
