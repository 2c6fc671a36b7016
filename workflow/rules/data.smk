# Corpus -> text splits -> joint sentencepiece model and encoded splits.


MULTIWAY_OUTPUTS = ({"train_lang": f"{R}/data/train.lang"} if LANGS else {}) | {
    f"ref_{s}_{lang}": f"{R}/data/{s}.ref.{lang}" for s in ("valid", "test") for lang in LANGS
}


rule prepare:
    input:
        corpus_inputs,
    output:
        **{f"{s}_{side}": f"{R}/data/{s}.{side}" for s in SPLITS for side in SIDES},
        **MULTIWAY_OUTPUTS,
        **({"train_noise": f"{R}/data/train.noise"} if NOISE else {}),  # corpus.noise: each line's kind
        stats=f"{R}/data/stats.json",
    log:
        f"{R}/logs/prepare.log",
    benchmark:
        f"{R}/benchmarks/prepare.tsv"
    conda:
        ENV
    resources:
        mem_mb=mem_mb("prepare"),
        runtime=runtime("prepare"),
    params:
        corpus=q(prepare_params()),
        downloads=f"{R}/downloads",
        multiway=" ".join(
            ([f"--train-lang {R}/data/train.lang"] if LANGS else [])
            + [f"--ref-out {s} {lang} {R}/data/{s}.ref.{lang}" for s in ("valid", "test") for lang in LANGS]
            + ([f"--train-noise {R}/data/train.noise"] if NOISE else [])  # only here: plain commands unchanged
        ),
    shell:
        "kdgrid prepare --params {params.corpus} --download-dir {params.downloads}"
        " --train {output.train_src} {output.train_tgt} --valid {output.valid_src} {output.valid_tgt}"
        " --test {output.test_src} {output.test_tgt} {params.multiway} --stats {output.stats} 2> {log}"


rule vocab:
    input:
        text=[f"{R}/data/{s}.{side}" for s in SPLITS for side in SIDES],
    output:
        model=f"{R}/vocab/spm.model",
        encoded=[f"{R}/vocab/{s}.{side}.npz" for s in SPLITS for side in SIDES],
    log:
        f"{R}/logs/vocab.log",
    benchmark:
        f"{R}/benchmarks/vocab.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        mem_mb=mem_mb("vocab"),
        runtime=runtime("vocab"),
    params:
        vocab=q(config["vocab"]),
        train_text=[f"{R}/data/train.{side}" for side in SIDES],
    shell:
        "kdgrid vocab --train-text {params.train_text} --model {output.model}"
        " --params {params.vocab} --encode {input.text} --encoded {output.encoded}"
        " --threads {threads} 2> {log}"
