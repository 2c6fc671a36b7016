# NAT (and AT) students: one model per grid cell, trained on raw or distilled targets; a student
# with init or kd (students.X) also reads its teacher's model (training wrappers, kdgrid.kd).


rule train_student:
    input:
        vocab=VOCAB,
        train_src=TRAIN_SRC_IDS,
        train_tgt=student_targets,
        valid_src=f"{R}/vocab/valid.src.npz",
        valid_tgt=f"{R}/vocab/valid.tgt.npz",
        init_teacher=student_init_teacher,  # students.X.init: the teacher it starts from, else none
        kd_teacher=student_kd_teacher,  # students.X.kd: the teacher whose distribution it learns, else none
    output:
        f"{R}/students/{{student}}/{{data}}/model.pt",
    log:
        f"{R}/logs/train_student/{{student}}.{{data}}.log",
    benchmark:
        f"{R}/benchmarks/train_student/{{student}}.{{data}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=mem_mb("train_student"),
        runtime=runtime("train_student"),
        gpu=0,  # GPUs per job: set by the profile (slurm/, profiles/workstation/)
    params:
        kind=lambda w: student_spec(w.student)["kind"],
        model=lambda w: q(student_spec(w.student)["model"]),
        train=lambda w: q(student_train(w.student)),
        labels=lambda w: q({"role": "student", **data_labels(w.student, w.data)}),
        work=lambda w: f"{R}/students/{w.student}/{w.data}/train",
        wrap=student_wrap_args,  # "" for a plain student (no space either: its command is unchanged)
    shell:
        "kdgrid train --kind {params.kind} --model-params {params.model}"
        " --train-params {params.train} --labels {params.labels} --vocab {input.vocab}"
        " --train-src {input.train_src} --train-tgt {input.train_tgt}"
        " --valid-src {input.valid_src} --valid-tgt {input.valid_tgt}"
        " --out {output} --work-dir {params.work} --threads {threads} --gpus {resources.gpu}{params.wrap} 2> {log}"


# Each cell is scored on test and on the valid split, in one job (the model loaded once): the
# answer per student picks its column on the valid scores (mean over seeds) and reports that
# column's test scores, never the best of the test scores.
rule evaluate_student:
    input:
        model=f"{R}/students/{{student}}/{{data}}/model.pt",
        vocab=VOCAB,
        src=f"{R}/data/test.src",
        ref=references("test"),
        valid_src=f"{R}/data/valid.src",
        valid_ref=references("valid"),
        rescorer=student_rescorer,
    output:
        scores=f"{R}/students/{{student}}/{{data}}/scores.json",
        hyp=f"{R}/students/{{student}}/{{data}}/test.hyp",
        valid_scores=f"{R}/students/{{student}}/{{data}}/valid.scores.json",
        valid_hyp=f"{R}/students/{{student}}/{{data}}/valid.hyp",
    log:
        f"{R}/logs/evaluate_student/{{student}}.{{data}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate_student/{{student}}.{{data}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=mem_mb("evaluate_student"),
        runtime=runtime("evaluate_student"),
        gpu=0,  # GPUs per job: set by the profile (slurm/, profiles/workstation/)
    params:
        decode=lambda w: q(student_decode(w.student)),
        labels=lambda w: q(data_labels(w.student, w.data)),
        valid_labels=lambda w: q({**data_labels(w.student, w.data), "split": "valid"}),
        rescorer=lambda w, input: f"--rescorer {input.rescorer}" if input.rescorer else "",
    shell:
        "kdgrid evaluate --model {input.model} --vocab {input.vocab} --src {input.src} {input.valid_src}"
        " --ref {input.ref} {input.valid_ref} --hyp {output.hyp} {output.valid_hyp}"
        " --scores {output.scores} {output.valid_scores} --params {params.decode}"
        " --labels {params.labels} {params.valid_labels} {params.rescorer} --threads {threads}"
        " --gpus {resources.gpu} 2> {log}"
