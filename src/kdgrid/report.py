"""Pictures of the grid (matplotlib, no display needed)."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kdgrid.errors import atomic_output  # noqa: E402


def heatmap(grid: dict, path, metric: str = "bleu", title: str = "", answer=None) -> None:
    """Rows students, columns training data. With the `recommend.answer` (BLEU only): a cell that
    does not beat copying the source is marked †, the recommended set of each row framed, and a
    column the paired test cannot tell from the chosen one marked ≈ (dashed frame)."""
    students, cols = grid["students"], grid["columns"]
    below, best, tied = set(), {}, set()
    if answer and metric == "bleu":
        for a in answer["students"]:
            below |= {(a["student"], p["data"]) for p in a["points"] if p["beats_copy"] is False}
            best[a["student"]] = a.get("recommended") or a["best"]
            tied |= {(a["student"], c) for c in [a["best"], *a.get("tied", [])] if a.get("tied")}
    values = np.array([[np.nan if grid["cells"][s][c] is None else grid["cells"][s][c][metric]
                        for c in cols] for s in students], dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(cols), max(2.8, 1.6 + 0.6 * len(students))))
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(cols)), labels=cols, rotation=30, ha="right")
    ax.set_yticks(range(len(students)), labels=students)
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(len(students)):
        for j in range(len(cols)):
            v = values[i, j]
            mark = (" ≈" if (students[i], cols[j]) in tied else "") + (" †" if (students[i], cols[j]) in below else "")
            ax.text(j, i, "—" if np.isnan(v) else f"{v:.1f}{mark}", ha="center", va="center",
                    color="black" if np.isnan(v) or v > middle else "white", fontsize=9)
            if best.get(students[i]) == cols[j]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
            elif (students[i], cols[j]) in tied:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1,
                                           linestyle="--"))
    fig.colorbar(im, ax=ax, label=f"test {metric.upper()}")
    if answer and metric == "bleu":
        note = "red frame: a student's recommended set" + (
            "; ≈ dashed: the choice on valid and the columns tied with it (paired test)" if tied else "")
        if answer["copy_source_bleu"] is not None:
            note = (f"† does not beat copying the source ({answer['copy_source_bleu']:.2f} BLEU) by "
                    f"{answer['tie_bleu']:g}; " + note)
        ax.set_xlabel(note, fontsize=8)
    ax.set_title(title or f"student {metric.upper()} by training data")
    fig.tight_layout()
    with atomic_output(path, "path") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _copy_line(ax, copy, tie) -> None:
    """The copy-the-source baseline as a dashed line, with the band a score must clear to beat it."""
    if copy is None:
        return
    ax.axhline(copy, color="grey", linestyle="--", linewidth=1)
    ax.axhspan(copy, copy + tie, color="grey", alpha=0.12, linewidth=0)
    ax.annotate(f"copy the source ({copy:.2f})", (0.01, copy), xycoords=("axes fraction", "data"),
                textcoords="offset points", xytext=(0, 3), fontsize=7, color="dimgrey")


def _save(fig, path, pdf=None) -> None:
    with atomic_output(path, "path") as tmp:
        fig.savefig(tmp, dpi=150, format="png")
    if pdf:
        with atomic_output(pdf, "path") as tmp:
            fig.savefig(tmp, format="pdf")
    plt.close(fig)


def bleu_vs_complexity(grid: dict, path, title: str = "", pdf=None, answer=None) -> None:
    """Student BLEU against the complexity C(d) of its training data, one line per student (PNG,
    and optionally a vector PDF for a paper). With the `recommend.answer`: each student's
    recommended set starred, and the copy-the-source baseline drawn."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    labelled = set()
    per_student = {a["student"]: a for a in (answer or {}).get("students", [])}
    for k, s in enumerate(grid["students"]):
        points = sorted((grid["data"][c]["complexity"], grid["cells"][s][c]["bleu"], c)
                        for c in grid["columns"] if grid["data"].get(c) and grid["cells"][s][c])
        if not points:
            continue
        xs, ys, names = zip(*points)
        a = per_student.get(s)
        rec = None if a is None else (a.get("recommended") or a["best"])
        label = s if a is None else f"{s} (recommended: {rec})" if rec else f"{s} (no recommendation)"
        ax.plot(xs, ys, marker="o", label=label, color=f"C{k}")
        for x, y, name in points:
            if name == "raw":  # the undistilled data: an open marker
                ax.plot([x], [y], marker="o", markersize=11, markerfacecolor="none", color=f"C{k}")
            if a is not None and name == rec:  # the recommended set: a star
                ax.plot([x], [y], marker="*", markersize=16, color=f"C{k}", markeredgecolor="black", zorder=5)
            if name not in labelled:  # label each column once, right of its first point
                labelled.add(name)
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(7, 0), va="center", fontsize=7)
    if answer:
        _copy_line(ax, answer["copy_source_bleu"], answer["tie_bleu"])
    ax.set_xlabel("complexity C(d) of the training data (nats)")
    ax.set_ylabel("test BLEU")
    ax.set_title(title or "student BLEU against data complexity")
    ax.grid(alpha=0.3)
    if grid["students"]:
        ax.legend(title="student", fontsize=8)
    fig.tight_layout()
    _save(fig, path, pdf)


