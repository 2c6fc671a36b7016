# The section-5 methods' per-job parameters (no rules): a Born-Again round's previous set, AT size,
# model and training (ban.smk), and what each section-5 column is, for grid.md (report.smk).
# Shapes and defaults come from kdgrid.methods.kinds (imported by common.smk as method_kinds).


def ban_previous(wildcards):
    """The encoded distilled set of the round before a ban round: what its AT is trained on (for
    round 2, the set of the method's `from` method, e.g. <teacher>.beam)."""
    method, r = METHOD_OF[wildcards.ban]
    previous = method_kinds.round_column(method, config["methods"][method], r - 1)
    return f"{R}/distill/{wildcards.teacher}.{previous}/train.tgt.npz"


def ban_size(wildcards):
    """The size of a ban round's AT: `student` (the default), or a teacher size's name."""
    return method_kinds.ban_size(config["methods"][METHOD_OF[wildcards.ban][0]], wildcards.teacher)


def ban_model(wildcards):
    """A Born-Again AT: a plain Transformer of the students' body (the first grid student's model;
    the students of a grid share one body) or of a teacher size (an MoE size's experts aside)."""
    size = ban_size(wildcards)
    if size != method_kinds.STUDENT_SIZE:
        return {k: v for k, v in teacher_model(size).items() if k not in ("experts", "prior")}
    body, arch = config["students"][STUDENTS[0]]["model"], config["teacher"]["architecture"]
    keys = ("d_model", "ffn", "heads", "dropout", "attention_dropout", "pre_norm")
    return {
        **{k: body.get(k, arch.get(k)) for k in keys},
        **{f"{side}_layers": body.get(f"{side}_layers", body.get("layers")) for side in ("encoder", "decoder")},
    }


def ban_train(wildcards):
    size = ban_size(wildcards)
    return {**config["teacher"]["train"], **accelerator()} if size == method_kinds.STUDENT_SIZE else teacher_train(size)


def ban_labels(wildcards):
    method, r = METHOD_OF[wildcards.ban]
    return {"role": "ban", "teacher": wildcards.teacher, "method": method, "round": r, "size": ban_size(wildcards)}


def columns_info():
    """What each section-5 column is, for grid.md: a moe column's expert, a ban round's AT size, and
    the plain decoding columns of an MoE teacher (they decode with the prior's expert)."""
    out = {}
    for column, (method, r) in COLUMN_METHODS.items():
        if column not in REPORT_COLUMNS:  # a teacher replica's column (grid.teacher_seeds): folded into its teacher's
            continue
        teacher, name = column.split(".", 1)
        spec = config["methods"][method]
        about = {"teacher": teacher, "method": method, "kind": spec["kind"]}
        if spec["kind"] == "moe":
            out[column] = {**about, "expert": method_kinds.column_expert(method, spec, name)}
        elif spec["kind"] == "ban":
            out[column] = {**about, "round": r, "size": method_kinds.ban_size(spec, teacher)}
        elif spec["kind"] in method_kinds.DECODE_KINDS and teacher_kind(teacher) == "moe":
            out[column] = {**about, "expert": "prior"}
    return out


def file_method_inputs(method):
    """A file method's local files (its tgt and src where they are paths)."""
    spec = config["methods"][method]
    return [side for side in (spec.get("tgt"), spec.get("src")) if isinstance(side, str)]


def import_params(method):
    """What import_distilled checks and reads: the method's file options and the corpus's
    normalization (the released lines are normalized as the grid's own were)."""
    spec = config["methods"][method]
    keep = method_kinds.KIND_OPTIONS[method_kinds.FILE_KIND]
    return {
        "method": method,
        "normalize": config["corpus"]["clean"]["normalize"],
        **{k: spec[k] for k in keep if k in spec},
    }
