"""`make gpu-check`: does kdgrid work on this GPU, and how fast? Four parts, a PASS/FAIL summary,
exit status 1 when a part fails (2 when the environment is not ready).

1. train: a `base` AT teacher and a `base` NAT student (workflow/defaults.yaml: d512, ffn 2048,
   6+6 layers, 8 heads) on the synthetic corpus under bf16 autocast for a few hundred updates;
   target tokens/s and model FLOP utilisation (MFU, bench/gpu_check_perf.py) of each.
2. distill: a few thousand training sources by the teacher's beam search with the torch search
   and with the CTranslate2 backend, on the GPU and on the CPU: the share of identical lines and
   BLEU between the GPU's and the CPU's output, per backend.
3. grid: the tests' toy grid (tests/configs/toy.yaml) through `profiles/workstation`: the dry run
   gives every GPU rule `gpu=1`, and every GPU-rule job's log names a CUDA device.
4. tests: the tests marked `cuda` (pytest -m cuda).

Without CUDA (or with --cpu) every part runs on the CPU at toy size: the toy grid's models, tens
of updates, a few dozen sentences, and of the toy grid only the jobs up to one distillation shard
(the device comparison then compares the CPU with itself: the plumbing, not the numbers). The
test suite runs it that way (tests/test_gpu_check.py), so the check does not rot between GPU runs.

It runs with whatever Python runs it (`sys.executable`, also for the jobs): on a GPU machine the
cluster's own torch with the other packages installed offline from wheels; see README "Checking a
GPU machine" (`make gpu-wheels`, `make gpu-venv`, `make gpu-check`). On one H100 it is meant to take
under 8 minutes; each part's time is printed.

    python bench/gpu_check.py [--cpu] [--parts train,distill,grid,tests] [--updates N]
                              [--sentences N] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # kdgrid from this checkout
sys.path.insert(1, str(Path(__file__).resolve().parent))  # the bench/gpu_check_*.py helpers

PARTS = ("train", "distill", "grid", "tests")
# import name -> what to install; every one comes from the wheels (README "Checking a GPU machine")
NEEDED = {"torch": "torch (the machine's own build)", "numpy": "numpy", "yaml": "PyYAML",
          "sentencepiece": "sentencepiece", "sacrebleu": "sacrebleu", "ctranslate2": "ctranslate2",
          "snakemake": "snakemake", "eflomal": "eflomal", "pytest": "pytest"}
MIN_TORCH = (2, 4)  # scaled_dot_product_attention, torch.compile, fused AdamW (on the CPU from 2.4)
BUDGET_SECONDS = 8 * 60  # what the check should take on one H100


def version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def preflight(want_cpu: bool) -> dict:
    """What this Python has, or exit 2 saying what is missing; the device to check."""
    missing = []
    for module, package in NEEDED.items():
        try:
            importlib.import_module(module)
        except ImportError as e:
            missing.append(f"{package} ({e})")
    if missing:
        print("gpu-check: this Python lacks " + "; ".join(missing) + f"\n  ({sys.executable}) Install them from "
              "wheels: README.md, 'Checking a GPU machine' (make gpu-wheels on a machine with PyPI, then "
              "make gpu-venv here).", file=sys.stderr)
        sys.exit(2)
    import ctranslate2
    import numpy
    import snakemake
    import torch

    if version_tuple(torch.__version__)[:2] < MIN_TORCH:
        print(f"gpu-check: torch {torch.__version__} is older than kdgrid needs ({'.'.join(map(str, MIN_TORCH))}: "
              "scaled_dot_product_attention, torch.compile)", file=sys.stderr)
        sys.exit(2)
    cuda = torch.cuda.is_available() and not want_cpu
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    info = {"cuda": cuda, "name": name, "bf16": bool(cuda and torch.cuda.is_bf16_supported())}
    ct2_gpus = ctranslate2.get_cuda_device_count()
    print(f"python {sys.version.split()[0]} ({sys.executable}); torch {torch.__version__} (CUDA "
          f"{torch.version.cuda or 'none'}); numpy {numpy.__version__}; ctranslate2 {ctranslate2.__version__} "
          f"(sees {ct2_gpus} GPU(s)); snakemake {snakemake.__version__}", flush=True)
    if version_tuple(numpy.__version__)[0] >= 2 and version_tuple(torch.__version__)[:2] < (2, 3):
        print(f"WARNING: numpy {numpy.__version__} with torch {torch.__version__}: torch before 2.3 was built "
              "against numpy 1.x; pin numpy<2 in the wheels' requirements if tensors fail to convert", flush=True)
    if cuda:
        count = torch.cuda.device_count()
        print(f"device: {name} (x{count}), bf16 {'supported' if info['bf16'] else 'NOT supported'}", flush=True)
    else:
        why = "--cpu given" if want_cpu else "no CUDA device visible to torch"
        print(f"device: CPU ({why}): toy sizes, the plumbing checked, not the GPU", flush=True)
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="the CPU toy mode even where CUDA is available")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    ap.add_argument("--updates", type=int, help="training updates per model (default: 300 on a GPU, 20 on the CPU)")
    ap.add_argument("--sentences", type=int, help="sentences to distill (default: 3000 on a GPU, 40 on the CPU)")
    ap.add_argument("--min-identical", type=float, default=0.95,
                    help="share of distilled lines the GPU and the CPU must agree on, per backend (0.95)")
    ap.add_argument("--min-bleu", type=float, default=95.0, help="BLEU of the GPU's output against the CPU's (95)")
    ap.add_argument("--work", type=Path, help="work directory (default: a temporary one, removed after a pass)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory after a pass")
    a = ap.parse_args(argv)
    started = time.monotonic()
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"--parts: unknown {', '.join(unknown)}; known: {', '.join(PARTS)}")
    if "distill" in parts and "train" not in parts:
        ap.error("--parts: distill decodes with the teacher that train trains; give train too")

    info = preflight(a.cpu)
    import gpu_check_grid as grid
    import gpu_check_parts as p

    work = a.work or Path(tempfile.mkdtemp(prefix="kdgrid-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    plan = p.make_plan(info["cuda"], info["name"], info["bf16"], a.updates, a.sentences, work.resolve())
    p.say(f"work directory {plan.work}; parts: {', '.join(parts)}")
    outcomes: dict[str, p.Outcome] = {}
    paths, teacher = None, None
    for part in [p_ for p_ in PARTS if p_ in parts]:  # train before distill, whatever the order given
        begin = time.monotonic()
        try:
            if part in ("train", "distill") and paths is None:
                paths = p.prepare_data(plan)
            if part == "train":
                outcome, teacher = p.part_train(plan, paths)
            elif part == "distill":
                if teacher is None:
                    raise p.Failed("no teacher: part train failed")
                outcome = p.part_distill(plan, teacher, paths, a.min_identical, a.min_bleu)
            elif part == "grid":
                outcome = grid.part_grid(plan)
            else:
                outcome = grid.part_tests(plan)
        except p.Failed as e:
            outcome = p.Outcome(False, [str(e)])
            p.say(f"FAIL {part}: {e}")
        except Exception as e:  # noqa: BLE001 - a crash of the check itself fails its part, the rest still run
            outcome = p.Outcome(False, [f"{type(e).__name__}: {e}"])
            p.say(f"FAIL {part}: {type(e).__name__}: {e}")
        outcome.seconds = time.monotonic() - begin
        outcomes[part] = outcome

    total = time.monotonic() - started  # preflight (imports, CUDA's start) included
    ok = all(o.ok for o in outcomes.values())
    mode = f"GPU {plan.device_name}" if plan.cuda else "CPU toy mode (no GPU checked)"
    print(f"\n== kdgrid GPU check: {mode} ==")
    for number, part in enumerate(PARTS, 1):
        if part not in outcomes:
            continue
        o = outcomes[part]
        print(f"{'PASS' if o.ok else 'FAIL'}  {number}. {part:8s} ({o.seconds:.0f} s)")
        for line in o.lines:
            print("        " + line.replace("\n", "\n        "))
    over = plan.cuda and total > BUDGET_SECONDS
    print(f"total {total:.0f} s{' (over the 8-minute budget)' if over else ''}: {'PASS' if ok else 'FAIL'}")
    if ok and not a.keep and a.work is None:
        shutil.rmtree(plan.work, ignore_errors=True)
    else:
        print(f"work directory kept: {plan.work} (logs in {plan.work / 'logs'})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
