"""Distillation method kinds as the workflow sees them (plain Python, no Snakemake, no torch;
imported by common.smk and config_check.py): the defaults of the section-5 kinds, the columns a
method yields, which teachers it fits, and the options its distill jobs get.

The decoding itself lives in src/kdgrid/methods/ (one module per kind); this file only shapes
the grid: a `ban` method with `rounds: R` and `from: M` (a beam-kind method of grid.methods,
default `beam`) yields the columns <name>2 .. <name>R: its round 1 IS column M (the teacher's beam
output; no second copy of it), and round r >= 2 is an AT trained on round r-1's set. A `moe`
method yields a column only for teachers whose size declares `experts`.
"""

from __future__ import annotations

DECODE_KINDS = ("beam", "greedy", "sample", "sample_topk")
KINDS = (*DECODE_KINDS, "interpolate", "ban", "moe")
# Defaults of the section-5 kinds where a method leaves an option out (workflow/defaults.yaml's
# named methods spell the same values out; tests/test_config.py keeps the two in step).
# interpolate's beam defaults to its nbest; ban's size to the student's size (the paper's
# Born-Again round: a student-sized AT), the teacher's own only when `size: teacher` says so.
KIND_DEFAULTS = {
    "interpolate": {"nbest": 5, "lenpen": 1.0, "metric": "bleu"},
    "ban": {"rounds": 2, "from": "beam", "beam": 5, "lenpen": 1.0, "size": "student"},
    "moe": {"expert": "each", "beam": 5, "lenpen": 1.0},
}
EACH_EXPERT, MIXTURE_BEST = "each", "mixture_best"  # a moe method's `expert` besides an expert number
MIXBEST_SUFFIX = "_mixbest"  # the column of a mixture_best moe method: <name>_mixbest
# The options each section-5 kind takes; the decoding kinds take their decoder's options as before.
KIND_OPTIONS = {
    "interpolate": ("nbest", "beam", "lenpen", "metric"),
    "ban": ("rounds", "from", "size", "beam", "lenpen"),
    "moe": ("expert", "beam", "lenpen"),
}
SECTION5_OPTIONS = ("nbest", "metric", "rounds", "from", "size", "expert")
NEEDS_REFERENCE = ("interpolate",)  # kinds whose distill jobs read data/train.tgt (--ref)
WORKFLOW_OPTIONS = ("rounds", "from", "size", "teachers")  # shape the grid (columns, BAN models), not the decoding
GENERAL_OPTIONS = ("teachers",)  # options every kind takes


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


# The AT decoding backend (config decoding.backend / compute_type / ct2_search, kdgrid.ct2) and
# its defaults.
BACKEND_DEFAULTS = {"backend": "torch", "compute_type": "default", "ct2_search": "exact"}


def decoding(options: dict, autoregressive: bool = True) -> dict:
    """Config `decoding` as the verbs' --params take it: the backend keys only where they differ
    from their defaults (a grid finished before the CTranslate2 backend keeps its jobs), only for
    the models CTranslate2 decodes (a NAT's or the MoE teacher's jobs ignore the backend), and
    CTranslate2's own keys only when it is the backend."""
    ct2 = autoregressive and options.get("backend", BACKEND_DEFAULTS["backend"]) == "ctranslate2"
    keep = lambda k, v: ct2 and BACKEND_DEFAULTS[k] != v if k in BACKEND_DEFAULTS else True  # noqa: E731
    return {k: v for k, v in options.items() if keep(k, v)}
