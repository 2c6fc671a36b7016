"""Parts 1 and 2 of bench/gpu_check.py (training throughput, distillation GPU vs CPU) and the
helpers every part shares: the plan (sizes per mode), running `python -m kdgrid VERB` as the
workflow's jobs do, and reading what their logs say.

Every step runs the real CLI verb in a child process, with `--gpus 1` on a GPU as the workflow's
GPU rules do: the check then covers what a grid job runs (device choice and GPU locks, bf16
autocast, the `kdgrid device:` line the cost table reads), not a re-implementation of it.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DEFAULTS = ROOT / "workflow" / "defaults.yaml"  # what kdgrid calls `base` (teacher_sizes.base)
TOY = ROOT / "tests" / "configs" / "toy.yaml"  # the tests' toy grid: CPU toy mode's sizes
STEP_TIMEOUT = 600  # seconds for one child process: a hung CUDA call fails its part, the rest still run
START = time.monotonic()


def say(message: str) -> None:
    clock = time.monotonic() - START
    print(f"[gpu-check {int(clock) // 60}:{int(clock) % 60:02d}] {message}", flush=True)


class Failed(Exception):
    """An expectation of the check that did not hold; the message says which and where to look."""


@dataclass
class Outcome:
    ok: bool
    lines: list[str] = field(default_factory=list)  # the summary's lines for this part
    seconds: float = 0.0


@dataclass
class Plan:
    """Sizes and settings of one run: `base` models for a GPU, the toy grid's sizes for the CPU."""

    cuda: bool
    device_name: str
    bf16: bool  # the GPU supports bf16 (training under `bf16: auto` must then use it)
    corpus: dict  # kdgrid.synthetic.SyntheticSpec fields
    vocab_size: int
    teacher: dict  # transformer model params, as the workflow passes them
    student: dict  # nat model params
    train: dict  # TrainConfig fields
    threads: int  # CPU threads of the CPU runs
    distill_sentences: int
    decode_max_tokens: int
    grid_targets: list[str]  # snakemake targets of part 3; [] = the whole toy grid
    work: Path


def _teacher_params(size: dict, arch: dict) -> dict:
    """A teacher size as the workflow's train_teacher jobs get it (common.smk teacher_model)."""
    return {"d_model": size["d_model"], "ffn": size["ffn"], "heads": size["heads"],
            "encoder_layers": size.get("encoder_layers", size.get("layers")),
            "decoder_layers": size.get("decoder_layers", size.get("layers")),
            "dropout": size.get("dropout", arch.get("dropout", 0.1)),
            "attention_dropout": size.get("attention_dropout", arch.get("attention_dropout", 0.0)),
            "pre_norm": arch.get("pre_norm", True)}


