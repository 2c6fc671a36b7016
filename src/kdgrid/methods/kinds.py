"""The distillation method kinds as the config names them, torch-free: each kind's options and
defaults, which kinds read the training references, the columns a method yields, which teachers it
fits and the options its distill jobs get. The workflow (common.smk, config_check.py) plans with
this module without torch; kdgrid.methods checks and runs the jobs with the same facts.

The decoding itself lives in the other modules of kdgrid.methods (one per kind); this one shapes
the grid: a `ban` method with `rounds: R` and `from: M` (a beam-kind method of grid.methods,
default `beam`) yields the columns <name>2 .. <name>R: its round 1 IS column M (the teacher's beam
output; no second copy of it), and round r >= 2 is an AT trained on round r-1's set. A `moe`
method yields a column only for teachers whose size declares `experts`. A `file` method imports a
distilled set made elsewhere (a released one, or another grid's): one column, <IMPORTED>.<name>,
of no teacher of this grid (kdgrid.cli_teachers.cmd_import_distilled checks it against the sources).
"""

from __future__ import annotations

from kdgrid.models.configs import MIXTURE_BEST

DECODE_KINDS = ("beam", "greedy", "sample", "sample_topk")
FILE_KIND = "file"  # a distilled set imported from a file, not decoded here
IMPORTED = "imported"  # the teacher part of a file method's column name: imported.<name>
KINDS = (*DECODE_KINDS, "interpolate", "ban", "moe", FILE_KIND)
# Defaults of the section-5 kinds where a method leaves an option out (workflow/defaults.yaml's
# named methods name only their kind, so that these are the one copy).
# interpolate's beam defaults to its nbest; ban's size to the student's size (the paper's
# Born-Again round: a student-sized AT), the teacher's own only when `size: teacher` says so.
KIND_DEFAULTS = {
    "interpolate": {"nbest": 5, "lenpen": 1.0, "metric": "bleu"},
    "ban": {"rounds": 2, "from": "beam", "beam": 5, "lenpen": 1.0, "size": "student"},
    "moe": {"expert": "each", "beam": 5, "lenpen": 1.0},
}
# a moe method's `expert` besides an expert number: one column per expert, or the mixture's best
EACH_EXPERT = "each"
MIXBEST_SUFFIX = "_mixbest"  # the column of a mixture_best moe method: <name>_mixbest
# The options each section-5 kind takes; the decoding kinds take their decoder's options as before.
KIND_OPTIONS = {
    "interpolate": ("nbest", "beam", "lenpen", "metric"),
    "ban": ("rounds", "from", "size", "beam", "lenpen"),
    "moe": ("expert", "beam", "lenpen"),
    # the targets (a path or {url, sha256}), their sha256 for a path; the alignment check: the
    # released set's own sources (matched line by line to the grid's, source echo) or the sha256 of
    # the grid's training sources it was made from (data/train.src, line counts equal)
    FILE_KIND: ("tgt", "sha256", "src", "src_sha256"),
}
# options only the section-5 kinds and the file kind take (a decoding method naming one is an error)
SECTION5_OPTIONS = ("nbest", "metric", "rounds", "from", "size", "expert", "tgt", "sha256", "src", "src_sha256")
NEEDS_REFERENCE = ("interpolate",)  # kinds whose distill jobs read data/train.tgt (--ref)
WORKFLOW_OPTIONS = ("rounds", "from", "size", "teachers")  # shape the grid (columns, BAN models), not the decoding
GENERAL_OPTIONS = ("teachers",)  # options every kind takes


def job_options(kind: str) -> tuple | None:
    """The options a distill job of `kind` takes in its --params (the kind's options less those
    that shape the grid); None for the decoding kinds, whose options all go to the decoder."""
    taken = KIND_OPTIONS.get(kind)
    return None if taken is None else tuple(k for k in taken if k not in WORKFLOW_OPTIONS)


def resolved(spec: dict) -> dict:
    """A method's options with its kind's defaults filled in (decoding kinds: as written)."""
    out = {**KIND_DEFAULTS.get(spec["kind"], {}), **spec}
    if spec["kind"] == "interpolate":
        out.setdefault("beam", out["nbest"])
    return out


def columns(name: str, spec: dict, size: dict | None = None) -> list[str]:
    """The column names a method yields (for a teacher of `size`): a ban method one per round from
    2 on (round 1 is its `from` method's column); a moe method one per expert of `size` with
    `expert: each`, <name>_mixbest for `mixture_best`, else its own name; any other its own name."""
    if spec["kind"] == "ban":
        return [f"{name}{r}" for r in range(2, resolved(spec)["rounds"] + 1)]
    if spec["kind"] == "moe":
        expert = resolved(spec)["expert"]
        if expert == EACH_EXPERT:
            return [f"{name}{k}" for k in range((size or {}).get("experts", 0))]
        if expert == MIXTURE_BEST:
            return [name + MIXBEST_SUFFIX]
    return [name]


def column_expert(name: str, spec: dict, column: str):
    """The expert a moe method's column decodes with: its number (from the column name with
    `expert: each`), the method's `expert` otherwise; None for other kinds."""
    if spec["kind"] != "moe":
        return None
    expert = resolved(spec)["expert"]
    return int(column[len(name):]) if expert == EACH_EXPERT else expert


def round_column(name: str, spec: dict, r: int) -> str:
    """The column of a ban method's round r: round 1 is its `from` method's column, round r >= 2
    <name>r."""
    return resolved(spec)["from"] if r == 1 else f"{name}{r}"


def fits(spec: dict, teacher: str, size: dict) -> bool:
    """Whether a method makes a column for `teacher` (of `size`): only for the teachers it names
    under `teachers` (all when absent), and a moe method only for one with experts."""
    if spec["kind"] == FILE_KIND:  # one column of its own (imported.<name>), of no teacher
        return False
    if "teachers" in spec and teacher not in spec["teachers"]:
        return False
    return spec["kind"] != "moe" or bool(size.get("experts"))


def distill_options(spec: dict, name: str | None = None, column: str | None = None) -> dict:
    """What a distill job of the method's `column` gets: resolved options without rounds, from and
    size, so that a round's jobs do not change when the round count (or the BAN size) changes; a
    moe column's own expert number in place of `each`."""
    out = {k: v for k, v in resolved(spec).items() if k not in WORKFLOW_OPTIONS}
    if spec["kind"] == "moe" and out["expert"] == EACH_EXPERT:
        if column is None:
            raise ValueError("a moe method with expert: each needs the column to name its expert")
        out["expert"] = column_expert(name, spec, column)
    return out


STUDENT_SIZE, TEACHER_SIZE = "student", "teacher"  # a ban method's `size` besides a teacher size's name


def ban_size(spec: dict, teacher: str) -> str:
    """The size of a ban method's re-trained ATs: `student` (the default, as Zhou et al. describe
    Born-Again rounds: an AT of the students' body), the teacher's own name for `size: teacher`,
    or a named teacher size."""
    size = spec.get("size", STUDENT_SIZE)
    return teacher if size == TEACHER_SIZE else size
