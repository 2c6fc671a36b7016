# AT teachers: train, evaluate on valid/test, and distill the training sources (sharded).

VOCAB = f"{R}/vocab/spm.model"  # (also common.smk's teacher_vocab, read when jobs are planned)
# the grid's training pair: the filtered one with corpus.clean.filter (common.smk)
ENCODED = {"train_src": TRAIN_SRC_IDS, "train_tgt": TRAIN_TGT_IDS} | {
    f"valid_{side}": f"{R}/vocab/valid.{side}.npz" for side in SIDES
}


rule train_teacher:
    input:
        **ENCODED,
        vocab=VOCAB,
    output:
        f"{R}/teachers/{{teacher}}/model.pt",
    log:
        f"{R}/logs/train_teacher/{{teacher}}.log",
    benchmark:
        f"{R}/benchmarks/train_teacher/{{teacher}}.tsv"
    priority: 10  # the critical path: teachers, then their distilled sets
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=mem_mb("train_teacher"),
        runtime=runtime("train_teacher"),
        gpu=0,  # GPUs per job: set by the profile (slurm/, profiles/workstation/)
    params:
        kind=lambda w: teacher_kind(w.teacher),  # moe for a size that declares experts
        model=lambda w: q(teacher_model(w.teacher)),
        train=lambda w: q(teacher_train(w.teacher)),
        labels=lambda w: q({"role": "teacher", "teacher": w.teacher}),
        work=lambda w: f"{R}/teachers/{w.teacher}/train",
    shell:
        "kdgrid train --kind {params.kind} --model-params {params.model}"
        " --train-params {params.train} --labels {params.labels} --vocab {input.vocab}"
        " --train-src {input.train_src} --train-tgt {input.train_tgt}"
        " --valid-src {input.valid_src} --valid-tgt {input.valid_tgt}"
        " --out {output} --work-dir {params.work} --threads {threads} --gpus {resources.gpu} 2> {log}"


# An ensemble teacher's model file: its members' weights in one file (kdgrid.models.ensemble).
ruleorder: ensemble_teacher > train_teacher


rule ensemble_teacher:
    input:
        members=lambda w: [f"{R}/teachers/{m}/model.pt" for m in ENSEMBLES[w.teacher]],
        vocab=VOCAB,
    output:
        f"{R}/teachers/{{teacher}}/model.pt",
    log:
        f"{R}/logs/ensemble_teacher/{{teacher}}.log",
    benchmark:
        f"{R}/benchmarks/ensemble_teacher/{{teacher}}.tsv"
    wildcard_constraints:
        teacher=choice(sorted(ENSEMBLES)),
    priority: 10  # the critical path: teachers, then their distilled sets
    conda:
        ENV
    resources:
        mem_mb=mem_mb("ensemble_teacher"),
        runtime=runtime("ensemble_teacher"),
    params:
        ensemble=lambda w: q({"combine": ensemble_combine(w.teacher)}),
        labels=lambda w: q({"role": "teacher", "teacher": w.teacher}),
    shell:
        "kdgrid ensemble --members {input.members} --vocab {input.vocab} --params {params.ensemble}"
        " --labels {params.labels} --out {output} 2> {log}"


# A teacher trained elsewhere (teacher_sizes.<name>.import): its model file and its own vocabulary.
ruleorder: import_teacher > train_teacher


rule import_teacher:
    input:
        lambda w: [f for k in ("model", "dict", "spm") if isinstance(f := IMPORTS[w.teacher].get(k), str)],
    output:
        model=f"{R}/teachers/{{teacher}}/model.pt",
        vocab=f"{R}/teachers/{{teacher}}/spm.model",
    log:
        f"{R}/logs/import_teacher/{{teacher}}.log",
    benchmark:
        f"{R}/benchmarks/import_teacher/{{teacher}}.tsv"
    wildcard_constraints:
        teacher=choice(sorted(IMPORTS)),
    priority: 10  # the critical path: teachers, then their distilled sets
    conda:
        ENV
    resources:
        mem_mb=mem_mb("import_teacher"),
        runtime=runtime("import_teacher"),
    params:
        spec=lambda w: q({"teacher": w.teacher, **IMPORTS[w.teacher]}),
        labels=lambda w: q({"role": "teacher", "teacher": w.teacher}),
        downloads=f"{R}/downloads",
    shell:
        "kdgrid import_teacher --params {params.spec} --download-dir {params.downloads} --labels {params.labels}"
        " --out {output.model} --vocab-out {output.vocab} 2> {log}"


