# All cell scores -> grid tables and a heatmap.


rule aggregate:
    input:
        scores=[f"{R}/students/{s}/{d}/scores.json" for s, d in cells()],
        teachers=[f"{R}/teachers/{t}/{split}.scores.json" for t in TEACHERS for split in ("valid", "test")],
    output:
        csv=f"{R}/grid.csv",
        long_csv=f"{R}/scores.csv",
        md=f"{R}/grid.md",
        png=f"{R}/grid.png",
    params:
        grid=q({"corpus": config["corpus"]["name"], "students": STUDENTS, "columns": COLUMNS}),
    log:
        f"{R}/logs/aggregate.log",
    shell:
        "python -m kdgrid aggregate --scores {input.scores} --teacher-scores {input.teachers}"
        " --params {params.grid} --csv {output.csv} --long-csv {output.long_csv}"
        " --md {output.md} --png {output.png} 2> {log}"
