# More test sets (corpus.files.tests: {name: split}): each is prepared from its files or sacrebleu
# set, and every teacher and every student cell is scored on it beside the primary test set. The
# primary set keeps its paths (data/test.*, <cell>/scores.json); a named set lives under tests/.


rule prepare_test_set:
    input:
        lambda w: test_set_inputs(w.testset),
    output:
        src=f"{R}/data/tests/{{testset}}.src",
        tgt=f"{R}/data/tests/{{testset}}.tgt",
    log:
        f"{R}/logs/prepare_test_set/{{testset}}.log",
    benchmark:
        f"{R}/benchmarks/prepare_test_set/{{testset}}.tsv"
    conda:
        ENV
    resources:
        mem_mb=mem_mb("prepare"),
        runtime=runtime("prepare"),
    params:
        split=lambda w: q(config["corpus"]["files"]["tests"][w.testset]),
        normalize=config["corpus"]["clean"]["normalize"],
        downloads=f"{R}/downloads",
    shell:
        "kdgrid prepare_test_set --split {params.split} --normalize {params.normalize}"
        " --download-dir {params.downloads} --src {output.src} --tgt {output.tgt} 2> {log}"


rule evaluate_teacher_test_set:
    input:
        model=f"{R}/teachers/{{teacher}}/model.pt",
        vocab=lambda w: teacher_vocab(w.teacher),
        src=f"{R}/data/tests/{{testset}}.src",
        ref=f"{R}/data/tests/{{testset}}.tgt",
    output:
        scores=f"{R}/teachers/{{teacher}}/tests/{{testset}}.scores.json",
        hyp=f"{R}/teachers/{{teacher}}/tests/{{testset}}.hyp",
    log:
        f"{R}/logs/evaluate_teacher_test_set/{{teacher}}.{{testset}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate_teacher_test_set/{{teacher}}.{{testset}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=mem_mb("evaluate_teacher"),
        runtime=runtime("evaluate_teacher"),
        gpu=0,  # GPUs per job: set by the profile (slurm/, profiles/workstation/)
    params:
        decode=lambda w: q(teacher_decode(w.teacher)),
        labels=lambda w: q({"teacher": w.teacher, "split": "test", "test_set": w.testset}),
    shell:
        "kdgrid evaluate --model {input.model} --vocab {input.vocab} --src {input.src}"
        " --ref {input.ref} --hyp {output.hyp} --scores {output.scores} --params {params.decode}"
        " --labels {params.labels} --threads {threads} --gpus {resources.gpu} 2> {log}"


rule evaluate_student_test_set:
    input:
        model=f"{R}/students/{{student}}/{{data}}/model.pt",
        vocab=VOCAB,
        src=f"{R}/data/tests/{{testset}}.src",
        ref=f"{R}/data/tests/{{testset}}.tgt",
        rescorer=student_rescorer,
    output:
        scores=f"{R}/students/{{student}}/{{data}}/tests/{{testset}}.scores.json",
        hyp=f"{R}/students/{{student}}/{{data}}/tests/{{testset}}.hyp",
    log:
        f"{R}/logs/evaluate_student_test_set/{{student}}.{{data}}.{{testset}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate_student_test_set/{{student}}.{{data}}.{{testset}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=mem_mb("evaluate_student"),
        runtime=runtime("evaluate_student"),
        gpu=0,  # GPUs per job: set by the profile (slurm/, profiles/workstation/)
    params:
        decode=lambda w: q(student_decode(w.student)),
        labels=lambda w: q({**data_labels(w.student, w.data), "test_set": w.testset}),
        rescorer=lambda w, input: f"--rescorer {input.rescorer}" if input.rescorer else "",
    shell:
        "kdgrid evaluate --model {input.model} --vocab {input.vocab} --src {input.src}"
        " --ref {input.ref} --hyp {output.hyp} --scores {output.scores} --params {params.decode}"
        " --labels {params.labels} {params.rescorer} --threads {threads} --gpus {resources.gpu}"
        " 2> {log}"
