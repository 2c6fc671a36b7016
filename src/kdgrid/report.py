"""Pictures of the grid (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kdgrid.errors import atomic_output  # noqa: E402


def heatmap(grid: dict, path, metric: str = "bleu", title: str = "") -> None:
    students, cols = grid["students"], grid["columns"]
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
            ax.text(j, i, "—" if np.isnan(v) else f"{v:.1f}", ha="center", va="center",
                    color="black" if np.isnan(v) or v > middle else "white", fontsize=9)
    fig.colorbar(im, ax=ax, label=f"test {metric.upper()}")
    ax.set_title(title or f"student {metric.upper()} by training data")
    fig.tight_layout()
    with atomic_output(path, "path") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def bleu_vs_complexity(grid: dict, path, title: str = "", pdf=None) -> None:
    """Student BLEU against the complexity C(d) of its training data, one line per student
    (PNG, and optionally a vector PDF for a paper)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    labelled = set()
    for k, s in enumerate(grid["students"]):
        points = sorted((grid["data"][c]["complexity"], grid["cells"][s][c]["bleu"], c)
                        for c in grid["columns"] if grid["data"].get(c) and grid["cells"][s][c])
        if not points:
            continue
        xs, ys, names = zip(*points)
        ax.plot(xs, ys, marker="o", label=s, color=f"C{k}")
        for x, y, name in points:
            if name == "raw":  # the undistilled data: an open marker
                ax.plot([x], [y], marker="o", markersize=11, markerfacecolor="none", color=f"C{k}")
            if name not in labelled:  # label each column once, right of its first point
                labelled.add(name)
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(7, 0), va="center", fontsize=7)
    ax.set_xlabel("complexity C(d) of the training data (nats)")
    ax.set_ylabel("test BLEU")
    ax.set_title(title or "student BLEU against data complexity")
    ax.grid(alpha=0.3)
    if grid["students"]:
        ax.legend(title="student")
    fig.tight_layout()
    with atomic_output(path, "path") as tmp:
        fig.savefig(tmp, dpi=150, format="png")
    if pdf:
        with atomic_output(pdf, "path") as tmp:
            fig.savefig(tmp, format="pdf")
    plt.close(fig)


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
