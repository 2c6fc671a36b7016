"""The corpus filter's config: its defaults and the cross-key rules the schema cannot say.

Three optional keys, absent from workflow/defaults.yaml on purpose (their presence is the switch,
and a config without them must plan byte-identical jobs): `filter` (the classifier comparison:
filter teacher, labelled set, teacher head, student classifiers), `corpus.clean.filter` (drop the
training pairs a chosen student rejects) and `corpus.noise` (inject noise into train). Their
defaults live here and are filled in by `filter_spec` / `noise_spec`, as wrap_spec does for students.
The reasons for the defaults of filter.prior, filter.corpus_prior and filter.holdout_kind are in
workflow/defaults.yaml's comment on the `filter:` section.
"""

from __future__ import annotations

import copy

FILTER_DEFAULTS = {
    "kinds": {"clean": 0.5, "misaligned": 0.125, "truncated": 0.125, "copy": 0.125, "shuffled": 0.125},
    "train_pairs": 4000,  # sampled from train (its injected-noise rows left out) and labelled
    "valid_pairs": 1000,  # sampled from valid and labelled: where every classifier is scored
    "seed": 1,  # the labelled sets' sample and noise
    "seeds": [1, 2, 3],  # one student per seed: mean ± std in filter.md
    "methods": ["labels", "kd", "lelp"],
    "labels": ["few", "binary"],
    "max_tokens": 4096,  # the teacher's embedding batches
    "head": {"steps": 300, "lr": 0.05, "weight_decay": 0.0001},
    "student": {"d_model": 64, "ffn": 128, "layers": 2, "heads": 4, "dropout": 0.1, "max_side": 128},
    "train": {"steps": 300, "lr": 0.001, "weight_decay": 0.0, "max_tokens": 2048},
    "kd": {"temperature": 2.0, "alpha": 1.0},
    "lelp": {"S": 4, "temperature": 1.0, "class_temperature": 1.0, "rotate": True, "null_space": True,
             "normalize": True, "group_by": "teacher"},
    "prior": "configured",  # P(clean) corrected to the corpus prior: configured | em (estimated on the corpus) | none
    "corpus_prior": 0.8,  # the corpus's clean share: `configured` uses it, filter.md's precision is at it
    "holdout_kind": "shuffled",  # noise kind(s) left out of the labelled training set (null: none)
}
CLEAN_FILTER_DEFAULTS = {"labels": "few", "seed": 1, "threshold": 0.5}
NOISE_DEFAULTS = {"share": 0.2, "kinds": {"misaligned": 0.25, "truncated": 0.25, "copy": 0.25, "shuffled": 0.25},
                  "seed": 1}
SECTIONS = ("head", "student", "train", "kd", "lelp")


def filter_spec(c: dict) -> dict | None:
    """The `filter` section with every default filled in; None without one."""
    spec = c.get("filter")
    if spec is None:
        return None
    out = copy.deepcopy(FILTER_DEFAULTS)
    for key, value in spec.items():
        out[key] = {**out[key], **value} if key in SECTIONS else value
    return out


def holdout_kinds(spec: dict) -> list[str]:
    """filter.holdout_kind as a list (null: [])."""
    kind = spec["holdout_kind"]
    return [] if kind is None else [kind] if isinstance(kind, str) else list(kind)


def corpus_clean_share(spec: dict) -> float:
    """filter.corpus_prior as the clean share (a number, or {clean: share})."""
    value = spec["corpus_prior"]
    return float(value["clean"] if isinstance(value, dict) else value)


def clean_filter_spec(c: dict) -> dict | None:
    """corpus.clean.filter with its defaults; None without one."""
    spec = c["corpus"].get("clean", {}).get("filter")
    return None if spec is None else {**CLEAN_FILTER_DEFAULTS, **spec}


def noise_spec(c: dict) -> dict | None:
    spec = c["corpus"].get("noise")
    return None if spec is None else {**NOISE_DEFAULTS, **spec}


# The filter every cell trains behind (corpus.clean.filter) is setup of the grid, like the corpus
# and the vocabulary: its jobs are charged to the cost table's setup row (costs.smk: COST_SCOPES).
# Of the student classifiers compared, only the chosen one gates the grid: the others are the
# comparison's, and aggregate does not wait for them (they may not have run yet).
GATING_RULES = ("train_filter_teacher", "filter_labels", "filter_teacher", "filter_student", "filter_apply")


