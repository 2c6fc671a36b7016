# AT teachers: train, evaluate on valid/test, and distill the training sources (sharded).

VOCAB = f"{R}/vocab/spm.model"
ENCODED = {f"{s}_{side}": f"{R}/vocab/{s}.{side}.npz" for s in ("train", "valid") for side in SIDES}


rule train_teacher:
    conda:
        ENV
    input:
        vocab=VOCAB,
        **ENCODED,
    output:
        f"{R}/teachers/{{teacher}}/model.pt",
    params:
        model=lambda w: q(teacher_model(w.teacher)),
        train=lambda w: q(teacher_train(w.teacher)),
        labels=lambda w: q({"role": "teacher", "teacher": w.teacher}),
        work=lambda w: f"{R}/teachers/{w.teacher}/train",
    priority: 10  # the critical path: teachers, then their distilled sets
    threads: THREADS
    resources:
        gpu=0,  # GPUs per job: set by the profile (slurm/, profiles/workstation/)
    log:
        f"{R}/logs/train_teacher/{{teacher}}.log",
    benchmark:
        f"{R}/benchmarks/train_teacher/{{teacher}}.tsv"
    shell:
        "python -m kdgrid train --kind transformer --model-params {params.model}"
        " --train-params {params.train} --labels {params.labels} --vocab {input.vocab}"
        " --train-src {input.train_src} --train-tgt {input.train_tgt}"
        " --valid-src {input.valid_src} --valid-tgt {input.valid_tgt}"
        " --out {output} --work-dir {params.work} --threads {threads} --gpus {resources.gpu} 2> {log}"


rule evaluate_teacher:
    conda:
        ENV
    input:
        model=f"{R}/teachers/{{teacher}}/model.pt",
        vocab=VOCAB,
        src=f"{R}/data/{{split}}.src",
        ref=lambda w: references(w.split),
    output:
        scores=f"{R}/teachers/{{teacher}}/{{split}}.scores.json",
        hyp=f"{R}/teachers/{{teacher}}/{{split}}.hyp",
    params:
        decode=q(teacher_decode()),
        labels=lambda w: q({"teacher": w.teacher, "split": w.split}),
    threads: THREADS
    resources:
        gpu=0,  # GPUs per job: set by the profile (slurm/, profiles/workstation/)
    log:
        f"{R}/logs/evaluate_teacher/{{teacher}}.{{split}}.log",
    shell:
        "python -m kdgrid evaluate --model {input.model} --vocab {input.vocab} --src {input.src}"
        " --ref {input.ref} --hyp {output.hyp} --scores {output.scores} --params {params.decode}"
        " --labels {params.labels} --threads {threads} --gpus {resources.gpu} 2> {log}"


rule distill:
    conda:
        ENV
    input:
        model=f"{R}/teachers/{{teacher}}/model.pt",
        vocab=VOCAB,
        src=f"{R}/data/train.src",
    output:
        f"{R}/distill/{{teacher}}.{{method}}/shards/{{shard}}.tgt",
    params:
        method=lambda w: q(method_params(w.method)),
        shards=SHARDS,
        chunk=config["distill"]["chunk_sentences"],
    priority: 9  # the critical path: teachers, then their distilled sets
    threads: THREADS
    resources:
        gpu=0,  # GPUs per job: set by the profile (slurm/, profiles/workstation/)
    log:
        f"{R}/logs/distill/{{teacher}}.{{method}}.{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/distill/{{teacher}}.{{method}}.{{shard}}.tsv"
    shell:
        "python -m kdgrid distill --model {input.model} --vocab {input.vocab} --src {input.src}"
        " --out {output} --shard {wildcards.shard} --shards {params.shards} --chunk {params.chunk}"
        " --params {params.method} --threads {threads} --gpus {resources.gpu} 2> {log}"


rule gather:
    conda:
        ENV
    input:
        src=f"{R}/data/train.src",
        shards=lambda w: [f"{R}/distill/{w.teacher}.{w.method}/shards/{k}.tgt" for k in range(SHARDS)],
    params:
        shards=SHARDS,
    output:
        f"{R}/distill/{{teacher}}.{{method}}/train.tgt",
    priority: 8  # the critical path: teachers, then their distilled sets
    log:
        f"{R}/logs/gather/{{teacher}}.{{method}}.log",
    shell:
        "python -m kdgrid gather --src {input.src} --shards {input.shards} --count {params.shards} --out {output} 2> {log}"


rule encode_distilled:
    conda:
        ENV
    input:
        vocab=VOCAB,
        text=f"{R}/distill/{{teacher}}.{{method}}/train.tgt",
    output:
        f"{R}/distill/{{teacher}}.{{method}}/train.tgt.npz",
    priority: 8  # the critical path: teachers, then their distilled sets
    threads: THREADS
    log:
        f"{R}/logs/encode_distilled/{{teacher}}.{{method}}.log",
    shell:
        "python -m kdgrid encode --vocab {input.vocab} --input {input.text} --output {output}"
        " --threads {threads} 2> {log}"
