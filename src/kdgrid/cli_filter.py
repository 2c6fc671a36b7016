"""The corpus filter's verbs (filter_labels, filter_teacher, filter_student, filter_report,
filter_apply): labelled noisy pairs, the frozen teacher's linear head, the tiny student classifier
trained on labels, vanilla KD or LELP targets, their scores table, and the filtered training pair.
Registered with the others in kdgrid.cli (`add_verbs`); the work is kdgrid.filter's."""

from __future__ import annotations

import time

from kdgrid.errors import KdgridError, all_or_nothing, atomic_output, json_option, read_json, write_json

_json = json_option
LABEL_SETS = ("few", "binary")  # kdgrid.filter.evaluate's, here so that parsing imports no numpy/torch


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))


def _pairs(src_path, tgt_path) -> tuple[list[str], list[str]]:
    from kdgrid.corpus import read_parallel

    pairs = read_parallel(src_path, tgt_path)
    return [s for s, _ in pairs], [t for _, t in pairs]


def _sample(n: int, rows: list[int], size: int, seed: int) -> list[int]:
    """`size` of `rows` drawn without replacement (all of them when size is 0 or more), in row order."""
    import numpy as np

    if size <= 0 or size >= len(rows):
        return list(rows)
    return sorted(int(i) for i in np.random.default_rng(seed).choice(rows, size, replace=False))


def cmd_filter_labels(a) -> None:
    """Labels for free: a sample of the training pairs (and of valid), each turned into its kind."""
    from kdgrid.corpus import read_lines, write_lines
    from kdgrid.filter.noise import CLEAN, class_names, make_labelled, training_kinds

    p = _json(a.params, "--params")
    missing = [k for k in ("kinds", "train_pairs", "valid_pairs", "seed") if k not in p]
    if missing:
        raise KdgridError(f"--params: missing key(s) {', '.join(missing)}")
    holdout = list(p.get("holdout") or [])
    try:  # the training set has no pair of a held-out kind; valid keeps every kind
        kinds = {"train": training_kinds(p["kinds"], holdout), "valid": p["kinds"]}
    except KdgridError as e:
        raise KdgridError(f"filter.holdout_kind: {e}") from None
    classes = class_names(kinds["train"])  # the classifiers' classes: no class for a held-out kind
    info = {"kinds": p["kinds"], "holdout": holdout, "train_kinds": kinds["train"], "classes": classes,
            "seed": p["seed"]}
    out = {}
    for split, (src_path, tgt_path), size, seed in (("train", a.train, p["train_pairs"], p["seed"]),
                                                     ("valid", a.valid, p["valid_pairs"], p["seed"] + 1)):
        src, tgt = _pairs(src_path, tgt_path)
        rows = list(range(len(src)))
        if split == "train" and a.train_noise:  # rows the corpus's own noise injection left clean
            noise = read_lines(a.train_noise)
            if len(noise) != len(src):
                raise KdgridError(f"--train-noise {a.train_noise}: {len(noise)} lines but {src_path} has {len(src)}")
            rows = [i for i in rows if noise[i] == CLEAN]
        picked = _sample(len(src), rows, size, seed)
        if len(picked) < 2:
            raise KdgridError(f"--{split}: {len(picked)} usable pairs; the labelled set needs at least 2")
        try:
            out[split] = make_labelled([src[i] for i in picked], [tgt[i] for i in picked], kinds[split], seed)
        except KdgridError as e:  # name the config key the kinds come from
            raise KdgridError(f"filter.kinds: {e}") from None
        info[split] = {"pairs": len(picked), "of": len(src), "usable": len(rows),
                       "per_class": {c: out[split][2].count(c) for c in class_names(kinds[split])}}
    with all_or_nothing(*a.train_out, *a.valid_out, a.info):
        for split, paths in (("train", a.train_out), ("valid", a.valid_out)):
            for path, lines in zip(paths, out[split]):
                write_lines(path, lines)
        write_json(a.info, info)


def _labelled(vocab, src_path, tgt_path, labels_path, threads: int):
    """(src ids, tgt ids, labels) of a labelled set written by filter_labels."""
    from kdgrid.corpus import read_lines

    src, tgt = _pairs(src_path, tgt_path)
    labels = read_lines(labels_path)
    if len(labels) != len(src):
        raise KdgridError(f"{labels_path}: {len(labels)} labels but {src_path} has {len(src)} pairs; "
                          "rerun filter_labels")
    return vocab.encode(src, threads=threads), vocab.encode(tgt, threads=threads), labels


