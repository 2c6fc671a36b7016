"""The measuring and reporting verbs of the CLI (align, data_metrics, language_mix, aggregate):
word alignments and data metrics of the training sets, and the grid's tables, plots and costs.
Registered with the others in kdgrid.cli."""

from __future__ import annotations

from kdgrid.errors import KdgridError, all_or_nothing, json_option, read_json, write_json

_json = json_option


def cmd_align(a) -> None:
    from kdgrid.metrics.align import align

    p = _json(a.params, "--params")
    with all_or_nothing(*(links for _, _, links in a.pair)):
        align([tuple(pair) for pair in a.pair], a.threads, p.get("n_samplers", 3), p.get("rel_iterations", 1.0))


def cmd_data_metrics(a) -> None:
    from kdgrid.metrics import bleu
    from kdgrid.metrics.complexity import Smoothing, data_metrics

    if bool(a.distilled) != bool(a.distilled_links):
        raise KdgridError("--distilled and --distilled-links go together")
    p = _json(a.params, "--params")
    f = p["faithfulness"]
    smoothing = Smoothing(f["smoothing"], f.get("floor", Smoothing.floor), f.get("alpha", Smoothing.alpha))
    out = {**_json(a.labels, "--labels"), **data_metrics(a.src, a.real, a.real_links, a.distilled,
                                                         a.distilled_links, smoothing)}
    if a.distilled:  # how close the teacher's translations are to the real targets
        b = bleu.streamed_bleu(a.distilled, a.real)
        out["bleu_vs_real"], out["bleu_signature"] = b["bleu"], b["bleu_signature"]
    write_json(a.out, out)


def cmd_language_mix(a) -> None:
    from kdgrid.metrics.language import LanguageModels, language_mix

    models = LanguageModels.train(a.train_tgt, a.train_lang)
    write_json(a.out, {**_json(a.labels, "--labels"), **language_mix(models, a.hyp)})


def _tests_markdown(chosen, g, test_set="the test set") -> str:
    from kdgrid import selection

    return selection.markdown(chosen, g, test_set) if chosen else ""


def _set_grids(a, build, choose, answer) -> dict:
    """{name: (grid, selection, answer)} of every named test set (--test-set NAME SRC REF): the
    grid built from that set's scores with the same valid scores (so the same choices), its
    copy-the-source baseline, paired tests and answer."""
    from kdgrid import test_sets
    from kdgrid.corpus import read_lines
    from kdgrid.metrics import bleu

    if len(a.set_hyps) != len(a.set_scores):
        raise KdgridError(f"--set-hyps names {len(a.set_hyps)} files for {len(a.set_scores)} --set-scores: "
                          "one per cell and set, in order")
    cells = test_sets.by_name([{**read_json(f), "hyp": h} for f, h in zip(a.set_scores, a.set_hyps)], "--set-scores")
    teachers = test_sets.by_name([read_json(f) for f in a.set_teacher_scores], "--set-teacher-scores")
    out = {}
    for name, src, ref in a.test_set:
        if name not in cells:
            raise KdgridError(f"--test-set {name}: no --set-scores labelled test_set {name!r}")
        g = build(cells[name], teachers.get(name, []))
        refs = [read_lines(ref)]
        g["copy_source"] = bleu.score(read_lines(src), refs)
        chosen = choose(g, refs)
        out[name] = (g, chosen, answer(g, chosen))
    return out


def _set_label(name: str) -> str:
    return "the test set" if name == "test" else name


