# Born-Again networks (a `ban` method's rounds >= 2; round 1 is its `from` method's column, e.g.
# <teacher>.beam): an AT of the method's size (the students' body by default, as the paper
# describes; `size: teacher` or a teacher size's name) trained on the previous round's distilled set. Its
# distillation, gather and encoding are the rules of every column (teacher.smk), which take this
# model instead of the teacher for these rounds.


rule train_ban:
    input:
        vocab=VOCAB,
        train_src=TRAIN_SRC_IDS,
        train_tgt=ban_previous,  # round r-1's distilled set, encoded
        valid_src=f"{R}/vocab/valid.src.npz",
        valid_tgt=f"{R}/vocab/valid.tgt.npz",
    output:
        f"{R}/bans/{{teacher}}.{{ban}}/model.pt",
    log:
        f"{R}/logs/train_ban/{{teacher}}.{{ban}}.log",
    benchmark:
        f"{R}/benchmarks/train_ban/{{teacher}}.{{ban}}.tsv"
    priority: 9  # the critical path: teachers, then their distilled sets
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=mem_mb("train_ban"),
        runtime=runtime("train_ban"),
        gpu=0,  # GPUs per job: set by the profile (slurm/, profiles/workstation/)
    params:
        model=lambda w: q(ban_model(w)),
        train=lambda w: q(ban_train(w)),
        labels=lambda w: q(ban_labels(w)),
        work=lambda w: f"{R}/bans/{w.teacher}.{w.ban}/train",
    shell:
        "kdgrid train --kind transformer --model-params {params.model}"
        " --train-params {params.train} --labels {params.labels} --vocab {input.vocab}"
        " --train-src {input.train_src} --train-tgt {input.train_tgt}"
        " --valid-src {input.valid_src} --valid-tgt {input.valid_tgt}"
        " --out {output} --work-dir {params.work} --threads {threads} --gpus {resources.gpu} 2> {log}"
