# The shared store's jobs (share.store; the plan is share_plan.smk's): a product whose key the store
# holds, and which this grid has not made itself, is fetched by a local job (in localrules: on a
# cluster nothing is submitted for it); the products this grid makes are put into the store by local
# jobs after them. Off (share.store: null): no rule of this file exists.


if STORE:

    localrules:
        store_put,
        fetch_teacher,
        fetch_distilled,
        fetch_alignment,

    ruleorder: fetch_teacher > train_teacher
    ruleorder: fetch_distilled > gather
    ruleorder: fetch_alignment > align_distilled

    rule fetch_teacher:
        input:
            vocab=VOCAB,  # checked against the teacher's (the same recipe, the same file)
        output:
            model=f"{R}/teachers/{{teacher}}/model.pt",
            record=f"{R}/store/fetched/teacher.{{teacher}}.json",
        log:
            f"{R}/logs/fetch_teacher/{{teacher}}.log",
        benchmark:
            f"{R}/benchmarks/fetch_teacher/{{teacher}}.tsv"
        wildcard_constraints:
            teacher=choice(FETCH_TEACHERS),
        params:
            entry=lambda w: entry_options(f"teacher.{w.teacher}"),
            labels=lambda w: q({"teacher": w.teacher}),
        shell:
            "kdgrid store_fetch {params.entry} --files model.pt={output.model} --vocab {input.vocab}"
            " --labels {params.labels} --record {output.record} 2> {log}"

    rule fetch_distilled:
        input:
            src=TRAIN_SRC,  # checked against the sources the set was made from
        output:
            text=f"{R}/distill/{{data}}/train.tgt",
            record=f"{R}/store/fetched/distilled.{{data}}.json",
        log:
            f"{R}/logs/fetch_distilled/{{data}}.log",
        benchmark:
            f"{R}/benchmarks/fetch_distilled/{{data}}.tsv"
        wildcard_constraints:
            data=choice(FETCH_SETS),
        params:
            entry=lambda w: entry_options(f"distilled.{w.data}"),
            labels=lambda w: q({"data": w.data}),
        shell:
            "kdgrid store_fetch {params.entry} --files train.tgt={output.text} --check train.src={input.src}"
            " --labels {params.labels} --record {output.record} 2> {log}"

    rule fetch_alignment:
        input:
            src=TRAIN_SRC,  # checked against the pair it was made from
            tgt=TRAIN_TGT,
        output:
            real=f"{R}/distill/{{data}}/align/real.links",
            distilled=f"{R}/distill/{{data}}/align/distilled.links",
            record=f"{R}/store/fetched/alignment.{{data}}.json",
        log:
            f"{R}/logs/fetch_alignment/{{data}}.log",
        benchmark:
            f"{R}/benchmarks/fetch_alignment/{{data}}.tsv"
        wildcard_constraints:
            data=choice(FETCH_ALIGNMENTS),
        params:
            entry=lambda w: entry_options(f"alignment.{w.data}"),
            labels=lambda w: q({"data": w.data}),
        shell:
            "kdgrid store_fetch {params.entry} --files real.links={output.real} distilled.links={output.distilled}"
            " --check train.src={input.src} train.tgt={input.tgt} --labels {params.labels} --record {output.record} 2> {log}"

    # Products of no wildcard: their fetch rules exist only when they are fetched (a rule of no
    # wildcard would otherwise always take the file from its maker).
    if "alignment.raw" in FETCH:

        localrules:
            fetch_raw_alignment,

        ruleorder: fetch_raw_alignment > align_raw

        rule fetch_raw_alignment:
            input:
                src=TRAIN_SRC,  # checked against the pair it was made from
                tgt=TRAIN_TGT,
            output:
                links=f"{R}/data/align/train.links",
                record=fetched_record("alignment.raw"),
            log:
                f"{R}/logs/fetch_raw_alignment.log",
            benchmark:
                f"{R}/benchmarks/fetch_raw_alignment.tsv"
            params:
                entry=entry_options("alignment.raw"),
            shell:
                "kdgrid store_fetch {params.entry} --files train.links={output.links}"
                " --check train.src={input.src} train.tgt={input.tgt} --record {output.record} 2> {log}"

    if "filter_teacher" in FETCH:

        localrules:
            fetch_filter_teacher,

        ruleorder: fetch_filter_teacher > train_filter_teacher

        rule fetch_filter_teacher:
            input:
                vocab=VOCAB,
            output:
                model=FILTER_TEACHER,
                record=fetched_record("filter_teacher"),
            log:
                f"{R}/logs/fetch_filter_teacher.log",
            benchmark:
                f"{R}/benchmarks/fetch_filter_teacher.tsv"
            params:
                entry=entry_options("filter_teacher"),
                labels=q({"role": "filter_teacher"}),
            shell:
                "kdgrid store_fetch {params.entry} --files model.pt={output.model} --vocab {input.vocab}"
                " --labels {params.labels} --record {output.record} 2> {log}"

    rule store_put:
        input:
            lambda w: list(SHARED[w.product]["files"].values()),
        output:
            f"{R}/store/put/{{product}}.json",
        log:
            f"{R}/logs/store_put/{{product}}.log",
        benchmark:
            f"{R}/benchmarks/store_put/{{product}}.tsv"
        wildcard_constraints:
            product=choice(PUT),
        params:
            entry=lambda w: entry_options(w.product),
            recipe=lambda w: q(SHARED[w.product]["recipe"]),
            code=lambda w: SHARED[w.product]["code"],
            files=lambda w: [f"{name}={path}" for name, path in SHARED[w.product]["files"].items()],
            jobs=lambda w: " ".join(
                f"--job {rule} {shlex.quote(b)} {shlex.quote(log)}" for rule, b, log in SHARED[w.product]["made_by"]
            ),
            origin=q({"results": R, "configs": CONFIG_SOURCES}),
            upstream=lambda w: (
                " ".join(["--code-logs", *map(shlex.quote, logs)]) if (logs := upstream_logs(w.product)) else ""
            ),
            checks=lambda w: (
                " ".join(["--check", *(f"{n}={shlex.quote(f)}" for n, f in SHARED[w.product]["checks"].items())])
                if SHARED[w.product]["checks"]
                else ""
            ),
        shell:
            "kdgrid store_put {params.entry} --recipe {params.recipe} --code {params.code} --files {params.files} {params.jobs} {params.upstream} {params.checks}"
            " --origin {params.origin} --record {output} 2> {log}"