def cmd_aggregate(a) -> None:
    from kdgrid import costs, grid, grid_section5, recommend, report
    from kdgrid.errors import atomic_output

    p = _json(a.params, "--params")
    runs = list(p.get("runs") or p["students"])  # a seeded grid's cells are its runs' (nat, nat.seed2, ...)
    found = costs.discover(p.get("costs", {}).get("patterns", []), runs, [*p["columns"], *p.get("column_replicas", {})],
                           p.get("costs", {}).get("teachers", []))
    job_list = costs.jobs(*map(list, zip(*found))) if found else []
    job_list += costs.reused_jobs(p.get("costs", {}).get("reused", []))  # share.store: products fetched
    cost = costs.table(job_list)
    if a.hyps and len(a.hyps) != len(a.scores):
        raise KdgridError(f"--hyps names {len(a.hyps)} files for {len(a.scores)} --scores: one per cell, in order")
    cells = [{**read_json(f), **({"hyp": h} if h else {})} for f, h in zip(a.scores, a.hyps or [None] * len(a.scores))]
    data_metrics, teacher_metrics = [read_json(f) for f in a.data_metrics], [read_json(f) for f in a.teacher_metrics]
    valid_cells = [read_json(f) for f in a.valid_scores]

    def build(cells, teacher_scores, languages=()):
        return grid.build(cells, teacher_scores, p["students"], p["columns"], data_metrics=data_metrics,
                          teacher_metrics=teacher_metrics, languages=languages, runs=p.get("runs"),
                          valid_cells=valid_cells, column_replicas=p.get("column_replicas"))

    g = build(cells, [read_json(f) for f in a.teacher_scores], [read_json(f) for f in a.languages])
    g["test_name"] = p.get("test_name", "test")
    if a.test_src:  # the trivial baseline every student must beat: output the source unchanged
        from kdgrid.corpus import read_lines
        from kdgrid.metrics import bleu

        src = read_lines(a.test_src)
        g["copy_source"] = bleu.score(src, [read_lines(r) for r in a.test_refs])
    from kdgrid import selection, test_sets
    from kdgrid.corpus import read_lines

    sig = p.get("significance", {})

    def choose(g_, refs):  # choose on valid, decide ties by paired tests on the test hypotheses
        return selection.analyse(g_, refs, p.get("select_metric", "bleu"), sig.get("alpha", selection.ALPHA),
                                 sig.get("resamples", selection.RESAMPLES), sig.get("test", "bs"))

    column_cost = costs.column_cost(job_list, p.get("costs", {}).get("ensembles"))

    def answer(g_, chosen_):
        return recommend.answer(g_, p.get("tie_bleu", recommend.TIE_BLEU), chosen_, column_cost,
                                p.get("c_tolerance", recommend.C_TOLERANCE))

    chosen = choose(g, [read_lines(r) for r in a.test_refs]) if a.test_refs and a.hyps else None
    ans = answer(g, chosen)
    sets = _set_grids(a, build, choose, answer) if a.test_set else {}
    if sets:  # the answer on every test set, and whether it agrees across them
        ans["test_sets"] = {name: {"copy_source_bleu": s_ans["copy_source_bleu"], "students": s_ans["students"],
                                   "selection": s_ans["selection"]} for name, (_, _, s_ans) in sets.items()}
        ans["agreement"] = test_sets.agreement({g["test_name"]: ans, **{n: x[2] for n, x in sets.items()}})
    if a.student_pngs and len(a.student_pngs) != len(g["students"]):
        raise KdgridError(f"--student-pngs names {len(a.student_pngs)} files for {len(g['students'])} students "
                          f"({', '.join(g['students'])}): give one per student, in that order")
    outputs = (a.csv, a.long_csv, a.teachers_csv, a.data_csv, a.costs_csv, a.md, a.png, a.complexity_png,
               a.complexity_pdf, a.languages_png, a.recommendations_csv, a.recommendations_json, *a.student_pngs)
    with all_or_nothing(*outputs):
        grid.write_csv(g, a.csv)
        grid.write_long_csv(g, a.long_csv, {n: sg for n, (sg, _, _) in sets.items()})
        grid.write_teachers_csv(g, a.teachers_csv, p.get("teacher_sizes"))
        grid.write_data_csv(g, a.data_csv)
        costs.write_csv(cost, a.costs_csv)
        with atomic_output(a.md) as f:
            f.write(grid.markdown(g, f"kdgrid grid: {p['corpus']}", ans)
                    + grid_section5.markdown(g, p.get("columns_info", {}))
                    + "\n" + recommend.markdown(ans) + _tests_markdown(chosen, g, _set_label(g["test_name"]))
                    + "".join(test_sets.block_markdown(n, sg, sa) + _tests_markdown(sc, sg, n)
                              for n, (sg, sc, sa) in sets.items())
                    + test_sets.agreement_markdown(ans.get("agreement", {}))
                    + "\n" + costs.markdown(cost))
        report.heatmap(g, a.png, title=f"{p['corpus']}: student test BLEU", answer=ans)
        report.bleu_vs_complexity(g, a.complexity_png, title=f"{p['corpus']}: student BLEU against C(d)",
                                  pdf=a.complexity_pdf, answer=ans)
        if a.recommendations_csv:
            recommend.write_csv(ans, a.recommendations_csv)
        if a.recommendations_json:
            recommend.write_json(ans, a.recommendations_json)
        for entry, png in zip(ans["students"], a.student_pngs):
            report.student_complexity(entry, png, title=f"{p['corpus']}: {entry['student']}, BLEU against C(d)",
                                      tie_bleu=ans["tie_bleu"])
        if a.languages_png:
            report.language_mix(g, a.languages_png, title=f"{p['corpus']}: p(language | output)")
