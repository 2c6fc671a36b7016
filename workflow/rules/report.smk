# All scores, data metrics and job benchmarks -> grid tables, plots, the cost table and the answer per
# student (recommendations, plots/students/), each marked for Snakemake's HTML report
# (`snakemake --report`; captions in workflow/report/).


rule aggregate:
    input:
        scores=[f"{R}/students/{s}/{d}/scores.json" for s, d in cells()],
        valid_scores=[f"{R}/students/{s}/{d}/valid.scores.json" for s, d in cells()],
        hyps=[f"{R}/students/{s}/{d}/test.hyp" for s, d in cells()],
        teachers=[f"{R}/teachers/{t}/{split}.scores.json" for t in TEACHERS for split in ("valid", "test")],
        data_metrics=data_metric_files(),
        teacher_metrics=[f"{R}/teachers/{t}/valid.data_metrics.json" for t in TEACHERS],
        languages=language_files(),
        test_src=f"{R}/data/test.src",
        test_refs=references("test"),
        # corpus.files.tests: every cell and teacher on each named test set, and the set's text
        set_scores=[f"{R}/students/{s}/{d}/tests/{n}.scores.json" for s, d in cells() for n in TEST_SETS],
        set_hyps=[f"{R}/students/{s}/{d}/tests/{n}.hyp" for s, d in cells() for n in TEST_SETS],
        set_teachers=[f"{R}/teachers/{t}/tests/{n}.scores.json" for t in TEACHERS for n in TEST_SETS],
        set_text=[f"{R}/data/tests/{n}.{side}" for n in TEST_SETS for side in SIDES],
    output:
        **(
            {
                "languages_png": report(
                    f"{R}/plots/language_mix.png",
                    caption="../report/language_mix.rst",
                    category="Data metrics",
                    subcategory="Language mix",
                    labels={"file": "plots/language_mix.png", "shows": "p(language | output) of test outputs"},
                )
            }
            if LANGS
            else {}
        ),
        csv=report(
            f"{R}/grid.csv",
            caption="../report/grid_csv.rst",
            category="Grid",
            subcategory="Tables",
            labels={"file": "grid.csv", "shows": "student BLEU by training data, C(d), F(d)"},
        ),
        long_csv=report(
            f"{R}/scores.csv",
            caption="../report/scores_csv.rst",
            category="Students",
            subcategory="Scores",
            labels={"file": "scores.csv", "shows": "every cell's scores, one row per cell"},
        ),
        teachers_csv=report(
            f"{R}/teachers.csv",
            caption="../report/teachers_csv.rst",
            category="Teachers",
            subcategory="Teacher table",
            labels={"file": "teachers.csv", "shows": "teacher size, BLEU, chrF, C(d) of valid output"},
        ),
        data_csv=report(
            f"{R}/data_metrics.csv",
            caption="../report/data_metrics_csv.rst",
            category="Data metrics",
            subcategory="Training data",
            labels={"file": "data_metrics.csv", "shows": "C(d), F(d) of every training-data column"},
        ),
        costs_csv=report(
            f"{R}/costs.csv",
            caption="../report/costs_csv.rst",
            category="Costs",
            subcategory="Cost table",
            labels={"file": "costs.csv", "shows": "wall/CPU time, memory, GPU hours per cell and shared job"},
        ),
        md=report(
            f"{R}/grid.md",
            caption="../report/grid_md.rst",
            category="Grid",
            subcategory="Tables",
            labels={"file": "grid.md", "shows": "the whole grid as text: scores, data, teachers, costs"},
        ),
        png=report(
            f"{R}/grid.png",
            caption="../report/grid_png.rst",
            category="Grid",
            subcategory="Heatmap",
            labels={"file": "grid.png", "shows": "student test BLEU by training data"},
        ),
        complexity_png=report(
            f"{R}/plots/bleu_vs_complexity.png",
            caption="../report/bleu_vs_complexity.rst",
            category="Answer per student",
            subcategory="BLEU vs complexity",
            labels={"file": "plots/bleu_vs_complexity.png", "shows": "all students: BLEU against C(d)"},
        ),
        complexity_pdf=report(
            f"{R}/plots/bleu_vs_complexity.pdf",
            caption="../report/bleu_vs_complexity.rst",
            category="Answer per student",
            subcategory="BLEU vs complexity",
            labels={"file": "plots/bleu_vs_complexity.pdf", "shows": "the same, as vector PDF"},
        ),
        student_pngs=[
            report(
                f"{R}/plots/students/{s}.png",
                caption="../report/student_complexity.rst",
                category="Answer per student",
                subcategory="BLEU vs complexity",
                labels={"file": f"plots/students/{s}.png", "shows": f"{s}: BLEU against C(d)"},
            )
            for s in STUDENTS
        ],
        recommendations_csv=report(
            f"{R}/recommendations.csv",
            caption="../report/recommendations.rst",
            category="Answer per student",
            subcategory="Recommendations",
            labels={"file": "recommendations.csv", "shows": "best set, runner-up, margin, reason"},
        ),
        recommendations_json=report(
            f"{R}/recommendations.json",
            caption="../report/recommendations.rst",
            category="Answer per student",
            subcategory="Recommendations",
            labels={"file": "recommendations.json", "shows": "the same, with every column's point"},
        ),
    log:
        f"{R}/logs/aggregate.log",
    benchmark:
        f"{R}/benchmarks/aggregate.tsv"
    conda:
        ENV
    resources:
        mem_mb=mem_mb("aggregate"),
        runtime=runtime("aggregate"),
    params:
        # a function: the cost patterns' {wildcards} are text for aggregate, not this rule's
        grid=lambda w: q(
            {
                "corpus": config["corpus"]["name"],
                "students": STUDENTS,
                "runs": {run: list(name_seed) for run, name_seed in STUDENT_RUNS.items()},
                "columns": REPORT_COLUMNS,
                "column_replicas": COLUMN_REPLICAS,  # grid.teacher_seeds: columns folded into the grid's
                "languages": LANGS,
                "teacher_sizes": {t: teacher_model(t) for t in TEACHERS},
                "test_name": TEST_NAME,
                "tie_bleu": config["report"]["tie_bleu"],
                "select_metric": config["report"]["select_metric"],
                "c_tolerance": config["report"]["c_tolerance"],
                "significance": config["report"]["significance"],
                "columns_info": columns_info(),
                # not inputs: a deleted benchmark or log must not rerun its job (and its results)
                "costs": cost_params(),
            }
        ),
        languages_png=lambda w, output: f"--languages-png {output.languages_png}" if LANGS else "",
        # empty without corpus.files.tests (the command stays as it was)
        test_sets=lambda w, input: "".join(
            f" --test-set {n} {R}/data/tests/{n}.src {R}/data/tests/{n}.tgt" for n in TEST_SETS
        )
        + (
            f" --set-scores {' '.join(input.set_scores)} --set-hyps {' '.join(input.set_hyps)}"
            f" --set-teacher-scores {' '.join(input.set_teachers)}"
            if TEST_SETS
            else ""
        ),
    shell:
        "kdgrid aggregate --scores {input.scores} --valid-scores {input.valid_scores} --hyps {input.hyps}"
        " --teacher-scores {input.teachers}"
        " --data-metrics {input.data_metrics} --teacher-metrics {input.teacher_metrics}"
        " --languages {input.languages} {params.languages_png} --params {params.grid} --csv {output.csv} --long-csv {output.long_csv}"
        " --test-src {input.test_src} --test-refs {input.test_refs}{params.test_sets}"
        " --teachers-csv {output.teachers_csv} --data-csv {output.data_csv}"
        " --costs-csv {output.costs_csv}"
        " --md {output.md} --png {output.png} --complexity-png {output.complexity_png}"
        " --complexity-pdf {output.complexity_pdf} --student-pngs {output.student_pngs}"
        " --recommendations-csv {output.recommendations_csv}"
        " --recommendations-json {output.recommendations_json} 2> {log}"