rule evaluate_teacher:
    input:
        model=f"{R}/teachers/{{teacher}}/model.pt",
        vocab=lambda w: teacher_vocab(w.teacher),
        src=[f"{R}/data/{split}.src" for split in SCORED_SPLITS],
        ref=[ref for split in SCORED_SPLITS for ref in references(split)],
    output:
        scores=[f"{R}/teachers/{{teacher}}/{split}.scores.json" for split in SCORED_SPLITS],
        hyp=[f"{R}/teachers/{{teacher}}/{split}.hyp" for split in SCORED_SPLITS],
    log:
        f"{R}/logs/evaluate_teacher/{{teacher}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate_teacher/{{teacher}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=mem_mb("evaluate_teacher"),
        runtime=runtime("evaluate_teacher"),
        gpu=0,  # GPUs per job: set by the profile (slurm/, profiles/workstation/)
    params:
        decode=lambda w: q(teacher_decode(w.teacher)),
        labels=lambda w: " ".join(q({"teacher": w.teacher, "split": split}) for split in SCORED_SPLITS),
    shell:
        "kdgrid evaluate --model {input.model} --vocab {input.vocab} --src {input.src}"
        " --ref {input.ref} --hyp {output.hyp} --scores {output.scores} --params {params.decode}"
        " --labels {params.labels} --threads {threads} --gpus {resources.gpu} 2> {log}"


rule distill:
    input:
        model=distill_model,  # the teacher, or a Born-Again AT (ban rounds >= 2)
        vocab=lambda w: VOCAB if w.method in BAN_ROUNDS else teacher_vocab(w.teacher),
        src=TRAIN_SRC,
        ref=distill_reference,  # the real targets, for methods that read them (interpolate)
    output:
        f"{R}/distill/{{teacher}}.{{method}}/shards/{{shard}}.tgt",
    log:
        f"{R}/logs/distill/{{teacher}}.{{method}}.{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/distill/{{teacher}}.{{method}}.{{shard}}.tsv"
    priority: 9  # the critical path: teachers, then their distilled sets
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=mem_mb("distill"),
        runtime=runtime("distill"),
        gpu=0,  # GPUs per job: set by the profile (slurm/, profiles/workstation/)
    params:
        method=lambda w: q(method_params(w.method, w.teacher)),
        shards=SHARDS,
        chunk=config["distill"]["chunk_sentences"],
        ref=lambda w, input: f"--ref {input.ref}" if input.ref else "",
    shell:
        "kdgrid distill --model {input.model} --vocab {input.vocab} --src {input.src} {params.ref}"
        " --out {output} --shard {wildcards.shard} --shards {params.shards} --chunk {params.chunk}"
        " --params {params.method} --threads {threads} --gpus {resources.gpu} 2> {log}"


rule gather:
    input:
        src=TRAIN_SRC,
        shards=lambda w: [f"{R}/distill/{w.teacher}.{w.method}/shards/{k}.tgt" for k in range(SHARDS)],
    output:
        f"{R}/distill/{{teacher}}.{{method}}/train.tgt",
    log:
        f"{R}/logs/gather/{{teacher}}.{{method}}.log",
    benchmark:
        f"{R}/benchmarks/gather/{{teacher}}.{{method}}.tsv"
    priority: 8  # the critical path: teachers, then their distilled sets
    conda:
        ENV
    resources:
        mem_mb=mem_mb("gather"),
        runtime=runtime("gather"),
    params:
        shards=SHARDS,
    shell:
        "kdgrid gather --src {input.src} --shards {input.shards} --count {params.shards} --out {output} 2> {log}"


# A file method's set (methods.<name>.kind: file): imported, checked against the training sources.
ruleorder: import_distilled > gather


rule import_distilled:
    input:
        src=TRAIN_SRC,
        files=lambda w: file_method_inputs(w.method),  # local paths (URLs are fetched by the verb)
    output:
        text=f"{R}/distill/{method_kinds.IMPORTED}.{{method}}/train.tgt",
        record=f"{R}/distill/{method_kinds.IMPORTED}.{{method}}/import.json",
    log:
        f"{R}/logs/import_distilled/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/import_distilled/{{method}}.tsv"
    wildcard_constraints:
        method=choice(FILE_METHODS),
    priority: 8  # the critical path: teachers, then their distilled sets
    conda:
        ENV
    resources:
        mem_mb=mem_mb("import_distilled"),
        runtime=runtime("import_distilled"),
    params:
        spec=lambda w: q(import_params(w.method)),
        downloads=f"{R}/downloads",
    shell:
        "kdgrid import_distilled --src {input.src} --params {params.spec} --download-dir {params.downloads}"
        " --out {output.text} --record {output.record} 2> {log}"


rule encode_distilled:
    input:
        vocab=VOCAB,
        text=f"{R}/distill/{{teacher}}.{{method}}/train.tgt",
    output:
        f"{R}/distill/{{teacher}}.{{method}}/train.tgt.npz",
    log:
        f"{R}/logs/encode_distilled/{{teacher}}.{{method}}.log",
    benchmark:
        f"{R}/benchmarks/encode_distilled/{{teacher}}.{{method}}.tsv"
    priority: 8  # the critical path: teachers, then their distilled sets
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=mem_mb("encode_distilled"),
        runtime=runtime("encode_distilled"),
    shell:
        "kdgrid encode --vocab {input.vocab} --input {input.text} --output {output}" " --threads {threads} 2> {log}"