def cmd_filter_teacher(a) -> None:
    """The frozen teacher's pair embeddings of both labelled sets and a linear head per label set."""
    import numpy as np
    import torch

    from kdgrid.checkpoint import load_for_decoding
    from kdgrid.filter.embed import pair_embeddings
    from kdgrid.filter.evaluate import label_classes, label_ids, train_prior, valid_scores
    from kdgrid.filter.head import HEAD_FORMAT, fit_head

    _threads(a.threads)
    if len(a.label_sets) != len(a.heads):
        raise KdgridError(f"--label-sets names {len(a.label_sets)} sets but --heads {len(a.heads)} files")
    p = _json(a.params, "--params")
    info = read_json(a.labelled_info)
    model, _, v = load_for_decoding(a.model, a.vocab)
    data = {split: _labelled(v, *paths, a.threads) for split, paths in (("train", a.train), ("valid", a.valid))}
    started = time.perf_counter()
    emb = {split: pair_embeddings(model, d[0], d[1], p.get("max_tokens", 4096)) for split, d in data.items()}
    seconds = time.perf_counter() - started
    pairs = sum(len(d[0]) for d in data.values())
    report = {"teacher": str(a.model), "embedding_dim": int(emb["train"].shape[1]),
              "embedding_pairs_per_s": pairs / max(seconds, 1e-9), "threads": a.threads}
    heads = {}
    for label_set, path in zip(a.label_sets, a.heads):
        classes = label_classes(label_set, info)
        y_train = label_ids(data["train"][2], label_set, classes)
        head = fit_head(emb["train"], y_train, len(classes), seed=p.get("seed", 1), **p.get("head", {}))
        sc = valid_scores(head.probs(emb["valid"]).numpy(), data["valid"][2], label_set, classes, info["classes"])
        report[label_set] = {"classes": classes, "holdout": info.get("holdout", []),
                             "train_prior": train_prior(y_train, classes), **sc}
        heads[path] = {"format": HEAD_FORMAT, "labels": label_set, "classes": classes, "state": head.state(),
                       "options": p.get("head", {}), "vocab_sha256": v.sha256, "teacher": str(a.model),
                       "scores": {k: val for k, val in sc.items() if k != "valid_p_clean"}}
    with all_or_nothing(a.embeddings, a.scores, *a.heads):
        with atomic_output(a.embeddings, "wb") as f:
            np.savez(f, train=emb["train"], valid=emb["valid"])
        for path, payload in heads.items():
            with atomic_output(path, "path") as tmp:
                torch.save(payload, tmp)
        write_json(a.scores, report)


def cmd_filter_student(a) -> None:
    """One student classifier (labels, kd or lelp) on the labelled training set, scored on valid."""
    import numpy as np

    from kdgrid.filter.evaluate import label_classes, label_ids, train_prior, valid_scores
    from kdgrid.filter.head import load_head
    from kdgrid.filter.lelp import lelp_targets
    from kdgrid.filter.student import (
        StudentConfig,
        TrainOptions,
        build_student,
        predict_probs,
        save_student,
        train_student,
    )
    from kdgrid.vocab import EOS, PAD, Vocab

    _threads(a.threads)
    p = _json(a.params, "--params")
    v = Vocab.load(a.vocab)
    info = read_json(a.labelled_info)
    classes = label_classes(a.labels, info)
    head, head_payload = load_head(a.head, a.labels, v.sha256)
    train_src, train_tgt, train_labels = _labelled(v, *a.train, a.threads)
    valid_src, valid_tgt, valid_labels = _labelled(v, *a.valid, a.threads)
    y_train = label_ids(train_labels, a.labels, classes)
    try:
        with np.load(a.embeddings) as z:
            emb = z["train"]
    except (OSError, KeyError, ValueError) as e:
        raise KdgridError(f"--embeddings {a.embeddings}: not readable ({type(e).__name__}); rerun filter_teacher") \
            from None
    if len(emb) != len(train_src):
        raise KdgridError(f"--embeddings {a.embeddings}: {len(emb)} rows but the labelled set has {len(train_src)} "
                          "pairs; rerun filter_teacher")
    kd, lelp_opts = p.get("kd", {}), p.get("lelp", {})
    targets, lelp_info, S = {}, None, 1
    if a.method == "kd":
        targets["teacher_logits"] = head(emb).detach().numpy()
    elif a.method == "lelp":
        S = lelp_opts.get("S", 4)
        opts = {k: val for k, val in lelp_opts.items() if k != "S"}
        targets["soft_targets"], lelp_info = lelp_targets(emb, head, S, labels=y_train, seed=a.seed, **opts)
    cfg = StudentConfig(vocab_size=len(v), pad=PAD, sep=EOS, classes=classes, subclasses=S, **p.get("student", {}))
    model = build_student(cfg, a.seed)
    opts = TrainOptions(method=a.method, seed=a.seed, kd_temperature=kd.get("temperature", 2.0),
                        kd_alpha=kd.get("alpha", 1.0), **p.get("train", {}))
    started = time.perf_counter()
    record = train_student(model, train_src, train_tgt, opts, labels=y_train, **targets)
    record["train_seconds"] = time.perf_counter() - started
    sc = valid_scores(predict_probs(model, valid_src, valid_tgt), valid_labels, a.labels, classes, info["classes"])
    p_clean = sc.pop("valid_p_clean")
    result = {"method": a.method, "labels": a.labels, "seed": a.seed, "classes": classes, **sc,
              "holdout": info.get("holdout", []), "train_prior": train_prior(y_train, classes),
              "teacher": head_payload["scores"], "lelp": lelp_info, "options": p, **record}
    meta = {**result, "vocab_sha256": v.sha256, "head": str(a.head)}
    result["valid_p_clean"] = p_clean  # last: the scores file's summary stays on top
    with all_or_nothing(a.out, a.scores):
        save_student(a.out, model, meta)
        write_json(a.scores, result)


