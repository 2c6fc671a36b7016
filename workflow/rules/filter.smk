# The corpus filter (a `filter:` section; workflow/filter_check.py): its own AT teacher on the
# unfiltered training data, a labelled clean/noisy set made from the data, the teacher's linear
# head on its pair embeddings, the student classifiers (labels, vanilla KD, LELP) per label set and
# seed, and their comparison table. With corpus.clean.filter, filter_apply writes the training pair
# the chosen student keeps, which the grid's teachers and students then read (common.smk).

F = f"{R}/filter"
FILTER_TEACHER = f"{F}/teacher/model.pt"
LABELLED = {
    split: [f"{F}/labelled/{split}.{part}" for part in ("src", "tgt", "labels")] for split in ("train", "valid")
}
LABELLED_INFO = f"{F}/labelled/info.json"
HEADS = {labels: f"{F}/teacher/{labels}.head.pt" for labels in FILTER["labels"]}
EMBEDDINGS = f"{F}/teacher/embeddings.npz"
TEACHER_SCORES = f"{F}/teacher/scores.json"


FILTER_STUDENTS = [
    f"{F}/students/{labels}/{classifier}.{seed}"
    for labels in FILTER["labels"]
    for classifier in FILTER["methods"]
    for seed in FILTER["seeds"]
]
FILTER_TARGETS = [f"{R}/filter.md", f"{R}/filter.csv"]


localrules:
    filter_report,


wildcard_constraints:
    classifier="labels|kd|lelp",
    label_set="few|binary",
    seed=r"\d+",


rule train_filter_teacher:
    input:
        train_src=f"{R}/vocab/train.src.npz",  # the unfiltered pair: the filter comes from this teacher
        train_tgt=f"{R}/vocab/train.tgt.npz",
        valid_src=f"{R}/vocab/valid.src.npz",
        valid_tgt=f"{R}/vocab/valid.tgt.npz",
        vocab=VOCAB,
    output:
        FILTER_TEACHER,
    log:
        f"{R}/logs/train_filter_teacher.log",
    benchmark:
        f"{R}/benchmarks/train_filter_teacher.tsv"
    priority: 10  # with corpus.clean.filter, the whole grid waits for the filter
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=mem_mb("train_filter_teacher"),
        runtime=runtime("train_filter_teacher"),
        gpu=0,  # GPUs per job: set by the profile (slurm/, profiles/workstation/)
    params:
        model=q(teacher_model(FILTER["teacher"])),
        train=q(teacher_train(FILTER["teacher"])),
        labels=q({"role": "filter_teacher", "teacher": FILTER["teacher"]}),
        work=f"{F}/teacher/train",
    shell:
        "kdgrid train --kind transformer --model-params {params.model}"
        " --train-params {params.train} --labels {params.labels} --vocab {input.vocab}"
        " --train-src {input.train_src} --train-tgt {input.train_tgt}"
        " --valid-src {input.valid_src} --valid-tgt {input.valid_tgt}"
        " --out {output} --work-dir {params.work} --threads {threads} --gpus {resources.gpu} 2> {log}"


rule filter_labels:
    input:
        train=[f"{R}/data/train.src", f"{R}/data/train.tgt"],
        valid=[f"{R}/data/valid.src", f"{R}/data/valid.tgt"],
        noise=[f"{R}/data/train.noise"] if NOISE else [],  # corpus.noise: its noisy rows are left out
    output:
        train=LABELLED["train"],
        valid=LABELLED["valid"],
        info=LABELLED_INFO,
    log:
        f"{R}/logs/filter_labels.log",
    benchmark:
        f"{R}/benchmarks/filter_labels.tsv"
    conda:
        ENV
    resources:
        mem_mb=mem_mb("filter_labels"),
        runtime=runtime("filter_labels"),
    params:
        # filter.holdout_kind: kinds left out of the training labels (valid keeps them)
        labelled=q(
            {
                **{k: FILTER[k] for k in ("kinds", "train_pairs", "valid_pairs", "seed")},
                "holdout": filter_check.holdout_kinds(FILTER),
            }
        ),
        noise=lambda w, input: f"--train-noise {input.noise}" if input.noise else "",
    shell:
        "kdgrid filter_labels --train {input.train} --valid {input.valid} {params.noise}"
        " --params {params.labelled} --train-out {output.train} --valid-out {output.valid}"
        " --info {output.info} 2> {log}"


rule filter_teacher:
    input:
        model=FILTER_TEACHER,
        vocab=VOCAB,
        train=LABELLED["train"],
        valid=LABELLED["valid"],
        info=LABELLED_INFO,
    output:
        embeddings=EMBEDDINGS,
        heads=list(HEADS.values()),
        scores=TEACHER_SCORES,
    log:
        f"{R}/logs/filter_teacher.log",
    benchmark:
        f"{R}/benchmarks/filter_teacher.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=mem_mb("filter_teacher"),
        runtime=runtime("filter_teacher"),
    params:
        teacher=q({"max_tokens": FILTER["max_tokens"], "head": FILTER["head"], "seed": FILTER["seed"]}),
        label_sets=list(HEADS),
    shell:
        "kdgrid filter_teacher --model {input.model} --vocab {input.vocab} --labelled-info {input.info}"
        " --train {input.train} --valid {input.valid} --label-sets {params.label_sets} --heads {output.heads}"
        " --embeddings {output.embeddings} --scores {output.scores} --params {params.teacher}"
        " --threads {threads} 2> {log}"


