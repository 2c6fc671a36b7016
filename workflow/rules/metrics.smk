# Word alignments (eflomal) and the data metrics C(d), F(d) of every training set, of each
# teacher's valid output, and (multi-way corpora) the language mix of every output set.

EFLOMAL = q(config["metrics"]["eflomal"])


rule align_raw:
    input:
        src=TRAIN_SRC,
        tgt=TRAIN_TGT,
    output:
        f"{R}/data/align/train.links",
    log:
        f"{R}/logs/align/raw.log",
    benchmark:
        f"{R}/benchmarks/align/raw.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=mem_mb("align_raw"),
        runtime=runtime("align_raw"),
    params:
        eflomal=EFLOMAL,
    shell:
        "kdgrid align --pair {input.src} {input.tgt} {output} --params {params.eflomal}" " --threads {threads} 2> {log}"


rule align_distilled:
    input:
        src=TRAIN_SRC,
        real=TRAIN_TGT,
        distilled=f"{R}/distill/{{teacher}}.{{method}}/train.tgt",
    output:
        real=f"{R}/distill/{{teacher}}.{{method}}/align/real.links",
        distilled=f"{R}/distill/{{teacher}}.{{method}}/align/distilled.links",
    log:
        f"{R}/logs/align/{{teacher}}.{{method}}.log",
    benchmark:
        f"{R}/benchmarks/align/{{teacher}}.{{method}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=mem_mb("align_distilled"),
        runtime=runtime("align_distilled"),
    params:
        eflomal=EFLOMAL,
    shell:
        "kdgrid align --pair {input.src} {input.real} {output.real}"
        " --pair {input.src} {input.distilled} {output.distilled} --params {params.eflomal}"
        " --threads {threads} 2> {log}"


rule data_metrics_raw:
    input:
        src=TRAIN_SRC,
        tgt=TRAIN_TGT,
        links=f"{R}/data/align/train.links",
    output:
        f"{R}/data/data_metrics.json",
    log:
        f"{R}/logs/data_metrics/raw.log",
    benchmark:
        f"{R}/benchmarks/data_metrics/raw.tsv"
    conda:
        ENV
    resources:
        mem_mb=mem_mb("data_metrics_raw"),
        runtime=runtime("data_metrics_raw"),
    params:
        metrics=q(metric_params()),
        labels=q({"data": "raw"}),
    shell:
        "kdgrid data_metrics --src {input.src} --real {input.tgt} --real-links {input.links}"
        " --params {params.metrics} --labels {params.labels} --out {output} 2> {log}"


rule data_metrics_distilled:
    input:
        src=TRAIN_SRC,
        real=TRAIN_TGT,
        real_links=f"{R}/distill/{{teacher}}.{{method}}/align/real.links",
        distilled=f"{R}/distill/{{teacher}}.{{method}}/train.tgt",
        distilled_links=f"{R}/distill/{{teacher}}.{{method}}/align/distilled.links",
    output:
        f"{R}/distill/{{teacher}}.{{method}}/data_metrics.json",
    log:
        f"{R}/logs/data_metrics/{{teacher}}.{{method}}.log",
    benchmark:
        f"{R}/benchmarks/data_metrics/{{teacher}}.{{method}}.tsv"
    conda:
        ENV
    resources:
        mem_mb=mem_mb("data_metrics_distilled"),
        runtime=runtime("data_metrics_distilled"),
    params:
        metrics=q(metric_params()),
        labels=lambda w: q(data_labels(None, f"{w.teacher}.{w.method}")),
    shell:
        "kdgrid data_metrics --src {input.src} --real {input.real} --real-links {input.real_links}"
        " --distilled {input.distilled} --distilled-links {input.distilled_links}"
        " --params {params.metrics} --labels {params.labels} --out {output} 2> {log}"