def cmd_filter_report(a) -> None:
    """The classifier comparison: per label set, the teacher head and each method's students,
    accuracy, macro F1 and the noisy class's precision and recall at the corpus prior (with and
    without the prior correction), and the recall on held-out kinds, as mean ± std over seeds."""
    from kdgrid.filter.prior import clean_share
    from kdgrid.filter.table import rows, write_csv, write_markdown

    p = _json(a.params, "--params")
    at = {"corpus_prior": clean_share(p.get("corpus_prior", 0.8)), "threshold": p.get("threshold", 0.5),
          "prior": p.get("prior", "configured")}
    table = rows([read_json(f) for f in a.teacher_scores], [read_json(f) for f in a.scores], **at)
    applied = read_json(a.applied) if a.applied else None
    with all_or_nothing(a.csv, a.md):
        write_csv(table, a.csv)
        write_markdown(table, a.md, p.get("title", "kdgrid filter"), applied, at)


def _by_kind(noise: list[str], mask) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(k for k, m in zip(noise, mask) if m))


def cmd_filter_apply(a) -> None:
    """The training pairs the chosen student keeps, as text and encoded ids, and a report."""
    from kdgrid.batching import Ids, load_ids, save_ids
    from kdgrid.corpus import read_lines, write_lines
    from kdgrid.filter.apply import decide_pairs
    from kdgrid.vocab import Vocab

    _threads(a.threads)
    v = Vocab.load(a.vocab)
    src, tgt = _pairs(a.train_src, a.train_tgt)
    src_ids, tgt_ids = load_ids(a.train_src_ids), load_ids(a.train_tgt_ids)
    for path, ids in ((a.train_src_ids, src_ids), (a.train_tgt_ids, tgt_ids)):
        if len(ids) != len(src):
            raise KdgridError(f"{path} has {len(ids)} sentences but {a.train_src} has {len(src)}; rerun vocab")
    started = time.perf_counter()
    d = decide_pairs(a.model, src_ids, tgt_ids, a.threshold, v.sha256, a.max_tokens, a.prior, a.corpus_prior)
    keep, seconds, n = d.keep, time.perf_counter() - started, len(src)
    report = {**d.counts, "pairs": n, "kept_share": d.counts["kept"] / max(n, 1),
              "kept_share_uncorrected": d.counts["kept_uncorrected"] / max(n, 1), "seconds": seconds,
              "pairs_per_s": n / max(seconds, 1e-9), "threads": a.threads}
    if a.train_noise:  # an injected-noise corpus: what the filter did with each injected kind
        noise = read_lines(a.train_noise)
        if len(noise) != n:
            raise KdgridError(f"--train-noise {a.train_noise}: {len(noise)} lines but {a.train_src} has {n}")
        report.update(kept_by_kind=_by_kind(noise, keep), dropped_by_kind=_by_kind(noise, ~keep),
                      kept_by_kind_uncorrected=_by_kind(noise, d.uncorrected))
    rows = [i for i in range(n) if keep[i]]
    if not rows:
        prior = report["prior"]
        why = (f" (the prior correction keeps none, the uncorrected filter {report['kept_uncorrected']}: EM estimated "
               f"a clean share of {prior['corpus_clean']:.3f}; set filter.prior: configured with your corpus's "
               "clean share in filter.corpus_prior)" if prior["mode"] == "em" and report["kept_uncorrected"] else "")
        raise KdgridError(f"--threshold {a.threshold}: the filter keeps no training pair; lower it{why}")
    with all_or_nothing(a.out_src, a.out_tgt, a.out_src_ids, a.out_tgt_ids, a.report):
        write_lines(a.out_src, [src[i] for i in rows])
        write_lines(a.out_tgt, [tgt[i] for i in rows])
        save_ids(a.out_src_ids, Ids.from_lists([src_ids[i] for i in rows]))
        save_ids(a.out_tgt_ids, Ids.from_lists([tgt_ids[i] for i in rows]))
        write_json(a.report, report)


