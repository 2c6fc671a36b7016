"""Shared helpers: running the workflow in a scratch directory, tiny vocabularies for models."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def env() -> dict:
    """Jobs run `python -m kdgrid`: put this interpreter's bin directory first on PATH."""
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    return e


def snakemake(workdir: Path, *args, configfile: Path | None = None, check: bool = True, timeout=900):
    cmd = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    if configfile is not None:
        cmd.append(f"--configfile={configfile}")  # "=": the option takes several values
    proc = subprocess.run(cmd + list(args), capture_output=True, text=True, env=env(), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table into {rule: count}."""
    counts, inside = {}, False
    for line in output.splitlines():
        if line.startswith("Job stats:"):
            inside, counts = True, {}
            continue
        if inside:
            m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if m and m.group(1) != "total":
                counts[m.group(1)] = int(m.group(2))
            elif m:
                inside = False
    return counts


def write_config(path: Path, base: Path | None = None, **overrides) -> Path:
    """A config file: `base` (a YAML file) deep-updated with `overrides`."""
    cfg = yaml.safe_load(base.read_text()) if base else {}

    def merge(a, b):
        for k, v in b.items():
            a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a

    path.write_text(yaml.safe_dump(merge(cfg, overrides), sort_keys=False))
    return path


TOY = ROOT / "tests" / "configs" / "toy.yaml"


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: a second thread only waits (and takes a core from whatever runs beside)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def toy_config():
    return TOY


def model_config(kind: str, vocab_size: int = 40, d: int = 64, layers: int = 2, **extra) -> dict:
    if kind == "ensemble":  # of one Transformer of these sizes
        member = model_config("transformer", vocab_size, d, layers, **extra)
        return dict(vocab_size=vocab_size, pad=0, bos=2, eos=3, members=[{"kind": "transformer", "config": member}])
    cfg = dict(vocab_size=vocab_size, pad=0, bos=2, eos=3, d_model=d, ffn=2 * d, encoder_layers=layers,
               decoder_layers=layers, heads=4, dropout=0.0)
    if kind != "transformer":
        cfg["mask"] = 4
    cfg.update(extra)
    return cfg


def toy_pairs(n: int = 8, vocab_size: int = 40, seed: int = 0):
    """n source/target id pairs: the target is the reversed source through a one-to-one word map,
    plus an extra word after odd-length sources (a length change). Words do not repeat within a
    sentence, as in natural text (runs of one word make insertion models count)."""
    import random

    rng = random.Random(seed)
    first, span = 10, vocab_size - 10
    pairs = []
    for _ in range(n):
        src = rng.sample(range(first, vocab_size), rng.randint(3, 7))
        tgt = [(t - first) * 7 % span + first for t in reversed(src)] + ([5] if len(src) % 2 else [])
        pairs.append((src, tgt))
    return pairs


def words(ids) -> str:
    """Token ids as a line of text words (w5 w17 ...), for corpora that go through sentencepiece."""
    return " ".join(f"w{i}" for i in ids)


def encoded_toy_corpus(d: Path, run, pairs: int, vocab_size: int, pieces: int) -> Path:
    """Writes `pairs` toy sentence pairs to d/train.{src,tgt}, trains a sentencepiece model of
    `pieces` pieces on them (d/spm.model) and encodes both sides (d/src.npz, d/tgt.npz) through
    the CLI verb runner `run`."""
    import json

    toy = toy_pairs(pairs, vocab_size=vocab_size, seed=11)
    (d / "train.src").write_text("".join(words(s) + "\n" for s, _ in toy))
    (d / "train.tgt").write_text("".join(words(t) + "\n" for _, t in toy))
    params = {"size": pieces, "model_type": "bpe", "character_coverage": 1.0, "max_sentences": 0, "seed": 1}
    run("vocab", "--train-text", d / "train.src", d / "train.tgt", "--model", d / "spm.model",
        "--params", json.dumps(params), "--encode", d / "train.src", d / "train.tgt",
        "--encoded", d / "src.npz", d / "tgt.npz")
    return d


def train_toy_teacher(d: Path, run, layers: int = 1, updates: int = 40, pre_norm: bool = True) -> Path:
    """A small corpus (d/train.src, d/train.tgt), its sentencepiece model (d/spm.model) and an AT
    teacher briefly trained on it through the CLI verb runner `run` (d/model.pt)."""
    import json

    toy = toy_pairs(240, vocab_size=60, seed=5)
    (d / "train.src").write_text("".join(words(s) + "\n" for s, _ in toy))
    (d / "train.tgt").write_text("".join(words(t) + "\n" for _, t in toy))
    vocab = {"size": 80, "model_type": "bpe", "character_coverage": 1.0, "max_sentences": 0, "seed": 1}
    proc = run("vocab", "--train-text", d / "train.src", d / "train.tgt", "--model", d / "spm.model",
               "--params", json.dumps(vocab), "--encode", d / "train.src", d / "train.tgt",
               "--encoded", d / "src.npz", d / "tgt.npz")
    assert proc.returncode == 0, proc.stderr
    model = {"d_model": 32, "ffn": 64, "heads": 2, "encoder_layers": layers, "decoder_layers": layers,
             "dropout": 0.0, "attention_dropout": 0.0, "pre_norm": pre_norm}
    train = {"max_tokens": 600, "lr": 0.003, "warmup_updates": 10, "max_updates": updates,
             "valid_every": updates // 2, "log_every": 10, "seed": 3}
    proc = run("train", "--kind", "transformer", "--model-params", json.dumps(model), "--train-params",
               json.dumps(train), "--vocab", d / "spm.model", "--train-src", d / "src.npz", "--train-tgt",
               d / "tgt.npz", "--valid-src", d / "src.npz", "--valid-tgt", d / "tgt.npz", "--out",
               d / "model.pt", "--work-dir", d / "work")
    assert proc.returncode == 0, proc.stderr
    return d


# Module fixtures that run a whole toy grid for real (minutes): every test that uses one is `slow`
# (`make test-fast` skips them; `make test` runs everything). Tests that run a grid themselves carry
# @pytest.mark.slow.
REAL_RUN_FIXTURES = {"toy_run", "s5_run", "sets_run", "elsewhere_run"}
# make test's longest modules (--durations, 2 workers): started first, so that none ends the run alone
LONGEST_MODULES = ("test_workflow", "test_slurm", "test_roster_workflow", "test_section5", "test_test_sets",
                   "test_teachers_workflow")


def pytest_collection_modifyitems(config, items):
    """Marks the real-run tests `slow`, and shapes `make test`'s schedule (pytest-xdist with
    --dist loadfile: each module's tests run on one worker, so a module-scoped fixture, often a toy
    grid, is built once): the modules with slow tests start first (--no-loadscope-reorder keeps
    this order), so that the longest ones do not end the run alone. (Not --dist loadgroup: with
    pytest 9, pytest-xdist 3.8 no longer adds its group names to the test ids, so it grouped
    nothing and a module's toy grid was built on both workers.)"""
    for item in items:
        if REAL_RUN_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    # the longest modules first (measured: each takes 1-3 minutes of one worker), then the other slow ones
    first = {name: i for i, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: (item.module.__name__ not in slow_modules,
                                 first.get(item.module.__name__, len(first))))  # stable otherwise