rule align_teacher_valid:
    input:
        src=f"{R}/data/valid.src",
        real=f"{R}/data/valid.tgt",
        hyp=f"{R}/teachers/{{teacher}}/valid.hyp",
    output:
        real=f"{R}/teachers/{{teacher}}/align/valid.real.links",
        hyp=f"{R}/teachers/{{teacher}}/align/valid.hyp.links",
    log:
        f"{R}/logs/align/{{teacher}}.valid.log",
    benchmark:
        f"{R}/benchmarks/align/{{teacher}}.valid.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=mem_mb("align_teacher_valid"),
        runtime=runtime("align_teacher_valid"),
    params:
        eflomal=EFLOMAL,
    shell:
        "kdgrid align --pair {input.src} {input.real} {output.real}"
        " --pair {input.src} {input.hyp} {output.hyp} --params {params.eflomal}"
        " --threads {threads} 2> {log}"


rule teacher_valid_metrics:
    input:
        src=f"{R}/data/valid.src",
        real=f"{R}/data/valid.tgt",
        real_links=f"{R}/teachers/{{teacher}}/align/valid.real.links",
        hyp=f"{R}/teachers/{{teacher}}/valid.hyp",
        hyp_links=f"{R}/teachers/{{teacher}}/align/valid.hyp.links",
    output:
        f"{R}/teachers/{{teacher}}/valid.data_metrics.json",
    log:
        f"{R}/logs/data_metrics/{{teacher}}.valid.log",
    benchmark:
        f"{R}/benchmarks/data_metrics/{{teacher}}.valid.tsv"
    conda:
        ENV
    resources:
        mem_mb=mem_mb("teacher_valid_metrics"),
        runtime=runtime("teacher_valid_metrics"),
    params:
        metrics=q(metric_params()),
        labels=lambda w: q({"teacher": w.teacher, "split": "valid"}),
    shell:
        "kdgrid data_metrics --src {input.src} --real {input.real} --real-links {input.real_links}"
        " --distilled {input.hyp} --distilled-links {input.hyp_links}"
        " --params {params.metrics} --labels {params.labels} --out {output} 2> {log}"


if LANGS:

    rule language_mix_teacher:
        input:
            tgt=f"{R}/data/train.tgt",
            lang=f"{R}/data/train.lang",
            hyp=f"{R}/teachers/{{teacher}}/test.hyp",
        output:
            f"{R}/teachers/{{teacher}}/test.languages.json",
        log:
            f"{R}/logs/language_mix/{{teacher}}.log",
        benchmark:
            f"{R}/benchmarks/language_mix/{{teacher}}.tsv"
        conda:
            ENV
        resources:
            mem_mb=mem_mb("language_mix_teacher"),
            runtime=runtime("language_mix_teacher"),
        params:
            labels=lambda w: q({"output": f"AT {w.teacher}", "teacher": w.teacher}),
        shell:
            "kdgrid language_mix --train-tgt {input.tgt} --train-lang {input.lang}"
            " --hyp {input.hyp} --labels {params.labels} --out {output} 2> {log}"

    rule language_mix_student:
        input:
            tgt=f"{R}/data/train.tgt",
            lang=f"{R}/data/train.lang",
            hyp=f"{R}/students/{{student}}/{{data}}/test.hyp",
        output:
            f"{R}/students/{{student}}/{{data}}/languages.json",
        log:
            f"{R}/logs/language_mix/{{student}}.{{data}}.log",
        benchmark:
            f"{R}/benchmarks/language_mix/{{student}}.{{data}}.tsv"
        conda:
            ENV
        resources:
            mem_mb=mem_mb("language_mix_student"),
            runtime=runtime("language_mix_student"),
        params:
            labels=lambda w: q({"output": f"{w.student} on {w.data}", **data_labels(w.student, w.data)}),
        shell:
            "kdgrid language_mix --train-tgt {input.tgt} --train-lang {input.lang}"
            " --hyp {input.hyp} --labels {params.labels} --out {output} 2> {log}"