# -- argument parsing -------------------------------------------------------------------------
VERBS = ("filter_labels", "filter_teacher", "filter_student", "filter_report", "filter_apply")


def add_verbs(verb) -> None:
    """Register the verbs with kdgrid.cli's `verb(name, fn, help)`."""
    p = verb("filter_labels", cmd_filter_labels, "labelled clean/noisy pairs from samples of train and valid")
    p.add_argument("--train", nargs=2, required=True, metavar=("SRC", "TGT"))
    p.add_argument("--valid", nargs=2, required=True, metavar=("SRC", "TGT"))
    p.add_argument("--train-noise", help="the corpus's injected-noise kind per train line: only clean rows are used")
    p.add_argument("--params", required=True, help='{"kinds": {kind: share}, "train_pairs", "valid_pairs", "seed"}')
    p.add_argument("--train-out", nargs=3, required=True, metavar=("SRC", "TGT", "LABELS"))
    p.add_argument("--valid-out", nargs=3, required=True, metavar=("SRC", "TGT", "LABELS"))
    p.add_argument("--info", required=True, help="JSON: kinds, classes, seed, pairs per split and class")

    p = verb("filter_teacher", cmd_filter_teacher, "the AT teacher's pair embeddings and a linear head per label set")
    for o in ("--model", "--vocab", "--labelled-info", "--embeddings", "--scores", "--params"):
        p.add_argument(o, required=True)
    p.add_argument("--train", nargs=3, required=True, metavar=("SRC", "TGT", "LABELS"))
    p.add_argument("--valid", nargs=3, required=True, metavar=("SRC", "TGT", "LABELS"))
    p.add_argument("--label-sets", nargs="+", required=True, choices=LABEL_SETS)
    p.add_argument("--heads", nargs="+", required=True, help="one head file per --label-sets entry")

    p = verb("filter_student", cmd_filter_student, "train a student pair classifier (labels, kd or lelp)")
    for o in ("--vocab", "--labelled-info", "--head", "--embeddings", "--out", "--scores", "--params"):
        p.add_argument(o, required=True)
    p.add_argument("--train", nargs=3, required=True, metavar=("SRC", "TGT", "LABELS"))
    p.add_argument("--valid", nargs=3, required=True, metavar=("SRC", "TGT", "LABELS"))
    p.add_argument("--method", required=True, choices=("labels", "kd", "lelp"))
    p.add_argument("--labels", required=True, choices=LABEL_SETS)
    p.add_argument("--seed", type=int, required=True)

    p = verb("filter_report", cmd_filter_report, "the classifier comparison table (mean ± std over seeds)")
    p.add_argument("--teacher-scores", nargs="+", required=True)
    p.add_argument("--scores", nargs="+", required=True)
    for o in ("--csv", "--md"):
        p.add_argument(o, required=True)
    p.add_argument("--params", default="{}", help='{"title", "corpus_prior", "threshold", "prior"}')
    p.add_argument("--applied", help="filter_apply's report: the filter's counts, shown below the table")

    p = verb("filter_apply", cmd_filter_apply, "drop the training pairs a student classifier rejects")
    for o in ("--model", "--vocab", "--train-src", "--train-tgt", "--train-src-ids", "--train-tgt-ids",
              "--out-src", "--out-tgt", "--out-src-ids", "--out-tgt-ids", "--report"):
        p.add_argument(o, required=True)
    p.add_argument("--threshold", type=float, required=True, help="keep a pair when P(clean) >= this")
    p.add_argument("--prior", choices=("em", "configured", "none"), default="configured",
                   help="P(clean) corrected to the corpus prior: --corpus-prior, estimated by EM, or uncorrected")
    p.add_argument("--corpus-prior", type=float, default=0.8,
                   help="the corpus's clean share, for --prior configured (default 0.8, filter.corpus_prior's)")
    p.add_argument("--train-noise", help="the injected-noise kind per line: counts kept/dropped per kind")
    p.add_argument("--max-tokens", type=int, default=4096)