rule filter_student:
    input:
        vocab=VOCAB,
        train=LABELLED["train"],
        valid=LABELLED["valid"],
        info=LABELLED_INFO,
        head=f"{F}/teacher/{{label_set}}.head.pt",
        embeddings=EMBEDDINGS,
    output:
        model=f"{F}/students/{{label_set}}/{{classifier}}.{{seed}}/model.pt",
        scores=f"{F}/students/{{label_set}}/{{classifier}}.{{seed}}/scores.json",
    log:
        f"{R}/logs/filter_student/{{label_set}}.{{classifier}}.{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/filter_student/{{label_set}}.{{classifier}}.{{seed}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=mem_mb("filter_student"),
        runtime=runtime("filter_student"),
    params:
        # every method's options (the same object for all): the model file records them
        student=q({k: FILTER[k] for k in ("student", "train", "kd", "lelp")}),
    shell:
        "kdgrid filter_student --vocab {input.vocab} --labelled-info {input.info} --train {input.train}"
        " --valid {input.valid} --head {input.head} --embeddings {input.embeddings}"
        " --method {wildcards.classifier} --labels {wildcards.label_set} --seed {wildcards.seed}"
        " --params {params.student} --out {output.model} --scores {output.scores} --threads {threads} 2> {log}"


rule filter_report:
    input:
        teacher=TEACHER_SCORES,
        scores=[f"{d}/scores.json" for d in FILTER_STUDENTS],
        applied=[f"{R}/filtered/filter.json"] if CLEAN_FILTER else [],
    output:
        csv=report(
            f"{R}/filter.csv",
            caption="../report/filter.rst",
            category="Corpus filter",
            subcategory="Classifiers",
            labels={"file": "filter.csv", "shows": "teacher head and student classifiers: accuracy, macro F1"},
        ),
        md=report(
            f"{R}/filter.md",
            caption="../report/filter.rst",
            category="Corpus filter",
            subcategory="Classifiers",
            labels={"file": "filter.md", "shows": "the same as text, with the filter's counts"},
        ),
    log:
        f"{R}/logs/filter_report.log",
    benchmark:
        f"{R}/benchmarks/filter_report.tsv"
    conda:
        ENV
    resources:
        mem_mb=mem_mb("filter_report"),
        runtime=runtime("filter_report"),
    params:
        # noisy precision at filter.corpus_prior, for the filter's threshold and prior mode
        title=q(
            {
                "title": f"kdgrid corpus filter: {config['corpus']['name']}",
                "corpus_prior": filter_check.corpus_clean_share(FILTER),
                "threshold": CLEAN_FILTER["threshold"] if CLEAN_FILTER else 0.5,
                "prior": FILTER["prior"],
            }
        ),
        applied=lambda w, input: f"--applied {input.applied}" if input.applied else "",
    shell:
        "kdgrid filter_report --teacher-scores {input.teacher} --scores {input.scores} {params.applied}"
        " --params {params.title} --csv {output.csv} --md {output.md} 2> {log}"


if CLEAN_FILTER:
    # The filter's path, the chosen student included, is setup of the filtered grid in its cost
    # table: common.smk's COST_SCOPES, from filter_check.cost_scopes.

    rule filter_apply:
        input:
            model=f"{F}/students/{CLEAN_FILTER['labels']}/{CLEAN_FILTER['classifier']}.{CLEAN_FILTER['seed']}/model.pt",
            vocab=VOCAB,
            src=f"{R}/data/train.src",
            tgt=f"{R}/data/train.tgt",
            src_ids=f"{R}/vocab/train.src.npz",
            tgt_ids=f"{R}/vocab/train.tgt.npz",
            noise=[f"{R}/data/train.noise"] if NOISE else [],
        output:
            src=TRAIN_SRC,
            tgt=TRAIN_TGT,
            src_ids=TRAIN_SRC_IDS,
            tgt_ids=TRAIN_TGT_IDS,
            report=f"{R}/filtered/filter.json",
        log:
            f"{R}/logs/filter_apply.log",
        benchmark:
            f"{R}/benchmarks/filter_apply.tsv"
        priority: 10  # the whole grid waits for it
        conda:
            ENV
        threads: THREADS
        resources:
            mem_mb=mem_mb("filter_apply"),
            runtime=runtime("filter_apply"),
        params:
            threshold=CLEAN_FILTER["threshold"],
            # filter.prior: P(clean) corrected to the corpus prior (em: estimated on this corpus)
            prior=f"--prior {FILTER['prior']}"
            + (f" --corpus-prior {filter_check.corpus_clean_share(FILTER)}" if FILTER["prior"] == "configured" else ""),
            noise=lambda w, input: f"--train-noise {input.noise}" if input.noise else "",
        shell:
            "kdgrid filter_apply --model {input.model} --vocab {input.vocab} --train-src {input.src}"
            " --train-tgt {input.tgt} --train-src-ids {input.src_ids} --train-tgt-ids {input.tgt_ids}"
            " --threshold {params.threshold} {params.prior} {params.noise} --out-src {output.src} --out-tgt {output.tgt}"
            " --out-src-ids {output.src_ids} --out-tgt-ids {output.tgt_ids} --report {output.report}"
            " --threads {threads} 2> {log}"
