# Corpus -> text splits -> joint sentencepiece model and encoded splits.


def corpus_inputs(wildcards):
    c = config["corpus"]
    if c["source"] != "files":
        return []
    return [c["files"][s][side] for s in SPLITS for side in SIDES]


rule prepare:
    input:
        corpus_inputs,
    output:
        **{f"{s}_{side}": f"{R}/data/{s}.{side}" for s in SPLITS for side in SIDES},
        stats=f"{R}/data/stats.json",
    params:
        corpus=q(config["corpus"]),
    log:
        f"{R}/logs/prepare.log",
    shell:
        "python -m kdgrid prepare --params {params.corpus}"
        " --train {output.train_src} {output.train_tgt} --valid {output.valid_src} {output.valid_tgt}"
        " --test {output.test_src} {output.test_tgt} --stats {output.stats} 2> {log}"


rule vocab:
    input:
        text=[f"{R}/data/{s}.{side}" for s in SPLITS for side in SIDES],
    output:
        model=f"{R}/vocab/spm.model",
        encoded=[f"{R}/vocab/{s}.{side}.npz" for s in SPLITS for side in SIDES],
    params:
        vocab=q(config["vocab"]),
        train_text=[f"{R}/data/train.{side}" for side in SIDES],
    threads: THREADS
    log:
        f"{R}/logs/vocab.log",
    shell:
        "python -m kdgrid vocab --train-text {params.train_text} --model {output.model}"
        " --params {params.vocab} --encode {input.text} --encoded {output.encoded}"
        " --threads {threads} 2> {log}"
