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
