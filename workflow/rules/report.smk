# All scores and data metrics -> grid tables and plots.


def data_metric_files():
    return [f"{R}/data/data_metrics.json"] + [f"{R}/distill/{d}/data_metrics.json" for d in DISTILLED]


def language_files():
    if not LANGS:
        return []
    return [f"{R}/teachers/{t}/test.languages.json" for t in TEACHERS] + [
        f"{R}/students/{s}/{d}/languages.json" for s, d in cells()
    ]


rule aggregate:
    conda:
        ENV
    input:
        scores=[f"{R}/students/{s}/{d}/scores.json" for s, d in cells()],
        teachers=[f"{R}/teachers/{t}/{split}.scores.json" for t in TEACHERS for split in ("valid", "test")],
        data_metrics=data_metric_files(),
        teacher_metrics=[f"{R}/teachers/{t}/valid.data_metrics.json" for t in TEACHERS],
        languages=language_files(),
        test_src=f"{R}/data/test.src",
        test_refs=references("test"),
    output:
        csv=f"{R}/grid.csv",
        long_csv=f"{R}/scores.csv",
        md=f"{R}/grid.md",
        png=f"{R}/grid.png",
        complexity_png=f"{R}/plots/bleu_vs_complexity.png",
        complexity_pdf=f"{R}/plots/bleu_vs_complexity.pdf",
        **({"languages_png": f"{R}/plots/language_mix.png"} if LANGS else {}),
    params:
        grid=q({"corpus": config["corpus"]["name"], "students": STUDENTS, "columns": COLUMNS,
                "languages": LANGS}),
        languages_png=lambda w, output: f"--languages-png {output.languages_png}" if LANGS else "",
    log:
        f"{R}/logs/aggregate.log",
    shell:
        "python -m kdgrid aggregate --scores {input.scores} --teacher-scores {input.teachers}"
        " --data-metrics {input.data_metrics} --teacher-metrics {input.teacher_metrics}"
        " --languages {input.languages} {params.languages_png} --params {params.grid} --csv {output.csv} --long-csv {output.long_csv}"
        " --test-src {input.test_src} --test-refs {input.test_refs}"
        " --md {output.md} --png {output.png} --complexity-png {output.complexity_png}"
        " --complexity-pdf {output.complexity_pdf} 2> {log}"
