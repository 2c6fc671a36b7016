"""The gather step of distillation: check the shards a teacher's distill jobs wrote and join them.
No torch here: a gather job only reads and writes text."""

from __future__ import annotations

from pathlib import Path

from kdgrid.corpus import iter_lines, write_lines
from kdgrid.errors import KdgridError


def gather(src, shard_paths: list, out, count: int | None = None) -> None:
    """Join the shards in numeric order (shard 10 after shard 9), after checking that each of
    0..N-1 is there exactly once and that together they have as many lines as `src`."""
    numbered = {}
    for path in shard_paths:
        stem = Path(path).name.split(".")[0]
        if not stem.isdigit():
            raise KdgridError(f"{path}: a shard file must be named <shard number>.tgt")
        if int(stem) in numbered:
            raise KdgridError(f"shard {int(stem)} given twice: {numbered[int(stem)]} and {path}")
        numbered[int(stem)] = path
    n = len(numbered) if count is None else count
    missing, extra = sorted(set(range(n)) - set(numbered)), sorted(set(numbered) - set(range(n)))
    if missing or extra:
        raise KdgridError(f"expected shards 0..{n - 1}: missing {missing or 'none'}, unexpected "
                          f"{extra or 'none'}; rerun the distill jobs of the missing shards")
    ordered = [numbered[k] for k in range(n)]
    expected = sum(1 for _ in iter_lines(src))
    counts = [sum(1 for _ in iter_lines(path)) for path in ordered]
    wanted = [(k + 1) * expected // n - k * expected // n for k in range(n)]  # as distill_shard cuts
    if counts != wanted:
        shown = ", ".join(f"{path}: {c} (expected {w})" for path, c, w in zip(ordered, counts, wanted)
                          if c != w)
        raise KdgridError(f"the {n} shards hold {sum(counts)} lines but {src} has {expected} "
                          f"({shown}); rerun the distill jobs of those shards")
    write_lines(out, (line for path in ordered for line in iter_lines(path)))
