"""The shared store (share.store, kdgrid.store, workflow/rules/share.smk): entries put and fetched
by their recipe's key; a second grid with the same recipe in another results folder takes the
teacher, the distilled set and the alignments from it and makes none of them again."""

from __future__ import annotations

import json
import os
import shlex
import shutil

import pytest
from conftest import TOY, job_counts, snakemake, write_config
from test_filter_workflow import SMALL_FILTER
from test_workflow import rule_commands

from kdgrid import cli, costs, store
from kdgrid.errors import KdgridError

RECIPE = {"model": {"d_model": 32}, "train": {"seed": 1}, "data": {"corpus": {"synthetic": {"seed": 3}}}}


def _put(tmp_path, recipe=RECIPE, text="weights", code="source:x", jobs=None):
    f = tmp_path / "model.pt"
    f.write_text(text)
    k = store.key("teacher", recipe, code)
    entry = store.put(tmp_path / "store", "teacher", k, {"model.pt": f}, recipe, code,
                      jobs or [{"rule": "train_teacher", "wall": 10.0, "cpu": 18.0, "rss": 300.0}], {"results": "a"})
    return k, entry


def test_put_then_fetch_gives_the_same_bytes_and_the_record(tmp_path):
    k, entry = _put(tmp_path)
    assert store.has(tmp_path / "store", "teacher", k)
    out = tmp_path / "other" / "teachers" / "t" / "model.pt"
    got = store.fetch(tmp_path / "store", "teacher", k, {"model.pt": out})
    assert out.read_text() == "weights" and got["recipe"] == RECIPE and got["jobs"][0]["cpu"] == 18.0
    assert got["files"]["model.pt"] == store.file_sha256(out) == entry["files"]["model.pt"]


def test_the_key_changes_with_the_recipe_the_kind_and_the_code():
    k = store.key("teacher", RECIPE, "source:x")
    assert k == store.key("teacher", json.loads(json.dumps(RECIPE)), "source:x")  # canonical: order-free
    assert k != store.key("teacher", {**RECIPE, "train": {"seed": 2}}, "source:x")
    assert k != store.key("distilled", RECIPE, "source:x")
    assert k != store.key("teacher", RECIPE, "source:y")


def test_code_fingerprints():
    src = store.code_fingerprint("source")
    assert src.startswith("source:") and src == store.code_fingerprint("source") and len(src) == 7 + 64
    assert store.code_fingerprint("version").startswith("version:")
    with pytest.raises(KdgridError, match="share.code"):
        store.code_fingerprint("git")


def test_a_product_is_stored_only_if_its_jobs_ran_the_code_its_key_names(tmp_path, capsys):
    code = store.code_fingerprint("source")
    log = tmp_path / "train.log"
    log.write_text("training...\n")
    assert "before kdgrid recorded its code" in store.made_by_code([log], code)
    log.write_text(f"{store.CODE_LINE} source:old version:0.0\n{store.code_line()}\n")  # the last run's line counts
    assert store.made_by_code([log], code) is None
    assert store.made_by_code([log], store.code_fingerprint("version")) is None
    assert "made by other code" in store.made_by_code([log], "source:other")
    assert "no log" in store.made_by_code([tmp_path / "gone.log"], code)

    model = tmp_path / "model.pt"
    model.write_text("weights")
    bench = tmp_path / "train.tsv"
    bench.write_text("s\th:m:s\tmax_rss\tcpu_time\n12.5\t0:00:12\t300\t20.0\n")

    def put(code_):
        rec = tmp_path / "put.json"
        assert cli.main(["store_put", "--store", str(tmp_path / "st"), "--kind", "teacher", "--key", "k" * 64,
                         "--recipe", "{}", "--code", code_, "--files", f"model.pt={model}",
                         "--job", "train_teacher", str(bench), str(log), "--record", str(rec)]) == 0
        return json.loads(rec.read_text())

    refused = put("source:other")
    assert refused["stored"] is False and "made by other code" in refused["why"]
    assert "not stored" in capsys.readouterr().err and not store.has(tmp_path / "st", "teacher", "k" * 64)
    stored = put(code)
    assert stored["stored"] is True and stored["jobs"] == [{"rule": "train_teacher", "wall": 12.5, "cpu": 20.0,
                                                            "rss": 300.0, "gpus": 0}]
    assert store.has(tmp_path / "st", "teacher", "k" * 64)