def cost_scopes(clean: dict | None) -> dict[str, str]:
    """{rule: cost scope} of the filter's jobs the grid is charged for; none without clean.filter."""
    return {} if clean is None else dict.fromkeys(GATING_RULES, "setup")


def cost_wildcards(clean: dict | None) -> dict[str, dict[str, str]]:
    """{rule: {wildcard: value}}: filter_student's jobs count only for the chosen student
    (filter.smk's wildcards label_set, classifier, seed)."""
    if clean is None:
        return {}
    return {"filter_student": {"label_set": clean["labels"], "classifier": clean["classifier"],
                               "seed": str(clean["seed"])}}


def _shares(kinds: dict, where: str) -> list[str]:
    total = sum(kinds.values())
    if abs(total - 1.0) > 1e-6:
        listed = ", ".join(f"{k} {v:g}" for k, v in kinds.items())
        return [f"{where}: the shares must sum to 1, got {total:g} ({listed})"]
    return []


def problems(c: dict) -> list[str]:
    """Every filter problem, each naming its key."""
    out = []
    spec, clean, noise = filter_spec(c), clean_filter_spec(c), noise_spec(c)
    if noise is not None:
        out += _shares(noise["kinds"], "corpus.noise.kinds")
        if "wrong_language" in noise["kinds"] and not c["corpus"].get("multiway"):
            out.append("corpus.noise.kinds.wrong_language: needs a multi-way corpus (corpus.multiway: true)")
    if clean is not None and spec is None:
        out.append("corpus.clean.filter: needs a `filter:` section (its teacher, labelled set and student "
                   "classifiers); add one, e.g. filter: {teacher: <teacher size>}")
    if spec is None:
        return out
    sizes = c["teacher_sizes"]
    teacher = spec["teacher"]
    if teacher not in sizes:
        out.append(f"filter.teacher: {teacher!r} is not defined under teacher_sizes "
                   f"(defined: {', '.join(sorted(sizes))})")
    elif "experts" in sizes[teacher]:
        out.append(f"filter.teacher: {teacher!r} is a mixture-of-experts size; the filter embeds pairs "
                   "with a plain AT Transformer: pick a size without experts")
    kinds = spec["kinds"]
    out += _shares(kinds, "filter.kinds")
    if kinds.get("clean", 0) <= 0 or len([k for k, v in kinds.items() if v > 0]) < 2:
        out.append("filter.kinds: needs a clean share and at least one noise kind above 0")
    if kinds.get("wrong_language"):  # its label needs each row's language, which filter_labels does not read
        out.append("filter.kinds.wrong_language: not supported by the filter's labelled set yet "
                   "(corpus.noise can inject it in a multi-way corpus); drop it")
    held = holdout_kinds(spec)
    default = "" if "holdout_kind" in c["filter"] else " (the default)"
    for kind in held:
        if kinds.get(kind, 0) <= 0:
            out.append(f"filter.holdout_kind: {kind!r}{default} has no share in filter.kinds; hold out one of "
                       f"{', '.join(k for k, v in kinds.items() if v > 0 and k != 'clean')} or set it to null")
    if held and not [k for k, v in kinds.items() if v > 0 and k != "clean" and k not in held]:
        out.append("filter.holdout_kind: holds out every noise kind of filter.kinds; the classifiers need "
                   "at least one to learn from")
    student = spec["student"]
    if student["d_model"] % student["heads"]:
        out.append(f"filter.student.heads: d_model {student['d_model']} is not divisible by heads {student['heads']}")
    if teacher in sizes and "d_model" in sizes[teacher] and spec["lelp"]["S"] > 2 * sizes[teacher]["d_model"]:
        out.append(f"filter.lelp.S: {spec['lelp']['S']} subclasses but the teacher's pair embedding has "
                   f"{2 * sizes[teacher]['d_model']} dimensions; use at most that many")
    if clean is not None:
        for key, listed in (("classifier", "methods"), ("labels", "labels"), ("seed", "seeds")):
            if clean[key] not in spec[listed]:
                out.append(f"corpus.clean.filter.{key}: {clean[key]!r} is not in filter.{listed} "
                           f"({', '.join(map(str, spec[listed]))}); the filter uses one of the students compared")
    return out
