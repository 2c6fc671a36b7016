"""Parts 3 and 4 of bench/gpu_check.py: the toy grid through `profiles/workstation` (the GPU
rules on `gpu: 1`, and the device each job logged), and the tests marked `cuda`."""

from __future__ import annotations

import csv
import re
import sys
from collections import Counter
from pathlib import Path

import yaml
from gpu_check_parts import ROOT, TOY, Failed, Outcome, Plan, child_env, devices_named, run_logged, say, tail

PROFILE = ROOT / "profiles" / "workstation"


def gpu_rules() -> set[str]:
    """The rules the workstation profile gives a GPU (its set-resources), read from the profile
    itself so that a rule added there is checked here too."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    return {rule for rule, res in profile["set-resources"].items() if "gpu" in res}


def planned_gpus(dry_run: str) -> dict[str, list[str]]:
    """{rule: the gpu resource of each planned job ('0' where it has none)} from `snakemake -n`."""
    jobs: dict[str, list[str]] = {}
    rule = None
    for line in dry_run.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
            jobs.setdefault(rule, [])
        elif rule and line.strip().startswith("resources:"):
            gpu = re.search(r"\bgpu=(\d+)", line)
            jobs[rule].append(gpu.group(1) if gpu else "0")
            rule = None
    return jobs


def snakemake(plan: Plan, *args, log: str, gpus: str | None) -> str:
    """Snakemake on the toy config with the workstation profile, in the check's own directory.
    `gpus`: KDGRID_GPUS for the profile (None: the profile counts them with nvidia-smi)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", ROOT / "Snakefile", "--profile", PROFILE,
           "--directory", plan.work / "grid", "--configfile", TOY, *args]
    env = child_env(True)  # the profile hides the GPUs from the jobs itself when it counts none
    env.pop("KDGRID_GPUS", None)
    if gpus is not None:
        env["KDGRID_GPUS"] = gpus
    return run_logged(cmd, plan.work / "logs" / log, env, f"snakemake ({log})")


def part_grid(plan: Plan) -> Outcome:
    rules = gpu_rules()
    # 1. the plan: with one GPU, every GPU rule's job asks for gpu=1 and no other job for any
    say("part 3: dry run of the toy grid through profiles/workstation with KDGRID_GPUS=1")
    planned = planned_gpus(snakemake(plan, "-n", log="grid_dry_run.log", gpus="1"))
    wrong = sorted({f"{rule}: gpu={g}" for rule, values in planned.items() for g in values
                    if g != ("1" if rule in rules else "0")})
    if wrong:
        raise Failed(f"the dry run planned wrong GPU resources (GPU rules: {', '.join(sorted(rules))}): "
                     f"{'; '.join(wrong)}")
    gpu_jobs = sum(len(v) for r, v in planned.items() if r in rules)
    lines = [f"dry run: {sum(len(v) for v in planned.values())} jobs planned, the {gpu_jobs} of GPU rules "
             "with gpu=1, the rest with none"]

    # 2. a real run: the whole toy grid on a GPU; on the CPU only up to one distillation shard
    # (prepare, vocab, train_teacher, distill), the cheapest run that has GPU rules in it
    what = "the whole toy grid" if not plan.grid_targets else " ".join(plan.grid_targets)
    say(f"part 3: running {what} through profiles/workstation"
        f"{' (GPUs as nvidia-smi counts them)' if plan.cuda else ' with KDGRID_GPUS=0'}")
    targets = ["--", *plan.grid_targets] if plan.grid_targets else []
    snakemake(plan, "--show-failed-logs", *targets, log="grid_run.log", gpus=None if plan.cuda else "0")
    results = next((plan.work / "grid" / "results").iterdir())
    devices, missing = Counter(), []
    for rule in sorted(rules):
        for log in sorted((results / "logs" / rule).glob("*.log")):
            named = devices_named(log.read_text(errors="replace"))
            if not named:
                missing.append(str(log))
            devices.update(f"{rule}: {d}" for d in named)
    if missing:
        raise Failed(f"GPU-rule job logs without a 'kdgrid device:' line: {', '.join(missing)}; e.g.\n"
                     f"{tail(Path(missing[0]))}")
    if not devices:
        raise Failed(f"no GPU-rule job ran (no logs under {results / 'logs'})")
    shown = ", ".join(f"{k} x{n}" for k, n in sorted(devices.items()))
    wrong = [k for k in devices if k.split(": ")[1].startswith("cuda:") != plan.cuda]
    if wrong:
        raise Failed(f"jobs ran on the wrong device (expected {'cuda:N' if plan.cuda else 'cpu'}): {shown}")
    lines.append(f"devices the GPU-rule jobs logged: {shown}")
    if plan.cuda:  # the cost table counts GPU hours from those lines
        total = list(csv.DictReader(open(results / "costs.csv")))[-1]
        if not float(total["gpu_hours"]) > 0:
            raise Failed(f"{results / 'costs.csv'}: total gpu_hours {total['gpu_hours']}, expected > 0")
        lines.append(f"costs.csv: {float(total['gpu_hours']) * 3600:.0f} GPU-seconds in all; grid.md written")
    say("  " + lines[-1])
    return Outcome(True, lines)


def cuda_test_files() -> list[Path]:
    """Test files that use the `cuda` marker (a text search: collecting the whole suite costs more)."""
    return sorted(p for p in (ROOT / "tests").glob("test_*.py") if "mark.cuda" in p.read_text())


def part_tests(plan: Plan) -> Outcome:
    files = cuda_test_files()
    if not files:
        raise Failed("no test in tests/ is marked cuda")
    say(f"part 4: pytest -m cuda on {', '.join(p.name for p in files)}")
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *files]
    log = plan.work / "logs" / "pytest_cuda.log"
    text = run_logged(cmd, log, child_env(plan.cuda), "pytest -m cuda")
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", text)}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if k != "deselected")
    if plan.cuda and (counts.get("skipped") or not counts.get("passed")):
        raise Failed(f"on a GPU every cuda test must run: {summary}; see {log}:\n{tail(log)}")
    if not plan.cuda and counts.get("passed"):
        raise Failed(f"without CUDA the cuda tests must skip, yet: {summary}")
    note = "" if plan.cuda else " (no CUDA: they skip)"
    say(f"  {summary}{note}")
    return Outcome(True, [f"pytest -m cuda: {summary}{note}"])