def test_every_product_making_verb_logs_its_code(tmp_path, capsys):
    assert set(store.MAKER_VERBS) <= set(cli.VERBS)
    # a verb that makes a product (align: eflomal on a two-line pair) ends its log with the code line
    src, tgt = tmp_path / "s", tmp_path / "t"
    src.write_text("a b\nc d\n")
    tgt.write_text("x y\nz w\n")
    assert cli.main(["align", "--pair", str(src), str(tgt), str(tmp_path / "links"), "--params",
                     json.dumps({"n_samplers": 1})]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == store.code_line()


def test_a_set_is_taken_only_by_a_grid_with_the_sources_it_was_made_from(tmp_path, capsys):
    src, other = tmp_path / "train.src", tmp_path / "other.src"
    src.write_text("a b\n")
    other.write_text("c d\n")
    text = tmp_path / "train.tgt"
    text.write_text("x y\n")
    k = store.key("distilled", RECIPE, "source:x")
    store.put(tmp_path / "st", "distilled", k, {"train.tgt": text}, RECIPE, "source:x", [], {},
              {"train.src": store.file_sha256(src)})

    def fetch(check):
        return cli.main(["store_fetch", "--store", str(tmp_path / "st"), "--kind", "distilled", "--key", k, "--files",
                         f"train.tgt={tmp_path / 'out.tgt'}", "--check", f"train.src={check}", "--record",
                         str(tmp_path / "rec.json")])

    assert fetch(other) == 2 and "differs from the train.src" in capsys.readouterr().err
    assert not (tmp_path / "out.tgt").exists()
    assert fetch(src) == 0 and (tmp_path / "out.tgt").read_text() == "x y\n"


def test_an_unfinished_entry_is_not_seen_and_a_finished_one_is_kept(tmp_path):
    k = store.key("teacher", RECIPE, "source:x")
    (store.entry_dir(tmp_path / "store", "teacher", k)).mkdir(parents=True)  # no entry.json: a put that died
    assert not store.has(tmp_path / "store", "teacher", k)
    with pytest.raises(KdgridError, match="no finished entry"):
        store.fetch(tmp_path / "store", "teacher", k, {"model.pt": tmp_path / "x.pt"})
    shutil.rmtree(store.entry_dir(tmp_path / "store", "teacher", k))
    _put(tmp_path, text="first")
    _, again = _put(tmp_path, text="second")  # another grid finishing the same recipe later
    assert "kept" in again
    store.fetch(tmp_path / "store", "teacher", k, {"model.pt": tmp_path / "x.pt"})
    assert (tmp_path / "x.pt").read_text() == "first"


def test_a_damaged_entry_is_refused(tmp_path):
    k, _ = _put(tmp_path)
    stored = store.entry_dir(tmp_path / "store", "teacher", k) / "model.pt"
    assert not os.access(stored, os.W_OK) or os.geteuid() == 0  # entries are read-only
    stored.chmod(0o644)
    stored.write_text("changed")
    with pytest.raises(KdgridError, match="sha256 differs"):
        store.fetch(tmp_path / "store", "teacher", k, {"model.pt": tmp_path / "x.pt"})
    assert not (tmp_path / "x.pt").exists()


def test_corpus_hashes_are_remembered_per_path_size_and_mtime(tmp_path):
    f = tmp_path / "train.en"
    f.write_text("a b c\n")
    memo = tmp_path / "hashes"
    first = store.corpus_file_sha256(f, memo)
    assert first == store.file_sha256(f) and len(list(memo.iterdir())) == 1
    (next(memo.iterdir())).write_text("remembered\n")  # the memo is read, not the file
    assert store.corpus_file_sha256(f, memo) == "remembered"
    f.write_text("a b c d\n")  # another size: hashed again
    assert store.corpus_file_sha256(f, memo) == store.file_sha256(f)


def test_reused_jobs_are_charged_to_their_scope_and_counted_apart(tmp_path):
    record = tmp_path / "teacher.t.json"
    record.write_text(json.dumps({"jobs": [{"rule": "train_teacher", "wall": 100.0, "cpu": 180.0, "rss": 300.0}]}))
    reused = costs.reused_jobs([{"record": str(record), "scope": "teacher/t"},
                                {"record": str(tmp_path / "gone.json"), "scope": "data/t.beam"}])
    assert [(j["scope"], j["teacher"], j["rule"]) for j in reused] == [("teacher", "t", "train_teacher" + costs.REUSED)]
    here = {"scope": "data", "rule": "distill", "data": "t.beam", "wall": 50.0, "cpu": 72.0, "rss": 200.0, "gpus": 0}
    rows = costs.table([here, *reused])
    by_scope = {r["scope"]: r for r in rows}
    assert by_scope["total"]["cpu_seconds"] == 72.0 and by_scope["reused"]["cpu_seconds"] == 180.0
    assert costs.column_cost([here, *reused])("t.beam") == pytest.approx((72.0 + 180.0) / 3600)
    assert "**reused from the store**" in costs.markdown(rows)
    with pytest.raises(KdgridError, match="scope"):
        costs.reused_jobs([{"record": str(record), "scope": "teacher"}])


# -- two grids through the workflow ----------------------------------------------------------------
SHARED_TARGETS = ["results/{name}/teachers/toy/model.pt", "results/{name}/distill/toy.beam/data_metrics.json",
                  "results/{name}/data/data_metrics.json"]
MADE = ("train_teacher", "distill", "gather", "align_distilled", "align_raw")


@pytest.mark.slow
def test_a_second_grid_takes_the_first_grids_products(tmp_path, capsys):
    """Grid a (results/toy) makes a teacher, its beam set and the alignments and puts them in the
    store; grid b (another corpus name: results/toyb) plans none of those jobs, fetches the same
    bytes, and charges them their recorded cost; rerun, b has nothing to do; a, whose files are
    gone, takes its own back from the store."""
    st = tmp_path / "store"
    cfg = {"grid": {"methods": ["beam"]}, "share": {"store": str(st)}}
    a = write_config(tmp_path / "a.yaml", TOY, **cfg)
    b = write_config(tmp_path / "b.yaml", TOY, corpus={"name": "toyb"}, **cfg)
    wa, wb = tmp_path / "a", tmp_path / "b"
    puts = [f"results/toy/store/put/{p}.json" for p in ("teacher.toy", "distilled.toy.beam", "alignment.toy.beam",
                                                        "alignment.raw")]
    snakemake(wa, "--cores", "1", *[t.format(name="toy") for t in SHARED_TARGETS], *puts, configfile=a)
    assert {p.parent.name for p in st.glob("*/*/entry.json")} and len(list(st.glob("*/*/entry.json"))) == 4

    targets_b = [t.format(name="toyb") for t in SHARED_TARGETS]
    dry = snakemake(wb, "-n", "-p", "--cores", "1", *targets_b, configfile=b).stdout
    plan = job_counts(dry)
    assert not set(plan) & set(MADE), plan
    _check_commands(dry)
    assert {r: plan.get(r) for r in ("fetch_teacher", "fetch_distilled", "fetch_alignment", "fetch_raw_alignment")} \
        == dict.fromkeys(("fetch_teacher", "fetch_distilled", "fetch_alignment", "fetch_raw_alignment"), 1)
    snakemake(wb, "--cores", "1", *targets_b, configfile=b)
    for rel in ("teachers/toy/model.pt", "distill/toy.beam/train.tgt", "distill/toy.beam/align/distilled.links",
                "data/align/train.links"):
        assert (wb / "results/toyb" / rel).read_bytes() == (wa / "results/toy" / rel).read_bytes(), rel
    record = json.loads((wb / "results/toyb/store/fetched/teacher.toy.json").read_text())
    assert [j["rule"] for j in record["jobs"]] == ["train_teacher"] and record["origin"]["results"] == "results/toy"
    assert json.loads((wb / "results/toyb/distill/toy.beam/data_metrics.json").read_text()) == \
        json.loads((wa / "results/toy/distill/toy.beam/data_metrics.json").read_text())

    # a teacher is fetched only into a grid whose vocabulary is the one it was trained with
    other_vocab = tmp_path / "other.spm"
    other_vocab.write_bytes(b"another sentencepiece model")
    key = record["key"]
    code = cli.main(["store_fetch", "--store", str(st), "--kind", "teacher", "--key", key, "--files",
                     f"model.pt={tmp_path / 'x' / 'model.pt'}", "--vocab", str(other_vocab), "--record",
                     str(tmp_path / "x" / "record.json")])
    assert code == 2 and "another vocabulary" in capsys.readouterr().err
    assert not (tmp_path / "x" / "model.pt").exists()

    again = snakemake(wb, "-n", "--cores", "1", *targets_b, configfile=b)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-2000:]

    # another seed is another recipe: trained, not fetched
    c = write_config(tmp_path / "c.yaml", TOY, corpus={"name": "toyc"}, teacher={"train": {"seed": 2}}, **cfg)
    plan = job_counts(snakemake(tmp_path / "c", "-n", "--cores", "1", "results/toyc/teachers/toy/model.pt",
                                configfile=c).stdout)
    assert plan.get("train_teacher") == 1 and "fetch_teacher" not in plan

    # a new set of grid a is stored only if its teacher's training ran the same code: its put reads that log too
    a2 = write_config(tmp_path / "a2.yaml", TOY, grid={"methods": ["beam", "greedy"]}, share=cfg["share"])
    puts = [c for c in rule_commands(snakemake(wa, "-n", "-p", "--cores", "1", configfile=a2).stdout)["store_put"]
            if "distilled.toy.greedy" in c or "--kind distilled" in c]
    assert puts and all("--code-logs results/toy/logs/train_teacher/toy.log" in c for c in puts), puts

    # the corpus filter's own teacher is a grid teacher's recipe (on the unfiltered pair): fetched too
    f = write_config(tmp_path / "f.yaml", TOY, corpus={"name": "toyf"}, filter=SMALL_FILTER, **cfg)
    dry = snakemake(tmp_path / "f", "-n", "-p", "--cores", "1", configfile=f).stdout
    plan = job_counts(dry)
    assert plan.get("fetch_filter_teacher") == 1 and plan.get("fetch_teacher") == 1, plan
    assert "train_filter_teacher" not in plan and "train_teacher" not in plan
    _check_commands(dry)

    os.remove(wa / "results/toy/teachers/toy/model.pt")
    plan = job_counts(snakemake(wa, "-n", "--cores", "1", "results/toy/teachers/toy/model.pt", configfile=a).stdout)
    assert plan.get("fetch_teacher") == 1 and "train_teacher" not in plan


def _check_commands(dry_run: str) -> None:
    """The store rules' commands call kdgrid verbs with options the CLI accepts."""
    commands = rule_commands(dry_run)
    seen = [r for r in commands if r.startswith(("fetch_", "store_"))]
    assert seen
    for rule in seen:
        for cmd in commands[rule]:
            words = shlex.split(cmd)
            assert words[0] == "kdgrid" and words[1] in cli.VERBS, (rule, cmd)
            cli.parser().parse_args(words[1: words.index("2>")])