def student_complexity(a: dict, path, title: str = "", tie_bleu: float = 0.5) -> None:
    """One student (an entry of `recommend.answer`): its BLEU on every column against the
    column's C(d), the recommended set starred, the runner-up ringed, the copy-the-source baseline,
    and the verdict (recommendation, tie, or none) written on the figure."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    pts = [p for p in a["points"] if p["bleu"] is not None and p["complexity"] is not None]
    if pts:
        ax.plot([p["complexity"] for p in pts], [p["bleu"] for p in pts], marker="o", color="C0")
    for p in pts:
        x, y = p["complexity"], p["bleu"]
        if p["data"] == "raw":
            ax.plot([x], [y], marker="o", markersize=11, markerfacecolor="none", color="C0")
        if p["data"] == (a.get("recommended") or a["best"]):
            ax.plot([x], [y], marker="*", markersize=18, color="C1", markeredgecolor="black", zorder=5)
        if p["data"] == a["runner_up"]:
            ax.plot([x], [y], marker="o", markersize=13, markerfacecolor="none", color="C1", zorder=4)
        ax.annotate(p["data"], (x, y), textcoords="offset points", xytext=(7, 0), va="center", fontsize=7)
    _copy_line(ax, a["copy_source_bleu"], tie_bleu)
    verdict = a["reason"]
    if a["status"] in ("clear", "tie", "disagree"):
        rec = a.get("recommended") or a["best"]
        bleu = next((q["bleu"] for q in a["points"] if q["data"] == rec), a["best_bleu"])
        verdict = (f"recommended: {rec} (BLEU {bleu:.2f}" + (", a tie" if a["tie"] else "")
                   + f"): {verdict}")
    unplotted = [p["data"] for p in a["points"] if p["bleu"] is None or p["complexity"] is None]
    if unplotted:
        verdict += f"\nnot plotted (no score or no C(d)): {', '.join(unplotted)}"
    fig.suptitle(title or f"{a['student']}: BLEU against C(d)", fontsize=11)
    ax.set_title("\n".join(textwrap.fill(line, 100) for line in verdict.split("\n")), fontsize=7, loc="left")
    ax.set_xlabel("complexity C(d) of the training data (nats)")
    ax.set_ylabel("test BLEU")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def language_mix(grid: dict, path, title: str = "") -> None:
    """For each output set (rows) and language (columns): the distribution of p(l | y) over
    test sentences. Mass at 0 and 1 means one language per sentence; mass between, mixing."""
    sets = grid["languages"]
    langs = sets[0]["languages"]
    fig, axes = plt.subplots(len(sets), len(langs), figsize=(2.4 * len(langs), 1.3 * len(sets) + 0.8),
                             sharex=True, squeeze=False)
    bins = np.linspace(0, 1, 21)
    for i, m in enumerate(sets):
        p = np.array(m["p"]) if m["p"] else np.zeros((0, len(langs)))
        for k, lang in enumerate(langs):
            ax = axes[i][k]
            ax.hist(p[:, k], bins=bins, color=f"C{k}")
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"p({lang} | y)", fontsize=9)
        axes[i][0].set_ylabel(m["output"], rotation=0, ha="right", va="center", fontsize=8)
    for k in range(len(langs)):
        axes[-1][k].set_xlabel("p(l | y) of a test sentence", fontsize=8)
    fig.suptitle(title or "p(language | output) over test sentences")
    fig.tight_layout()
    with atomic_output(path, "path") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
