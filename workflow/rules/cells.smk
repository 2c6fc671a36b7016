# The student cells and their per-job parameters (no rules). A grid with `grid.seeds` trains every
# student once per seed: a "run" is a student with one seed. The run whose seed is the student's own
# training seed (student.train.seed, 1 by default) keeps the student's name, paths and jobs; any
# other seed is the run `<student>.seed<N>`, its own cell paths (students/<student>.seed<N>/...),
# so single-cell reruns, the cost table and the report treat it as any cell.


def _student_runs():
    """{run: (student, seed)} in grid order: each student's seeds (grid.seeds, else its own)."""
    runs = {}
    for name in STUDENTS:
        spec = config["students"][name]
        own = {**config["student"]["train"], **spec.get("train", {})}["seed"]
        for seed in config["grid"].get("seeds") or [own]:
            runs[name if seed == own else f"{name}.seed{seed}"] = (name, seed)
    return runs


STUDENT_RUNS = _student_runs()


wildcard_constraints:
    student=choice(STUDENT_RUNS),


def student_spec(run):
    """The students.<name> entry of a run."""
    return config["students"][STUDENT_RUNS[run][0]]


def cells():
    """The grid, one (student run, data) pair per cell; data is `raw` or `teacher.method`."""
    return [(r, d) for r in STUDENT_RUNS for d in COLUMNS]


def data_labels(run, data):
    """A cell's labels; a run with a seed of its own (`<student>.seed<N>`) also names its student
    and seed (a single-seed grid's labels, and so its jobs, stay as they were)."""
    teacher, _, method = data.partition(".")
    name, seed = STUDENT_RUNS.get(run, (run, None))  # run None: a column's own labels
    extra = {} if run == name else {"student_name": name, "seed": seed}
    return {"student": run, "data": data, "teacher": teacher if method else None, "method": method or None, **extra}


def student_train(run):
    """A student run's training options: student.train, its own train, its seed."""
    name, seed = STUDENT_RUNS[run]
    train = {**config["student"]["train"], **config["students"][name].get("train", {}), **accelerator()}
    return {**train, "seed": seed}


def student_decode(name):
    """Decoding options of a student; `rescore` travels as the rescoring model's file instead."""
    base = DECODING if student_spec(name)["kind"] == "transformer" else TORCH_DECODING
    decode = {**base, **student_spec(name).get("decode", {})}
    decode.pop("rescore", None)
    return decode


def teacher_file(name):
    """A trained teacher's model file."""
    return f"{R}/teachers/{name}/model.pt"


def cell_teacher(name, data):
    """The teacher a cell's student uses directly (init, kd, rescore): on a teacher replica's
    column (grid.teacher_seeds) the replica of the named teacher, so that a replica's cell learns
    its data and its distribution from one teacher."""
    teacher = data.partition(".")[0]
    return teacher if TEACHER_REPLICAS.get(teacher, (None, None))[0] == name else name


def student_rescorer(wildcards):
    """The teacher model that ranks a student's candidates, if its decode options name one."""
    name = student_spec(wildcards.student).get("decode", {}).get("rescore")
    return [teacher_file(cell_teacher(name, wildcards.data))] if name else []


def student_wrap(name):
    """How a student learns from a teacher (init, kd; defaults filled in): {} for a plain student."""
    return config_check.wrap_spec(student_spec(name))


def student_init_teacher(wildcards):
    """The teacher model whose weights a student starts from (students.X.init), if any."""
    init = student_wrap(wildcards.student).get("init")
    return [teacher_file(cell_teacher(init["from"], wildcards.data))] if init else []


def student_kd_teacher(wildcards):
    """The teacher model whose distribution a student learns (students.X.kd), if any."""
    kd = student_wrap(wildcards.student).get("kd")
    return [teacher_file(cell_teacher(kd["teacher"], wildcards.data))] if kd else []


def student_wrap_args(wildcards):
    """` --wrap JSON [--init-teacher FILE] [--kd-teacher FILE]` for `kdgrid train` (with its leading
    space), or "" for a plain student, whose command stays exactly as without wrappers. A
    parameter, not derived from the inputs, so that changing a wrapper option retrains the student."""
    spec = student_wrap(wildcards.student)
    if not spec:
        return ""
    args = ["--wrap", q(spec)]
    args += [a for f in student_init_teacher(wildcards) for a in ("--init-teacher", f)]
    args += [a for f in student_kd_teacher(wildcards) for a in ("--kd-teacher", f)]
    return " " + " ".join(args)


def student_targets(wildcards):
    if wildcards.data == "raw":
        return TRAIN_TGT_IDS
    return f"{R}/distill/{wildcards.data}/train.tgt.npz"