def make_plan(cuda: bool, device_name: str, bf16: bool, updates: int | None, sentences: int | None,
              work: Path) -> Plan:
    defaults = yaml.safe_load(DEFAULTS.read_text())
    arch = defaults["teacher"]["architecture"]
    cpus = os.cpu_count() or 1
    if cuda:
        # The shipped presets: teacher `base`, student `nat` (d512, ffn 2048, 6+6 layers, 8 heads).
        updates = updates or 300
        return Plan(
            cuda=True, device_name=device_name, bf16=bf16,
            corpus={"seed": 1, "train": 40000, "valid": 500, "test": 10},
            vocab_size=defaults["vocab"]["size"],
            teacher=_teacher_params(defaults["teacher_sizes"]["base"], arch),
            student=dict(defaults["students"]["nat"]["model"]),
            # a large batch keeps an H100 busy; warm-up short enough that a few hundred updates learn
            train={"max_tokens": 16384, "lr": 0.0007, "warmup_updates": min(100, updates // 3),
                   "label_smoothing": 0.1, "max_updates": updates, "valid_every": updates,
                   "log_every": max(1, updates // 6), "seed": 1, "bf16": "auto"},
            threads=min(16, cpus), distill_sentences=sentences or 3000, decode_max_tokens=8192,
            grid_targets=[], work=work)
    toy = yaml.safe_load(TOY.read_text())
    updates = updates or 20
    size = toy["teacher_sizes"][toy["grid"]["teachers"][0]]
    return Plan(
        cuda=False, device_name="cpu", bf16=False,
        corpus=dict(toy["corpus"]["synthetic"]), vocab_size=toy["vocab"]["size"],
        teacher=_teacher_params(size, {**arch, **toy.get("teacher", {}).get("architecture", {})}),
        student=dict(toy["students"][toy["grid"]["students"][0]]["model"]),
        train={**toy["teacher"]["train"], "max_updates": updates, "valid_every": updates,
               "log_every": max(1, updates // 4), "seed": 1, "bf16": "auto"},
        threads=1, distill_sentences=sentences or 40, decode_max_tokens=2048,
        # the cheapest run that has GPU rules: prepare, vocab, train_teacher, one distill shard
        grid_targets=[f"results/{toy['corpus']['name']}/distill/{toy['grid']['teachers'][0]}.greedy/shards/0.tgt"],
        work=work)


# -- child processes ------------------------------------------------------------------------------
def child_env(cuda: bool, **extra) -> dict:
    """The environment of a job: kdgrid from this checkout (as the workflow's jobs import it), and
    no visible GPU for a CPU run (torch then picks the CPU, as under KDGRID_GPUS=0)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(extra)
    return env


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path} unreadable)"
    return "\n".join("    " + line for line in text[-lines:])


def run_logged(cmd: list, log: Path, env: dict, what: str, cwd: Path = ROOT) -> str:
    """Run `cmd` with stdout and stderr into `log`; its text, or Failed with the log's last lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log, "w") as f:
            proc = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                  timeout=STEP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Failed(f"{what}: still running after {STEP_TIMEOUT} s, stopped; its log {log}:\n{tail(log)}") from None
    if proc.returncode != 0:
        raise Failed(f"{what} failed (exit {proc.returncode}); the end of {log}:\n{tail(log)}")
    return log.read_text(errors="replace")


def kdgrid(plan: Plan, verb: str, *args, log: str, cuda: bool, gpus: bool = False) -> str:
    """`python -m kdgrid VERB ARGS` (with `--gpus 1` where `gpus`, as the GPU rules pass it)."""
    cmd = [sys.executable, "-m", "kdgrid", verb, *args, "--threads", plan.threads]
    if gpus and cuda:
        cmd += ["--gpus", "1"]
    return run_logged(cmd, plan.work / "logs" / log, child_env(cuda), f"kdgrid {verb} ({log})")


def devices_named(log_text: str) -> list[str]:
    """The devices a job's log names on its `kdgrid device:` lines (kdgrid.devices.announce)."""
    return re.findall(r"kdgrid device: (\S+)", log_text)


def expect_device(log_text: str, cuda: bool, what: str) -> str:
    named = devices_named(log_text)
    if not named:
        raise Failed(f"{what}: the log has no 'kdgrid device:' line")
    bad = [d for d in named if d.startswith("cuda:") != cuda]
    if bad:
        raise Failed(f"{what}: ran on {', '.join(bad)}, expected {'a GPU (cuda:N)' if cuda else 'the CPU'}")
    return named[-1]


# -- data -----------------------------------------------------------------------------------------
def prepare_data(plan: Plan) -> dict:
    """The synthetic corpus (train, valid) as text and encoded by a sentencepiece model trained
    on it with `kdgrid vocab`; the paths."""
    from kdgrid import synthetic

    data = plan.work / "data"
    data.mkdir(parents=True, exist_ok=True)
    spec = synthetic.SyntheticSpec(**plan.corpus)
    say(f"data: {spec.train:,} synthetic training pairs (kdgrid.synthetic, seed {spec.seed})")
    splits = synthetic.generate(spec)
    paths = {}
    for split in ("train", "valid"):
        for side, column in (("src", 0), ("tgt", 1)):
            path = data / f"{split}.{side}"
            path.write_text("".join(pair[column] + "\n" for pair in splits[split]))
            paths[f"{split}.{side}"] = path
            paths[f"{split}.{side}.npz"] = data / f"{split}.{side}.npz"
    paths["vocab"] = data / "spm.model"
    params = {"size": plan.vocab_size, "model_type": "unigram", "character_coverage": 1.0, "max_sentences": 0,
              "seed": 1}
    texts = [paths[k] for k in ("train.src", "train.tgt", "valid.src", "valid.tgt")]
    kdgrid(plan, "vocab", "--train-text", paths["train.src"], paths["train.tgt"], "--model", paths["vocab"],
           "--params", json.dumps(params), "--encode", *texts, "--encoded", *[f"{t}.npz" for t in texts],
           log="vocab.log", cuda=False)
    return paths


# -- part 1: training throughput --------------------------------------------------------------------
TRAIN_LINE = re.compile(r"train (\d+)/\d+ .*?\| loss ([\d.]+).*?\| ([\d.]+)([kM]?) tok/s")


def train_rates(log_text: str) -> tuple[list[float], list[float]]:
    """(tok/s of each logged window, loss of each) from the Trainer's progress lines."""
    scale = {"": 1.0, "k": 1e3, "M": 1e6}
    rows = TRAIN_LINE.findall(log_text)
    return [float(r[2]) * scale[r[3]] for r in rows], [float(r[1]) for r in rows]


def model_flops(plan: Plan, kind: str, params: dict, paths: dict) -> float:
    """Model FLOPs per target token of this model on this data (bench/gpu_check_perf.py)."""
    import torch
    from gpu_check_perf import flops_per_target_token, length_stats, parameter_parts

    from kdgrid.batching import load_ids
    from kdgrid.models import build
    from kdgrid.vocab import MASK, Vocab

    cfg = {**params, **Vocab.load(paths["vocab"]).model_ids(), **({} if kind == "transformer" else {"mask": MASK})}
    try:  # no memory for the weights: only their shapes count
        with torch.device("meta"):
            model = build(kind, cfg)
    except Exception:  # noqa: BLE001 - a torch without meta construction: build it for real
        model = build(kind, cfg)
    stats = length_stats(load_ids(paths["train.src.npz"]).lengths, load_ids(paths["train.tgt.npz"]).lengths)
    return flops_per_target_token(parameter_parts(model), params["d_model"], params["encoder_layers"],
                                  params["decoder_layers"], stats)


def train_one(plan: Plan, role: str, kind: str, params: dict, paths: dict) -> tuple[Path, list[str]]:
    from gpu_check_perf import mfu_text

    from kdgrid.progress import rate_text  # three digits at any scale: 33.8k, 60.5M

    out = plan.work / role / "model.pt"
    where = plan.device_name if plan.cuda else "cpu"
    say(f"part 1: training the {role} ({kind}, d{params['d_model']} ffn{params['ffn']} "
        f"{params['encoder_layers']}+{params['decoder_layers']} layers {params['heads']} heads) for "
        f"{plan.train['max_updates']} updates of <= {plan.train['max_tokens']} tokens on {where}")
    text = kdgrid(plan, "train", "--kind", kind, "--model-params", json.dumps(params),
                  "--train-params", json.dumps(plan.train), "--vocab", paths["vocab"],
                  "--train-src", paths["train.src.npz"], "--train-tgt", paths["train.tgt.npz"],
                  "--valid-src", paths["valid.src.npz"], "--valid-tgt", paths["valid.tgt.npz"],
                  "--out", out, "--work-dir", plan.work / role / "train", log=f"train_{role}.log",
                  cuda=plan.cuda, gpus=True)
    device = expect_device(text, plan.cuda, f"training the {role}")
    header = re.search(r"training \w+[^\n]*?: ([\d,]+) parameters[^\n]*", text)  # the Trainer's first line
    if not header:
        raise Failed(f"training the {role}: no 'training ...: N parameters ... device D' line in its log")
    if plan.cuda and plan.bf16 and "bf16 autocast" not in header.group(0):
        raise Failed(f"training the {role}: bf16 is supported on {plan.device_name} but the trainer did "
                     f"not use it (`bf16: auto`); its line: {header.group(0)}")
    rates, losses = train_rates(text)
    if len(rates) < 2:
        raise Failed(f"training the {role}: fewer than two progress lines to time (log_every "
                     f"{plan.train['log_every']}, {plan.train['max_updates']} updates)")
    if not losses[-1] < losses[0]:
        raise Failed(f"training the {role}: the loss did not fall ({losses[0]} at the first progress line, "
                     f"{losses[-1]} at the last)")
    rate = statistics.median(rates[1:])  # the first window holds start-up and the allocator's warm-up
    flops = model_flops(plan, kind, params, paths)
    mfu = mfu_text(rate, flops, plan.device_name) if plan.cuda else "MFU: no GPU (unknown peak)"
    precision = "bf16 autocast" if "bf16 autocast" in header.group(0) else "float32"
    params_n = int(header.group(1).replace(",", ""))
    line = (f"{role} {kind} {rate_text(params_n)} params on {device} ({precision}): {rate:,.0f} target tok/s, "
            f"{rate_text(flops)} FLOP/token, {mfu}; loss {losses[0]:.2f} -> {losses[-1]:.2f}")
    say("  " + line)
    return out, [line]


def part_train(plan: Plan, paths: dict) -> tuple[Outcome, Path]:
    teacher, lines = train_one(plan, "teacher", "transformer", plan.teacher, paths)
    _, student_lines = train_one(plan, "student", "nat", plan.student, paths)
    return Outcome(True, lines + student_lines), teacher


# -- part 2: distillation on the GPU against the CPU -------------------------------------------------
def distill_run(plan: Plan, teacher: Path, vocab: Path, src: Path, backend: str, cuda: bool) -> tuple[list, float]:
    """One `kdgrid distill` (beam 5, the default method) of `src`: its lines and sentences/s."""
    where = "cuda" if cuda else "cpu"
    params = {"kind": "beam", "beam": 5, "lenpen": 1.0, "max_len_a": 1.2, "max_len_b": 10,
              "max_tokens": plan.decode_max_tokens}
    if backend == "ctranslate2":
        params["backend"] = "ctranslate2"
    out = plan.work / "distill" / f"{backend}.{where}.tgt"
    say(f"part 2: distilling {plan.distill_sentences} sentences, beam 5, {backend} on {where}")
    text = kdgrid(plan, "distill", "--model", teacher, "--vocab", vocab, "--src", src, "--out", out,
                  "--params", json.dumps(params), log=f"distill_{backend}_{where}.log", cuda=cuda, gpus=True)
    expect_device(text, cuda, f"distilling with {backend} on {where}")
    timed = re.findall(r"(\d+) sentences in ([\d.]+)s", text)
    seconds = sum(float(s) for _, s in timed)
    if not timed:
        raise Failed(f"distilling with {backend} on {where}: its log has no 'N sentences in Xs' line to time it by")
    lines = out.read_text().splitlines()
    if len(lines) != plan.distill_sentences:
        raise Failed(f"distilling with {backend} on {where}: {len(lines)} lines for {plan.distill_sentences} sources")
    return lines, len(lines) / max(seconds, 1e-9)


def identical(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b)) / max(len(a), 1)


def part_distill(plan: Plan, teacher: Path, paths: dict, min_identical: float, min_bleu: float) -> Outcome:
    from kdgrid.metrics import bleu

    src = plan.work / "distill" / "sources.src"
    src.parent.mkdir(parents=True, exist_ok=True)
    sources = paths["train.src"].read_text().splitlines()[: plan.distill_sentences]
    refs = paths["train.tgt"].read_text().splitlines()[: plan.distill_sentences]
    src.write_text("".join(s + "\n" for s in sources))
    lines, problems, outputs = [], [], {}
    for backend in ("torch", "ctranslate2"):
        device_out, device_rate = distill_run(plan, teacher, paths["vocab"], src, backend, plan.cuda)
        # without a GPU the device run is the CPU run: compared with itself, the plumbing is checked
        cpu_out, cpu_rate = (distill_run(plan, teacher, paths["vocab"], src, backend, False) if plan.cuda
                             else (device_out, device_rate))
        outputs[backend] = device_out
        same = identical(device_out, cpu_out)
        score = bleu.score(device_out, [cpu_out])["bleu"]
        to_refs = bleu.score(device_out, [refs])["bleu"]
        speed = (f"GPU {device_rate:,.0f} sent/s, CPU {cpu_rate:,.0f} sent/s ({plan.threads} threads); GPU vs CPU"
                 if plan.cuda else f"CPU {cpu_rate:,.0f} sent/s; no GPU: the CPU run against itself")
        line = (f"{backend}: {speed}: {100 * same:.1f}% identical, BLEU {score:.2f}; teacher BLEU vs the "
                f"references {to_refs:.1f}")
        say("  " + line)
        lines.append(line)
        if same < min_identical or score < min_bleu:
            problems.append(f"{backend}: {100 * same:.1f}% identical (need {100 * min_identical:.0f}%), BLEU "
                            f"{score:.2f} (need {min_bleu}) between the GPU and CPU outputs; compare "
                            f"{plan.work / 'distill'}/{backend}.*.tgt")
    same = identical(outputs["torch"], outputs["ctranslate2"])
    lines.append(f"torch vs ctranslate2 on the same device: {100 * same:.1f}% identical (for information: their "
                 "beam searches stop by different rules, and a barely trained teacher has many near-ties)")
    if problems:
        raise Failed("; ".join(problems))
    return Outcome(True, lines)
