"""`python -m kdgrid evaluate`: decode one or more splits with a model and score each.

One job per model scores all of its splits (a student cell's valid and test, a teacher's valid and
test): the model, its CTranslate2 export and a rescorer are loaded once, and a grid runs one
evaluation job per cell instead of one per cell and split. Each split's scores.json is what a job
of that split alone wrote.
"""

from __future__ import annotations

from kdgrid.errors import KdgridError, all_or_nothing, json_option, write_json


def add_verb(verb) -> None:
    p = verb("evaluate", cmd_evaluate, "decode splits (valid, test, ...) and score each (BLEU, chrF, speed)")
    p.add_argument("--gpus", type=int, default=0,
                   help="GPUs the scheduler gave this job (the rule's gpu resource); 0: any visible")
    p.add_argument("--model", required=True)
    p.add_argument("--vocab", required=True)
    p.add_argument("--params", required=True)
    for option, what in (("--src", "source file"), ("--hyp", "hypotheses file to write"),
                         ("--scores", "scores.json to write")):
        p.add_argument(option, nargs="+", required=True, help=f"one {what} per split, in the same order")
    p.add_argument("--labels", nargs="+", help="one JSON object per split, written into its scores.json "
                   "(default: none)")
    p.add_argument("--ref", nargs="+", required=True,
                   help="the references, split after split: the same number for every split (multi-way: "
                   "one per language)")
    p.add_argument("--rescorer", help="an AT model file (same vocabulary) that ranks the candidates "
                   "of a length beam or of FlowSeq's latent samples (noisy parallel decoding)")


def _splits(a) -> list[tuple]:
    """(src, refs, hyp, scores, labels) per split, the counts checked."""
    n = len(a.src)
    a.labels = a.labels or ["{}"] * n
    for option, values in (("--hyp", a.hyp), ("--scores", a.scores), ("--labels", a.labels)):
        if len(values) != n:
            raise KdgridError(f"{option}: {len(values)} given for {n} --src files (one per split)")
    if len(a.ref) % n:
        raise KdgridError(f"--ref: {len(a.ref)} files do not split evenly over {n} --src files "
                          "(each split has the same number of references)")
    k = len(a.ref) // n
    return [(a.src[i], a.ref[i * k:(i + 1) * k], a.hyp[i], a.scores[i], json_option(a.labels[i], "--labels"))
            for i in range(n)]


def cmd_evaluate(a) -> None:
    from kdgrid.cli import _decoding_threads, _device, _load_for_decoding, _require
    from kdgrid.corpus import read_lines, read_parallel, write_lines
    from kdgrid.ct2 import for_decoding
    from kdgrid.decoding_backend import split_options
    from kdgrid.metrics import bleu
    from kdgrid.translate import translate

    params = json_option(a.params, "--params")
    _decoding_threads(params, a.threads)
    backend, p = split_options(params)
    _require(p, ("max_tokens",), "--params")
    splits = _splits(a)
    model, meta, v = _load_for_decoding(a.model, a.vocab)
    data = []
    for src_path, ref_paths, *_ in splits:
        src = [s for s, _ in read_parallel(src_path, ref_paths[0])]
        refs = [read_lines(r) for r in ref_paths]
        for path, r in zip(ref_paths, refs):
            if len(r) != len(src):
                raise KdgridError(f"{path}: {len(r)} references but {src_path} has {len(src)} lines")
        data.append((src, refs))
    decoder = for_decoding(model, v, backend["backend"], _device(), backend["compute_type"], a.threads,
                           backend["ct2_search"])
    opts = {k: val for k, val in p.items() if k != "max_tokens"}
    decode = dict(opts)
    if a.rescorer:
        decode["rescorer"] = _rescorer(a.rescorer, a.vocab, model, opts, p["max_tokens"])
        opts["rescorer"] = str(a.rescorer)
    record = {"decode_options": opts, "parameters": sum(x.numel() for x in model.parameters()),
              "updates": meta.get("updates"), "model": a.model, **_wrapper_record(meta),
              **{key: meta[key] for key in ("infeasible_pairs",) if key in meta},
              **({"choices": model.choices()} if hasattr(model, "choices") else {})}
    results = []
    for (src_path, *_), (src, _) in zip(splits, data):
        hyps, stats = translate(decoder, v, src, decode, p["max_tokens"], a.threads, what=f"evaluate {src_path}")
        stats["backend"] = {**backend, "used": "torch" if decoder is model else "ctranslate2"}
        if model.kind == "moe":  # which expert decoded: the record says it in words
            stats["moe_expert"] = model.expert_choice(opts.get("method", "beam"), opts.get("expert", "prior"))
        results.append((hyps, stats))
    with all_or_nothing(*(s[2] for s in splits), *(s[3] for s in splits)):
        for (_, ref_paths, hyp_path, scores_path, labels), (_, refs), (hyps, stats) in zip(splits, data, results):
            write_lines(hyp_path, hyps)
            write_json(scores_path, {**labels, **bleu.score(hyps, refs), "references": [str(r) for r in ref_paths],
                                     "decode": stats, **record})


def _wrapper_record(meta: dict) -> dict:
    """{"wrapper": how the student learned from its teacher (init, kd: settings and choices)}, or
    {} for a plain model, whose scores.json stays as it was."""
    if not meta.get("wrapper"):
        return {}
    from kdgrid.kd import cell_record

    return {"wrapper": cell_record(meta["wrapper"])}


def _rescorer(path, vocab_path, model, options: dict, max_tokens: int):
    import inspect

    from kdgrid.cli import _load_for_decoding
    from kdgrid.rescore import Rescorer

    if getattr(model, "autoregressive", False):
        raise KdgridError("--rescorer: the model is autoregressive (its beam search ranks its own "
                          "candidates); only nat, inat, cmlm and flowseq candidates can be rescored")
    if "rescorer" not in inspect.signature(model.generate).parameters:
        raise KdgridError(f"--rescorer: model kind {model.kind!r} keeps one candidate per sentence, so "
                          "there is nothing to rescore (nat, inat, cmlm and flowseq can be rescored)")
    candidates = (options.get("length_beam") or model.cfg.length_beam) * (
        options.get("samples") or getattr(model.cfg, "samples", 1))
    if candidates < 2:
        raise KdgridError("--rescorer: one candidate per sentence (length_beam x samples = 1) leaves "
                          "nothing to rescore; raise length_beam (or FlowSeq's samples) in --params")
    at_model, _, _ = _load_for_decoding(path, vocab_path)
    return Rescorer(at_model, name=str(path), max_tokens=max_tokens)
