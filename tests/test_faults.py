"""Faults a cluster job meets, through the real CLI in real processes: kill -9 and SIGTERM in the
middle of training and of a distillation shard, then a rerun; data-parallel training under
torchrun (gloo, 2 CPU processes) giving the weights of one process; shards and the gather."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TOY, encoded_toy_corpus, env, job_counts, snakemake, write_config

PY = [sys.executable, "-m", "kdgrid"]
MODEL = {"d_model": 32, "ffn": 64, "heads": 2, "encoder_layers": 1, "decoder_layers": 1,
         "dropout": 0.0, "attention_dropout": 0.0, "pre_norm": True}
# The kill tests train with dropout, so every update draws random masks: a resume that did not
# restore the RNG state of the checkpoint would end with other weights.
DROPOUT = {**MODEL, "dropout": 0.3, "attention_dropout": 0.1}
TRAIN = {"max_tokens": 300, "lr": 0.003, "warmup_updates": 10, "max_updates": 60, "valid_every": 20,
         "log_every": 10, "save_every": 5, "seed": 3}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small corpus, its sentencepiece model and encoded splits (through the CLI)."""
    return encoded_toy_corpus(tmp_path_factory.mktemp("data"), run, pairs=400, vocab_size=60, pieces=80)


def run(*args, check=True, **kw):
    proc = subprocess.run([*PY, *map(str, args)], capture_output=True, text=True, env=env(), **kw)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


def train_args(data, out, work, model=MODEL, **over):
    return ["train", "--kind", "transformer", "--model-params", json.dumps(model),
            "--train-params", json.dumps({**TRAIN, **over}), "--labels", "{}", "--vocab", data / "spm.model",
            "--train-src", data / "src.npz", "--train-tgt", data / "tgt.npz",
            "--valid-src", data / "src.npz", "--valid-tgt", data / "tgt.npz",
            "--out", out, "--work-dir", work]


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def assert_same_weights(expected: dict, got: dict) -> None:
    """Two state dicts hold the same tensors under the same names."""
    assert expected.keys() == got.keys(), (sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys()))
    assert expected, "no weights to compare"
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name


def start(args, log):
    return subprocess.Popen([*PY, *map(str, args)], stderr=open(log, "w"), env=env())


