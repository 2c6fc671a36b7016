"""kdgrid beside its peers on this machine's CPU threads, on the same synthetic data and subwords:
fairseq (`fairseq-train`, `fairseq-generate`) and CTranslate2, each run beside its kdgrid
counterpart, the two alternating (kdgrid first in even repeats, the peer first in odd ones) so that
a change in the machine's load hits both; medians over the repeats, and kdgrid/peer ratios (> 1:
kdgrid better; for latency and memory, where lower is better, peer/kdgrid): the median of the
per-repeat ratios of each kdgrid run to the peer run beside it, with their range, since on a busy
machine the load can change more between repeats than between two neighbouring runs.

- training target tokens/s (eos included, for both; bos, which fairseq's NAT task prepends to
  targets, excluded) of the AT (fairseq `transformer`), the vanilla NAT
  (`nonautoregressive_transformer`, source-embedding copy as decoder input, as kdgrid's `nat`)
  and CMLM (`cmlm_transformer`): same size, max_tokens, dropout 0.1, label smoothing 0.1, Adam
  (0.9, 0.98), inverse-sqrt warm-up and number of updates; timed from the end of the first log
  interval (warm-up) to the end of the last update: kdgrid by a hook on its optimizer's step,
  fairseq by its own per-interval wps.
- decoding sentences/s at batch 64 (the test set) and latency at batch 1 (ms per sentence, the
  first --latency-sentences of it), cold (no untimed warm-up batch: fairseq-generate has none),
  timing the decoder calls only, as fairseq-generate's own "Translated N sentences ... in Xs"
  timer does (model loading, subword encoding and detokenization excluded: kdgrid's model.generate,
  CTranslate2's translate_batch; kdgrid's whole translate() time is in peers.json): AT beam 5 and
  greedy with kdgrid (torch) vs fairseq-generate, and kdgrid with its CTranslate2 backend (kdgrid's
  weights; its generate() includes its id/piece conversions) vs CTranslate2 on fairseq's weights
  (ct2-fairseq-converter, Translator.translate_batch with max_batch_size, patience 1); NAT one
  pass and CMLM 10 passes (length beam 1, no early stop) vs fairseq-generate --task
  translation_lev --iter-decode-max-iter 0 / 9 --iter-decode-force-max-iter.
- the peak RSS of every run: each measured run is its own subprocess, read with os.wait4.

Same work: every decoding row shows each side's mean output length (words) and BLEU against the
synthetic references (sacrebleu), every training row the target tokens per update. Both toolkits
read the same sentencepiece pieces (fairseq-preprocess --srcdict holds kdgrid's whole vocabulary,
--joined-dictionary). The decoding models (a few hundred updates, cached in the work dir) are
each toolkit's own, so their outputs differ as two trainings do; the CTranslate2 rows decode the
same weights as their kdgrid / fairseq counterparts. Differences that stay are printed with the
table.

    bench/.peers-venv/bin/python bench/peers.py [--quick] [--sizes 2+2 tiny] [--threads 2]
        [--max-tokens 2048] [--batches 64 1] [--repeats 3] [--parts train at nat] [--kinds at nat cmlm]

Defaults: the synthetic corpus with one target mode (8000 training pairs, BLEU against its single
reference), a joint 2000-piece BPE vocabulary, 40 updates per timed training run, 3 repeats: ~11-14
minutes on 2 busy cores once the decoding models exist; training those 6 models (300 updates each)
adds ~15-35 minutes to the first run. --quick (small data, 30-update models, one repeat): ~4 minutes.
`--parts train --kinds at` times the AT training row alone and trains no decoding model.

Work files (data, models, logs, peers.json with every run's numbers) go to bench/.peers-work/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from peers_runs import (
    AT_BEAMS,
    FAIRSEQ_ARCH,
    KDGRID_KIND,
    KIND_NAME,
    MAX_LEN_A,
    MAX_LEN_B,
    NAT_PASSES,
    REPO,
    SIZES,
    ct2_decode,
    decoding_models,
    fairseq_decode,
    fairseq_train,
    kdgrid_decode,
    kdgrid_train,
    prepare_data,
)

DIFFERENCES = [
    "the decoding models are each toolkit's own training (same data, settings and updates; other initial "
    "weights, batches and dropout draws), so their outputs differ as two trainings do; the CTranslate2 rows "
    "decode the very weights of their kdgrid / fairseq counterparts",
    "fairseq's NAT task (translation_lev) prepends bos to sources and targets: its NAT/CMLM encoder reads "
    "one more token per sentence and its decoder predicts bos + y + eos (kdgrid: y); the bos also counts in "
    "fairseq's max_tokens, so its NAT batches hold a few % fewer target tokens (tok/update)",
    "fairseq batches training sentences by its own sizes and seed, kdgrid by its own: same max_tokens, not "
    "the same batches (tokens/s normalises for it)",
    "kdgrid's training runs end with one validation (200 sentences) and a saved model file, outside the timed "
    "updates but inside their peak RSS; fairseq runs with --disable-validation --no-save",
    "kdgrid's CTranslate2 backend with ct2_search exact (the default) runs beam search with patience 2 "
    "(kdgrid.ct2.PATIENCE: CTranslate2 goes on until 2 x beam hypotheses have finished, so its outputs differ "
    "from kdgrid's torch search in ~5 of 1,000 sentences) and gives each sentence the result at its own length "
    "limit: one translate_batch call per batch, then one per distinct limit for the sentences whose search "
    "had not stopped two steps before their limit (kdgrid.ct2.Ct2Decoder._beam_once); with ct2_search fast, "
    "and CTranslate2 on fairseq's weights, patience 1 and one call per batch. The backend converts ids to "
    "pieces and back in its generate(), and its process holds torch (to load kdgrid's model file: ~200 MB of "
    "peak RSS); the torch model itself is freed once the CTranslate2 model is built",
    "AT length limit 1.2 x source + 10: fairseq per batch (longest source), kdgrid per sentence, CTranslate2 "
    "on fairseq's weights per call (longest test source); it matters only for hypotheses that reach it",
    "kdgrid's decoders never emit unk (nor NAT specials); fairseq-generate and CTranslate2-on-fairseq may",
    "the NAT length head: kdgrid's linear layer has a bias, fairseq's has none",
]



# -- the comparisons ----------------------------------------------------------------------------
def comparisons(data: Path, models: dict, size_name: str, threads: int, a, ct2_backend: bool) -> list[dict]:
    """Each row: what is measured, who against whom, the quantity (train | speed | latency) and
    the kdgrid and peer runs (functions of their output folder)."""
    size, rows = SIZES[size_name], []
    if "train" in a.parts:
        for kind in a.kinds:
            for mt in a.max_tokens:
                args = (kind, size, threads, mt, a.updates, a.log_every)
                rows.append({"what": f"train {KIND_NAME[kind]}: target tok/s, max_tokens {mt}", "quantity": "train",
                             "pair": f"kdgrid `{KDGRID_KIND[kind]}` vs fairseq `{FAIRSEQ_ARCH[kind]}`",
                             "kdgrid_run": lambda out, args=args: kdgrid_train(data, out, *args),
                             "peer_run": lambda out, args=args: fairseq_train(data, out, *args)})
    for batch in a.batches:
        split, quantity = ("lat", "latency") if batch == 1 else ("test", "speed")
        shown = "ms/sent at batch 1" if batch == 1 else f"sent/s at batch {batch}"
        if "at" in a.parts:
            for beam in AT_BEAMS:
                opts = {"method": "beam" if beam > 1 else "greedy", "beam": beam, "lenpen": 1.0,
                        "max_len_a": MAX_LEN_A, "max_len_b": MAX_LEN_B}
                run_args = (opts, batch, threads, split)
                what = f"AT {'beam 5' if beam > 1 else 'greedy'}: {shown}"
                rows.append({"what": what, "quantity": quantity, "pair": "kdgrid (torch) vs fairseq-generate",
                             "kdgrid_run": lambda out, r=run_args: kdgrid_decode(data, out, models["kdgrid-at"], *r),
                             "peer_run": lambda out, b=beam, r=run_args[1:]: fairseq_decode(
                                 data, out, models["fairseq-at"], "at", b, *r)})
                # the backend's beam search exact (kdgrid's output) and fast (CTranslate2's own
                # rule); greedy is one call per batch either way
                for search in (("exact", "fast") if beam > 1 else ("exact",)) if ct2_backend else ():
                    name = "kdgrid's CTranslate2 backend" + (f", ct2_search {search}," if beam > 1 else "")
                    rows.append({"what": what, "quantity": quantity,
                                 "pair": f"{name} vs CTranslate2 on fairseq's weights",
                                 "kdgrid_run": lambda out, r=run_args, s=search: kdgrid_decode(
                                     data, out, models["kdgrid-at"], *r, backend="ctranslate2", ct2_search=s),
                                 "peer_run": lambda out, b=beam, r=run_args[1:]: ct2_decode(
                                     data, out, models["ct2-fairseq-at"], b, *r)})
        if "nat" in a.parts:
            for kind in ("nat", "cmlm"):
                opts = {"length_beam": 1} | ({"max_iter": NAT_PASSES[kind] - 1, "adaptive": False}
                                             if kind == "cmlm" else {})
                run_args = (opts, batch, threads, split)
                passes = "1 pass" if kind == "nat" else f"{NAT_PASSES[kind]} passes"
                rows.append({"what": f"{KIND_NAME[kind]} {passes}: {shown}", "quantity": quantity,
                             "pair": "kdgrid vs fairseq-generate",
                             "kdgrid_run": lambda out, k=kind, r=run_args: kdgrid_decode(
                                 data, out, models[f"kdgrid-{k}"], *r),
                             "peer_run": lambda out, k=kind, r=run_args[1:]: fairseq_decode(
                                 data, out, models[f"fairseq-{k}"], k, 1, *r)})
    for row in rows:
        row["group"] = (f"{size_name}: {size['layers']}+{size['layers']} layers, d{size['d_model']}, ffn{size['ffn']}, "
                        f"{size['heads']} heads; {threads} threads")
    return rows


def summarise(result: dict, quantity: str, refs: list[str]) -> dict:
    """The measured value of one decoding run and its same-work numbers."""
    from kdgrid.metrics import bleu

    if quantity == "train":
        return result
    hyps = result.pop("hyps")
    n = len(hyps)
    value = 1000 * result["seconds"] / n if quantity == "latency" else n / result["seconds"]
    return {**result, "value": value, "words": statistics.mean(len(h.split()) for h in hyps),
            "bleu": bleu.score(hyps, refs[:n])["bleu"]}


# -- the table ----------------------------------------------------------------------------------
def number(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def paired(kdgrid: list[dict], peer: list[dict], key: str, lower_better: bool) -> str:
    """The median of the per-repeat ratios, each kdgrid run against the peer run beside it (a
    change of the machine's load between repeats cancels out), and their range."""
    ratios = sorted((p[key] / k[key]) if lower_better else (k[key] / p[key]) for k, p in zip(kdgrid, peer))
    spread = f" ({ratios[0]:.2f}-{ratios[-1]:.2f})" if len(ratios) > 1 else ""
    return f"{statistics.median(ratios):.2f}{spread}"


def table(rows: list[dict]) -> str:
    """One markdown table per model size and thread count; medians over the repeats."""
    lines = []
    for group in dict.fromkeys(row["group"] for row in rows):
        lines += ["", f"**{group}**", "",
                  "| measured | kdgrid vs peer | kdgrid | peer | ratio, >1: kdgrid better (range) "
                  "| same work: kdgrid vs peer |",
                  "| --- | --- | ---: | ---: | ---: | --- |"]
        for row in (r for r in rows if r["group"] == group):
            k, p = row["kdgrid"], row["peer_runs"]

            def med(runs, key):
                return statistics.median(r[key] for r in runs)

            km, pm = med(k, "value"), med(p, "value")
            lower_better = row["quantity"] == "latency"
            if row["quantity"] == "train":
                check = f"tok/update {med(k, 'tokens_per_update'):.0f} vs {med(p, 'tokens_per_update'):.0f}"
            else:
                check = (f"{med(k, 'words'):.2f} vs {med(p, 'words'):.2f} words/sent; "
                         f"BLEU {med(k, 'bleu'):.1f} vs {med(p, 'bleu'):.1f}; kdgrid's whole translate() "
                         f"{statistics.median(r['translate_seconds'] / r['seconds'] for r in k):.2f}x its generate()")
            what = row["what"] + (" (lower better; ratio peer/kdgrid)" if lower_better else "")
            lines.append(f"| {what} | {row['pair']} | {number(km)} | {number(pm)} | "
                         f"{paired(k, p, 'value', lower_better)} | {check} |")
            kr, pr = med(k, "rss_mb"), med(p, "rss_mb")
            lines.append(f"| ↳ peak RSS, MB (lower better; ratio peer/kdgrid) | | {kr:.0f} | {pr:.0f} | "
                         f"{paired(k, p, 'rss_mb', True)} | |")
    return "\n".join(lines)


def vocabularies(data: Path) -> str:
    from kdgrid.vocab import Vocab

    fairseq_dict = len((data / "bin" / "dict.src.txt").read_text().splitlines()) + 4  # + its 4 specials
    return f"vocabulary kdgrid {len(Vocab.load(data / 'spm.model'))}, fairseq {fairseq_dict}"


def versions() -> str:
    from importlib.metadata import version  # without importing fairseq here (its import logs)

    return ", ".join(f"{name} {version(package)}" for name, package in
                     (("torch", "torch"), ("fairseq", "fairseq-fixed"), ("ctranslate2", "ctranslate2")))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["2+2"],
                    help="2+2: 2+2 layers d256 ffn1024 4 heads; tiny: the paper's 3+3 of the same widths")
    ap.add_argument("--threads", nargs="+", type=int, default=[2], help="CPU threads given to both toolkits")
    ap.add_argument("--max-tokens", nargs="+", type=int, default=[2048], help="training batch budget(s)")
    ap.add_argument("--batches", nargs="+", type=int, default=[64, 1],
                    help="decoding batch sizes: 1 times latency on --latency-sentences, others sent/s on the test set")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parts", nargs="+", choices=["train", "at", "nat"], default=["train", "at", "nat"])
    ap.add_argument("--kinds", nargs="+", choices=["at", "nat", "cmlm"], default=["at", "nat", "cmlm"],
                    help="the models of the training rows (--parts train)")
    ap.add_argument("--updates", type=int, default=40, help="updates per timed training run")
    ap.add_argument("--log-every", type=int, default=10, help="log interval; the first is warm-up, untimed")
    ap.add_argument("--model-updates", type=int, default=300, help="updates of the (cached) decoding models")
    ap.add_argument("--train-sentences", type=int, default=8000)
    ap.add_argument("--test-sentences", type=int, default=500)
    ap.add_argument("--latency-sentences", type=int, default=50)
    ap.add_argument("--vocab-size", type=int, default=2000)
    ap.add_argument("--work", type=Path, default=REPO / "bench" / ".peers-work")
    ap.add_argument("--quick", action="store_true", help="a ~4 minute smoke run: small data, one repeat")
    a = ap.parse_args(argv)
    if a.quick:
        a.train_sentences, a.test_sentences, a.latency_sentences = 2000, 100, 10
        a.updates, a.log_every, a.model_updates, a.repeats = 20, 5, 30, 1
    if a.updates % a.log_every or a.updates < 2 * a.log_every:
        ap.error("--updates must be a multiple of --log-every, at least two intervals")
    start = time.perf_counter()
    try:  # kdgrid's CTranslate2 backend: its rows only where it imports
        import kdgrid.ct2  # noqa: F401

        ct2_backend = True
    except ImportError:
        ct2_backend = False
    a.work.mkdir(parents=True, exist_ok=True)
    print(f"# kdgrid vs peers ({versions()}); work files in {a.work}", flush=True)
    data = prepare_data(a.work, a)
    refs = {split: (data / f"{split}.tgt").read_text().splitlines() for split in ("test", "lat")}
    all_rows = []
    for size_name in a.sizes:
        # trained only for the decoding rows: `--parts train` needs none of them
        models = decoding_models(data, a.work, size_name, a) if {"at", "nat"} & set(a.parts) else {}
        for threads in a.threads:
            rows = comparisons(data, models, size_name, threads, a, ct2_backend)
            for row in rows:
                row["kdgrid"], row["peer_runs"] = [], []
            for repeat in range(a.repeats):
                print(f"  {size_name}, {threads} threads: repeat {repeat + 1}/{a.repeats} "
                      f"({time.perf_counter() - start:.0f}s)", flush=True)
                for number, row in enumerate(rows):
                    sides = [("kdgrid", row["kdgrid_run"]), ("peer_runs", row["peer_run"])]
                    for side, fn in sides if repeat % 2 == 0 else sides[::-1]:
                        out = a.work / "runs" / data.name / size_name / f"t{threads}" / f"{number:02d}-{side}"
                        split = "lat" if row["quantity"] == "latency" else "test"
                        row[side].append(summarise(fn(out / f"r{repeat}"), row["quantity"], refs[split]))
            all_rows += rows
    print()
    print(f"kdgrid vs peers on {a.train_sentences} synthetic training pairs, {a.test_sentences} test / "
          f"{a.latency_sentences} latency sentences, {vocabularies(data)}; {a.updates} updates per training "
          f"run (the first {a.log_every} untimed); medians of {a.repeats} alternating repeat(s); {versions()}")
    if not ct2_backend:
        print("(kdgrid.ct2 is not importable: the CTranslate2-backend rows are left out)")
    print()
    print(table(all_rows))
    print()
    print("Differences in work that remain:")
    for d in DIFFERENCES:
        print(f"- {d}")
    wall = time.perf_counter() - start
    raw = [{**{k: v for k, v in row.items() if not k.endswith("_run")},
            "ratio": paired(row["kdgrid"], row["peer_runs"], "value", row["quantity"] == "latency"),
            "rss_ratio": paired(row["kdgrid"], row["peer_runs"], "rss_mb", True)} for row in all_rows]
    (a.work / "peers.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "rows": raw,
                                                    "versions": versions(), "wall_seconds": wall}, indent=1))
    print(f"\nwall time of the bench: {wall / 60:.1f} min ({a.work / 'peers.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
