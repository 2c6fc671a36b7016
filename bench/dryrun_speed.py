"""How long Snakemake takes to plan the grid: the paper's full grid (configs/wmt14.yaml: 4 teachers
x 4 methods x 6 students + raw, 8 distillation shards), the same with the section-5 methods
(interpolate, Born-Again round 2 on top of the beam column, and a base-sized 3-expert MoE teacher
with the moe method distilling with one expert),
and grids 4x and 16x the paper's size (more teacher sizes), each a real `snakemake -n` from the
command line, in a scratch directory.

    python bench/dryrun_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def grid_config(scale: int, path: Path, section5: bool = False) -> Path:
    """configs/wmt14.yaml with `scale` times as many teachers (copies of the four sizes); with
    `section5`, plus the methods interpolate, ban (2 rounds, round 1 = beam) and moe (expert 0:
    the beam column of an MoE teacher is already its best-expert output), and an MoE teacher."""
    cfg = yaml.safe_load((ROOT / "configs" / "wmt14.yaml").read_text())
    if section5:
        presets = yaml.safe_load((ROOT / "workflow" / "defaults.yaml").read_text())["teacher_sizes"]
        cfg.setdefault("teacher_sizes", {})["base_moe"] = {**presets["base"], "experts": 3}
        cfg["grid"]["teachers"] = [*cfg["grid"]["teachers"], "base_moe"]
        cfg["grid"]["methods"] = [*cfg["grid"]["methods"], "interpolate", "ban", "moe"]
        cfg.setdefault("methods", {})["moe"] = {"kind": "moe", "expert": 0}
    base = cfg["grid"]["teachers"]
    sizes = cfg.setdefault("teacher_sizes", {})
    teachers = list(base)
    presets = yaml.safe_load((ROOT / "workflow" / "defaults.yaml").read_text())["teacher_sizes"]
    for k in range(1, scale):
        for t in base:
            sizes[f"{t}_{k}"] = dict(sizes.get(t) or presets[t])
            teachers.append(f"{t}_{k}")
    cfg["grid"]["teachers"] = teachers
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def dry_run(config: Path, workdir: Path) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run([str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
                           "--configfile", str(config), "-n", "-q", "rules"],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(proc.stdout[-2000:] + proc.stderr[-2000:])
    total = re.search(r"^total\s+(\d+)", proc.stdout, re.M)
    return seconds, int(total.group(1)) if total else -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    args = ap.parse_args()
    print(f"{'grid':<10} {'teachers':>8} {'jobs':>7} {'best s':>8} {'median s':>9} {'ms/job':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("en", "de"):  # the local training files the config names (a plan reads none)
            (Path(tmp) / "data" / "wmt14_en_de").mkdir(parents=True, exist_ok=True)
            (Path(tmp) / "data" / "wmt14_en_de" / f"train.{side}").touch()
        rows = [(1, True)] * (1 in args.scales) + [(scale, False) for scale in args.scales]
        for scale, section5 in rows:
            cfg = grid_config(scale, Path(tmp) / f"grid{scale}{'s5' * section5}.yaml", section5)
            runs = [dry_run(cfg, Path(tmp)) for _ in range(args.repeats)]
            times = sorted(s for s, _ in runs)
            jobs = runs[0][1]
            name = "paper+s5" if section5 else f"{scale:>3}x paper"
            print(f"{name:<10} {4 * scale + section5:>8} {jobs:>7} {times[0]:>8.2f} "
                  f"{times[len(times) // 2]:>9.2f} {1000 * times[0] / max(jobs, 1):>7.2f}")
        print("(the full paper grid, also with the section-5 methods, must plan in under 5 s)")


if __name__ == "__main__":
    main()