def wait_for(predicate, proc, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the job ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def checkpoint_update(work: Path) -> int:
    try:
        return torch.load(work / "last.pt", map_location="cpu", weights_only=False)["state"]["update"]
    except Exception:  # noqa: BLE001 - not written yet, or being replaced
        return 0


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted training run, with dropout: the weights every interrupted run must end with."""
    d = tmp_path_factory.mktemp("ref")
    run(*train_args(data, d / "model.pt", d / "work", model=DROPOUT))
    return d / "model.pt"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_training_resumes_to_the_weights_of_an_uninterrupted_run(data, reference, tmp_path, sig):
    args = train_args(data, tmp_path / "model.pt", tmp_path / "work", model=DROPOUT)
    proc = start(args, tmp_path / "1.log")
    wait_for(lambda: checkpoint_update(tmp_path / "work") >= 15, proc, "a checkpoint at update 15")
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    first = (tmp_path / "1.log").read_text()
    if sig == signal.SIGTERM:  # SLURM's preemption: save, say so, exit non-zero (to be retried)
        assert code == 143 and "checkpoint saved at update" in first, first[-2000:]
    else:
        assert code == -signal.SIGKILL
    assert not (tmp_path / "model.pt").exists()  # nothing Snakemake could take as complete
    second = run(*args).stderr
    assert "resuming from" in second
    assert torch.load(reference, weights_only=False)["meta"]["model_config"]["dropout"] > 0
    assert_same_weights(weights(reference), weights(tmp_path / "model.pt"))


def test_two_processes_under_torchrun_give_the_weights_of_one(data, tmp_path):
    """An update is the same group of batches however many processes share it (gloo here)."""
    one = tmp_path / "one.pt"
    run(*train_args(data, one, tmp_path / "w1", update_freq=2, max_updates=30))
    two = tmp_path / "two.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "kdgrid", *map(str, train_args(data, two, tmp_path / "w2", update_freq=2, max_updates=30))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**env(), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "over 2 process(es)" in proc.stderr
    a, b = torch.load(one, weights_only=False), torch.load(two, weights_only=False)
    assert b["meta"]["processes"] == 2 and a["meta"]["processes"] == 1
    for name, w in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], w, rtol=1e-4, atol=1e-5, msg=name)
    for h1, h2 in zip(a["meta"]["history"], b["meta"]["history"]):
        assert h1["update"] == h2["update"] and abs(h1["loss"] - h2["loss"]) < 1e-4


# -- distillation ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher")
    run(*train_args(data, d / "model.pt", d / "work", max_updates=20, save_every=0))
    src = d / "big.src"  # enough sentences that a kill lands between chunks
    src.write_text((data / "train.src").read_text() * 6)
    return d / "model.pt", src


def distill_args(data, teacher, out, chunk=60):
    model, src = teacher
    params = {"kind": "sample", "temperature": 1.0, "seed": 7, "max_tokens": 2000,
              "max_len_a": 1.2, "max_len_b": 10}
    return ["distill", "--model", model, "--vocab", data / "spm.model", "--src", src, "--out", out,
            "--shard", 1, "--shards", 2, "--chunk", chunk, "--params", json.dumps(params)]


def test_killed_distillation_shard_resumes_to_the_same_lines(data, teacher, tmp_path):
    run(*distill_args(data, teacher, tmp_path / "whole.tgt"))
    out = tmp_path / "1.tgt"
    proc = start(distill_args(data, teacher, out), tmp_path / "1.log")
    parts = Path(f"{out}.parts")
    wait_for(lambda: len(list(parts.glob("0*.txt"))) >= 3, proc, "three finished chunks")
    proc.kill()
    proc.wait(timeout=30)
    assert not out.exists()
    done = len(list(parts.glob("0*.txt")))
    assert 3 <= done < 20, "the kill came after the whole shard was done: make the shard longer"
    second = run(*distill_args(data, teacher, out)).stderr
    assert f"{done} of 20 chunks already done" in second
    assert out.read_text() == (tmp_path / "whole.tgt").read_text()
    assert not parts.exists()


def test_distillation_chunks_of_other_settings_are_not_reused(data, teacher, tmp_path):
    out = tmp_path / "1.tgt"
    parts = Path(f"{out}.parts")
    parts.mkdir()
    (parts / "key.json").write_text('{"old": true}')
    (parts / "000000.txt").write_text("stale\n" * 60)
    err = run(*distill_args(data, teacher, out)).stderr
    assert "starting this shard over" in err
    assert "stale" not in out.read_text()


def test_gather_orders_shards_numerically_and_checks_them(tmp_path):
    src = tmp_path / "train.src"
    src.write_text("".join(f"s{i}\n" for i in range(12)))
    shards = []
    for k in range(12):  # shard 10 must come after 9, not after 1
        shards.append(tmp_path / f"{k}.tgt")
        shards[-1].write_text(f"t{k}\n")
    out = tmp_path / "train.tgt"
    run("gather", "--src", src, "--shards", *reversed(shards), "--count", 12, "--out", out)
    assert out.read_text().split() == [f"t{k}" for k in range(12)]
    out.unlink()
    bad = run("gather", "--src", src, "--shards", *shards[:11], "--count", 12, "--out", out, check=False)
    assert bad.returncode == 2 and "missing [11]" in bad.stderr and not out.exists()
    shards[3].write_text("")
    bad = run("gather", "--src", src, "--shards", *shards, "--count", 12, "--out", out, check=False)
    assert bad.returncode == 2 and "hold 11 lines" in bad.stderr and "3.tgt: 0" in bad.stderr
    assert not out.exists()


def test_a_lost_shard_reruns_only_that_shard(tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", TOY, distill={"shards": 4},
                       grid={"methods": ["beam"]})
    summary = snakemake(tmp_path, "--summary", configfile=cfg).stdout.splitlines()
    for line in summary[summary.index(next(x for x in summary if x.startswith("output_file"))) + 1:]:
        path = tmp_path / line.split("\t")[0]  # every output, as if the grid had run
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    snakemake(tmp_path, "--touch", "--cores", "1", configfile=cfg)  # in order: all up to date
    assert "Nothing to be done" in snakemake(tmp_path, "-n", configfile=cfg).stdout
    # shard 2 failed, so its gather never ran: asking for the distilled set plans that shard alone
    (tmp_path / "results/toy/distill/toy.beam/shards/2.tgt").unlink()
    (tmp_path / "results/toy/distill/toy.beam/train.tgt").unlink()
    proc = snakemake(tmp_path, "-n", "results/toy/distill/toy.beam/train.tgt", configfile=cfg)
    assert job_counts(proc.stdout) == {"distill": 1, "gather": 1}
    assert "wildcards: teacher=toy, method=beam, shard=2" in proc.stdout


def test_concurrent_gpu_jobs_on_one_machine_take_different_devices(tmp_path):
    """Snakemake counts GPUs but does not assign them: each job locks its own (no GPU needed)."""
    code = ("import sys, time; from kdgrid import devices; print(devices.claim(1, wait_seconds=2)[0], "
            "flush=True); time.sleep(float(sys.argv[1]))")
    e = {**env(), "CUDA_VISIBLE_DEVICES": "0,1", "KDGRID_GPU_LOCK_DIR": str(tmp_path)}
    e.pop("SLURM_JOB_ID", None)
    first = subprocess.Popen([sys.executable, "-c", code, "30"], stdout=subprocess.PIPE, text=True, env=e)
    second = subprocess.Popen([sys.executable, "-c", code, "30"], stdout=subprocess.PIPE, text=True, env=e)
    got = {first.stdout.readline().strip(), second.stdout.readline().strip()}
    third = subprocess.run([sys.executable, "-c", code, "0"], capture_output=True, text=True, env=e)
    first.kill(), second.kill()
    assert got == {"0", "1"}
    assert third.returncode != 0 and "no 1 free GPU(s)" in third.stderr
    under_slurm = subprocess.run([sys.executable, "-c", code, "0"], capture_output=True, text=True,
                                 env={**e, "SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "3"})
    assert under_slurm.stdout.strip() == "3"  # SLURM's choice is trusted
