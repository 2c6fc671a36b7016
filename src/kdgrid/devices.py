"""Which GPUs a job may use, and multi-GPU launch under torchrun.

Snakemake counts GPUs (`--resources gpu=N` caps how many GPU jobs run at once) but does not say
which device a job should use; SLURM does (it sets CUDA_VISIBLE_DEVICES). So a job told it has
`--gpus N` either trusts CUDA_VISIBLE_DEVICES, or claims N free devices itself with lock files
that it holds for its lifetime, so that concurrent jobs on one workstation never share a GPU.
A training job given more than one GPU re-runs itself under torchrun, one process per GPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from kdgrid.errors import KdgridError
from kdgrid.progress import log

LOCK_DIR = Path(os.environ.get("KDGRID_GPU_LOCK_DIR", "/tmp/kdgrid-gpu-locks"))
LAUNCHED = "KDGRID_LAUNCHED"  # set in torchrun's workers: they must not claim or launch again
_held: list = []  # open lock files; closing them (at exit) frees the devices


def visible_gpu_count() -> int:
    """GPUs on this machine, counted without initialising CUDA in this process (a CUDA
    initialisation would freeze CUDA_VISIBLE_DEVICES before we set it)."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return 0
    return sum(1 for line in out.splitlines() if line.strip())


def claim(n: int, wait_seconds: float = 600.0) -> list[str]:
    """Reserve `n` GPUs for this process and set CUDA_VISIBLE_DEVICES; returns their ids."""
    given = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    slurm_job = os.environ.get("SLURM_JOB_ID")
    if given and slurm_job and len(given) == n:  # SLURM chose exactly these devices for this job
        return given
    # Otherwise the visible devices may be shared by concurrent jobs (a workstation, or Snakemake
    # running inside one SLURM allocation): lock among them.
    candidates = given or [str(i) for i in range(visible_gpu_count())]
    if len(candidates) < n:
        raise KdgridError(f"the job asked for {n} GPU(s) (resources gpu={n}) but this machine "
                          f"shows {len(candidates)}; run with --resources gpu=<number of GPUs> or "
                          "set the rule's gpu resource to 0 in the profile")
    lock_dir = LOCK_DIR / f"slurm-{slurm_job}" if slurm_job else LOCK_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # shared by every user of the machine
        os.chmod(LOCK_DIR, 0o1777)
        os.chmod(lock_dir, 0o1777)
    deadline = time.monotonic() + wait_seconds
    while True:
        got = []
        for i in candidates:
            fd = os.open(lock_dir / f"gpu{i}.lock", os.O_CREAT | os.O_RDWR, 0o666)
            f = os.fdopen(fd, "r+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            got.append((i, f))
            if len(got) == n:
                break
        if len(got) == n:
            _held.extend(f for _, f in got)
            ids = [i for i, _ in got]
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
            log(f"using GPU(s) {','.join(ids)} (locks in {lock_dir})")
            return ids
        for _, f in got:
            f.close()
        if time.monotonic() > deadline:
            raise KdgridError(f"no {n} free GPU(s) after {wait_seconds:.0f}s: other jobs hold the "
                              f"locks in {lock_dir}; cap GPU jobs with --resources gpu=N")
        time.sleep(5)


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """Run `python -m kdgrid ARGV` as `nproc` torchrun workers and return their exit code.
    SIGTERM/SIGINT are forwarded to torchrun, which passes them on to the workers (they save a
    checkpoint and stop) - except under SLURM, which signals every process of the job itself: a
    second signal would make torchrun give up waiting for the workers' checkpoint."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "--shutdown-timeout=300", "-m", "kdgrid", *argv]
    log(f"launching {nproc} training processes: {' '.join(cmd)}")
    child = subprocess.Popen(cmd, env={**os.environ, LAUNCHED: "1"})
    under_slurm = bool(os.environ.get("SLURM_JOB_ID"))

    def forward(signum, frame):
        if not under_slurm:
            child.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return child.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def strip_gpus(argv: list[str]) -> list[str]:
    """ARGV without its `--gpus N` (the workers of a launch must not launch again)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--gpus":
            skip = True
            continue
        if arg.startswith("--gpus="):
            continue
        out.append(arg)
    return out


def device():
    """This process's device: its own GPU under torchrun, else the (claimed) GPU, else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


DEVICE_LINE = "kdgrid device:"  # read by kdgrid.costs


def announce() -> None:
    """Name the device this process ran on, in the job's log, when it is done: one line per
    process (per torchrun worker). The cost table counts a job's GPUs from these lines."""
    log(f"{DEVICE_LINE} {device()}")


def init_distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when started by torchrun with >1 process
    (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dev = device()
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()
