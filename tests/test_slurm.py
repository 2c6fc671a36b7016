"""The cluster profiles. `snakemake --profile slurm` and `--profile profiles/workstation`, typed in
the repository root, plan the grid with the GPU rules on one GPU each; and the toy grid runs to
completion through the SLURM profile on a real single-node SLURM (Debian's packages, installed and
started here when running as root with apt-get; set KDGRID_SKIP_SLURM=1 to skip that test)."""

from __future__ import annotations

import csv
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TOY, env, job_counts, snakemake, write_config

TOY_MULTIWAY = ROOT / "tests" / "configs" / "toy_multiway.yaml"
GPU_RULES = {"train_teacher", "train_ban", "train_student", "distill", "evaluate_teacher", "evaluate_student",
             "evaluate_teacher_test_set", "evaluate_student_test_set"}
LOCAL_RULES = {"gather", "aggregate", "store_put", "fetch_teacher", "fetch_distilled", "fetch_alignment",
               "fetch_raw_alignment"}  # run by Snakemake itself, never queued
SITE_VARS = ("KDGRID_ACCOUNT", "KDGRID_PARTITION", "KDGRID_GPU_PARTITION", "KDGRID_JOBS", "KDGRID_GPUS",
             "KDGRID_CORES", "KDGRID_MEM_MB")
RESOURCES = yaml.safe_load((ROOT / "workflow" / "defaults.yaml").read_text())["compute"]["resources"]


def site_env(**values) -> dict:
    """The test environment with the profiles' site variables set to exactly `values`."""
    e = {k: v for k, v in env().items() if k not in SITE_VARS}
    return {**e, **values}


def snakemake_in_root(*args, environ: dict, timeout=300) -> subprocess.CompletedProcess:
    """`snakemake ARGS` as typed in the repository root (profiles are found relative to it)."""
    cmd = [str(Path(sys.executable).parent / "snakemake"), *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=environ, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def job_resources(output: str) -> dict[str, list[dict[str, str]]]:
    """{rule: [resources of each planned job]} from a dry run's job descriptions."""
    jobs, rule = {}, None
    for line in output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
        elif rule and line.strip().startswith("resources:"):
            items = line.split("resources:", 1)[1].split(", ")
            jobs.setdefault(rule, []).append(dict(item.strip().split("=", 1) for item in items))
    return jobs


def all_rules(tmp_path) -> set[str]:
    """Every rule of the workflow, the multi-way ones included."""
    return set(snakemake(tmp_path, "--list-rules", configfile=TOY_MULTIWAY).stdout.split()) - {"all"}


def profile(path: Path) -> dict:
    """A profile's YAML as written (its expressions unevaluated)."""
    return yaml.safe_load(path.read_text())


def parse_profile(path: Path) -> dict:
    """A profile as Snakemake reads it, under this process's environment: {option: value or list}."""
    from snakemake.profiles import ProfileConfigFileParser

    with open(path) as f:
        return ProfileConfigFileParser().parse(f)


# -- dry runs (no SLURM needed) --------------------------------------------------------------
def test_slurm_profile_covers_every_rule(tmp_path):
    prof = profile(ROOT / "slurm" / "config.yaml")
    rules = all_rules(tmp_path)
    assert set(prof["set-resources"]) == rules, "every rule needs its SLURM resources in slurm/config.yaml"
    assert set(prof["set-threads"]) == rules
    gpu = {r for r, res in prof["set-resources"].items() if res.get("gpu") or res.get("<", {}).get("gpu")}
    assert gpu == GPU_RULES
    wanted = {"executor": "slurm", "rerun-incomplete": True, "printshellcmds": True}
    assert {k: prof[k] for k in wanted} == wanted and prof["retries"] >= 1 and prof["latency-wait"] >= 10
    assert "slurm-status-command" not in prof, "sacct (the plugin's default where it exists) suits real clusters"
    ws = profile(ROOT / "profiles" / "workstation" / "config.yaml")
    assert set(ws["set-resources"]) == GPU_RULES


def test_slurm_profile_dry_run_plans_gpu_jobs(tmp_path):
    """`snakemake --profile slurm -n` in the repository root: the demo grid, GPU rules on one GPU
    and as many CPUs per GPU as threads, CPU rules with cpus_per_task; site settings from the
    environment."""
    environ = site_env(KDGRID_PARTITION="cpuq", KDGRID_GPU_PARTITION="gpuq", KDGRID_ACCOUNT="proj")
    proc = snakemake_in_root("--profile", "slurm", "-n", "--cores", "64", "--directory", str(tmp_path),
                             environ=environ)
    assert "Using profile slurm" in proc.stdout + proc.stderr
    counts = job_counts(proc.stdout)
    assert counts["train_student"] == 7 and counts["train_teacher"] == 2  # config.yaml: the demo grid
    prof = profile(ROOT / "slurm" / "config.yaml")
    jobs = job_resources(proc.stdout)
    assert set(jobs) == set(counts)
    for rule, planned in jobs.items():
        if rule == "all":
            continue
        threads = str(prof["set-threads"][rule])
        for res in planned:
            assert res["slurm_account"] == "proj", rule
            own = RESOURCES.get(rule) or RESOURCES[rule.removesuffix("_valid")]  # the valid split: evaluate's
            assert res["mem_mb"] == str(own["mem_mb"]), rule  # from the config
            if rule in GPU_RULES:
                assert (res["gpu"], res["cpus_per_gpu"], res["slurm_partition"]) == ("1", threads, "gpuq"), rule
            else:
                assert "gpu" not in res or res["gpu"] == "0", rule
                assert (res["cpus_per_task"], res["slurm_partition"]) == (threads, "cpuq"), rule
    assert jobs["train_teacher"][0]["runtime"] == str(24 * 60)  # minutes
    # without site variables: no account, no partition (the plugin's and the cluster's defaults)
    proc = snakemake_in_root("--profile", "slurm", "-n", "--directory", str(tmp_path), environ=site_env())
    for planned in job_resources(proc.stdout).values():
        for res in planned:
            assert "slurm_account" not in res and "slurm_partition" not in res


@pytest.mark.parametrize("gpus", [2, 0])
def test_workstation_profile_dry_run(tmp_path, monkeypatch, gpus):
    """`snakemake --profile profiles/workstation -n`: GPU rules on one GPU each, at most N at once
    (N = KDGRID_GPUS); with no GPU every rule runs on the CPU."""
    proc = snakemake_in_root("--profile", "profiles/workstation", "-n", "--directory", str(tmp_path),
                             environ=site_env(KDGRID_GPUS=str(gpus)))
    jobs = job_resources(proc.stdout)
    assert job_counts(proc.stdout)["train_student"] == 7
    for rule, planned in jobs.items():
        for res in planned:
            assert res.get("gpu", "0") == ("1" if gpus and rule in GPU_RULES else "0"), rule
    for var in SITE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KDGRID_GPUS", str(gpus))
    monkeypatch.setenv("KDGRID_MEM_MB", "20000")
    parsed = parse_profile(ROOT / "profiles" / "workstation" / "config.yaml")
    assert parsed["resources"] == [f"gpu={gpus}", "mem_mb=20000"] and parsed["cores"] == "all"


def test_jobs_ask_for_more_memory_and_time_on_each_retry(tmp_path):
    """A job that ran out of memory or time asks for attempt x its config's amounts, within the
    caps; training keeps its time limit, since its retry resumes."""
    proc = snakemake_in_root("--profile", "slurm", "-n", "--directory", str(tmp_path), environ=site_env())
    first = job_resources(proc.stdout)["align_raw"][0]
    assert (first["mem_mb"], first["runtime"]) == (str(RESOURCES["align_raw"]["mem_mb"]),
                                                   str(RESOURCES["align_raw"]["runtime"]))
    sys.path.insert(0, str(ROOT / "workflow"))
    from resources import per_attempt

    assert [per_attempt(48000, 100000)(None, attempt) for attempt in (1, 2, 3)] == [48000, 96000, 100000]
    assert [per_attempt(1440, 2880, grows=False)(None, attempt) for attempt in (1, 2, 3)] == [1440] * 3


def test_the_workstation_profile_schedules_by_memory(tmp_path):
    """Jobs carry their config's memory, capped at the machine's (KDGRID_MEM_MB), against which
    Snakemake schedules: two 48-64 GB alignment jobs do not start together on a 50 GB machine."""
    environ = site_env(KDGRID_GPUS="0", KDGRID_MEM_MB="50000")
    proc = snakemake_in_root("--profile", "profiles/workstation", "-n", "--directory", str(tmp_path), environ=environ)
    jobs = job_resources(proc.stdout)
    assert [int(r["mem_mb"]) for r in jobs["align_distilled"]] == [50000] * len(jobs["align_distilled"])
    assert int(jobs["align_raw"][0]["mem_mb"]) == 48000 and int(jobs["prepare"][0]["mem_mb"]) == 16000


# -- a real single-node SLURM ----------------------------------------------------------------
SLURM_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
SLURM_BINARIES = ["slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "munged", "munge"]
# The plugin's job step strips SLURM_* variables (SLURM_CONF too) before its inner `srun`, which
# then finds no configuration: the test's cluster must use the default path.
CONF = Path("/etc/slurm/slurm.conf")
MARK = "# kdgrid test cluster (tests/test_slurm.py); removed when the test ends\n"


def slurm_unavailable() -> str | None:
    """Why this machine cannot get a SLURM of its own, or None."""
    if os.environ.get("KDGRID_SKIP_SLURM", "").strip() not in ("", "0"):
        return "KDGRID_SKIP_SLURM is set"
    if not sys.platform.startswith("linux") or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "a real SLURM needs root (to install Debian's slurm packages and start munged/slurmctld/slurmd)"
    if not all(shutil.which(b) for b in SLURM_BINARIES) and not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it"
    if CONF.exists() and not CONF.read_text().startswith(MARK):
        return f"{CONF} exists: this machine has a SLURM configuration of its own, which the test leaves alone"
    return None


def install_slurm():
    if all(shutil.which(b) for b in SLURM_BINARIES):
        return
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *SLURM_PACKAGES]
    if subprocess.run(install, env=apt_env, capture_output=True, text=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=apt_env, capture_output=True, text=True, check=True)
        proc = subprocess.run(install, env=apt_env, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"apt-get install {' '.join(SLURM_PACKAGES)} failed:\n{proc.stdout[-2000:]}"
                        f"{proc.stderr[-2000:]}")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_for(what: str, check, timeout: float, logs=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tails = "".join(f"\n--- {p}:\n{Path(p).read_text()[-1500:]}" for p in logs if Path(p).exists())
    pytest.fail(f"{what}: not after {timeout:.0f}s{tails}")


class Slurm:
    """munged (unless one already answers), slurmctld and slurmd in the foreground as children of
    this process, configured by /etc/slurm/slurm.conf (written here, removed at the end), with
    state, logs and free ports of their own in `home`."""

    def __init__(self, home: Path):
        self.home = home
        self.conf = CONF
        self.jobcomp = home / "jobcomp.log"
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def write_conf(self):
        for d in ("state", "spool", "log"):
            (self.home / d).mkdir(parents=True, exist_ok=True)
        mem_mb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) // 1024
        ctld_port, slurmd_port = free_ports(2)
        h = self.home
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(MARK + f"""\
ClusterName=kdgrid-test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={h}/state
SlurmdSpoolDir={h}/spool
SlurmctldPidFile={h}/slurmctld.pid
SlurmdPidFile={h}/slurmd.pid
SlurmctldLogFile={h}/log/slurmctld.log
SlurmdLogFile={h}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
MinJobAge=600
ReturnToService=2
SchedulerType=sched/backfill
NodeName=localhost NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={mem_mb * 9 // 10} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")

    def munge_works(self) -> bool:
        cred = subprocess.run(["munge", "-n"], capture_output=True)
        return cred.returncode == 0 and subprocess.run(["unmunge"], input=cred.stdout,
                                                        capture_output=True).returncode == 0

    def start(self):
        self.write_conf()
        if not self.munge_works():
            run = Path("/run/munge")
            run.mkdir(exist_ok=True)
            shutil.chown(run, "munge", "munge")
            run.chmod(0o755)
            (run / "munged.pid").unlink(missing_ok=True)  # stale, from a daemon that is gone
            if not Path("/etc/munge/munge.key").exists():
                subprocess.run(["mungekey", "--create"], check=True, user="munge", group="munge")
            self.spawn("munged", ["munged", "-F", f"--log-file={self.home}/log/munged.log"],
                       user="munge", group="munge", extra_groups=[])
            wait_for("munged answering", self.munge_works, 20, [self.home / "log/munged.log"])
        self.spawn("slurmctld", ["slurmctld", "-D", "-c"])
        self.spawn("slurmd", ["slurmd", "-D", "-N", "localhost"])
        wait_for("an idle SLURM node", self.node_idle, 60,
                 [self.home / "log/slurmctld.log", self.home / "log/slurmd.log"])

    def spawn(self, name, cmd, **kwargs):
        out = open(self.home / "log" / f"{name}.out", "w")
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **kwargs)
        self.procs.append((name, proc))

    def node_idle(self) -> bool:
        for name, proc in self.procs:
            if proc.poll() is not None:
                log = (self.home / "log" / f"{name}.out").read_text()[-2000:]
                pytest.fail(f"{name} exited with {proc.returncode}:\n{log}")
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() == "idle"

    def stop(self):
        if any(name == "slurmctld" and proc.poll() is None for name, proc in self.procs):
            subprocess.run(["scancel", "--full", "--user", "root"], capture_output=True)
            wait_for_queue = time.monotonic() + 20
            while time.monotonic() < wait_for_queue:
                q = subprocess.run(["squeue", "-h", "-t", "PD,R,CG"], capture_output=True, text=True)
                if q.returncode != 0 or not q.stdout.strip():
                    break
                time.sleep(0.5)
        for _, proc in reversed(self.procs):  # slurmd, slurmctld, then munged
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        for pid_file in (self.home / "slurmctld.pid", self.home / "slurmd.pid", Path("/run/munge/munged.pid")):
            pid_file.unlink(missing_ok=True)
        if self.conf.exists() and self.conf.read_text().startswith(MARK):
            self.conf.unlink()

    def jobs(self) -> list[dict[str, str]]:
        """Every finished job, from the job completion log (there is no accounting database)."""
        if not self.jobcomp.exists():
            return []
        return [dict(f.split("=", 1) for f in line.split() if "=" in f)
                for line in self.jobcomp.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def slurm():
    reason = slurm_unavailable()
    if reason:
        pytest.skip(reason)
    install_slurm()
    home = Path(tempfile.mkdtemp(prefix="kdgrid-slurm-"))
    cluster = Slurm(home)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)


def override_profile(directory: Path, monkeypatch) -> Path:
    """The test's second profile, over `slurm/`: its per-rule resources with no GPU and small
    memory (the test node has 2 CPUs and no GPU), one thread per job, squeue for status
    (sacct needs slurmdbd, which this test does not run), fast first status check, kept job logs."""
    for var in SITE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KDGRID_PARTITION", "debug")
    parsed = parse_profile(ROOT / "slurm" / "config.yaml")
    resources = []
    for entry in parsed["set-resources"]:
        target, value = entry.split("=", 1)
        key = target.split(":", 1)[1]
        if key == "gpu":
            value = "0"
        resources.append(f"{target}={value}")
    resources += [f"{rule}:mem_mb=1000" for rule in RESOURCES]  # the config's amounts fit no test node
    override = {
        "set-resources": resources,
        "set-threads": [f"{entry.split('=')[0]}=1" for entry in parsed["set-threads"]],
        "slurm-status-command": "squeue",
        # the plugin checks again after this many seconds while jobs finish, and 10 s later each time
        # none has: a level of the grid's DAG costs this where its jobs end within it, else 2x + 10 s.
        # 2 s: ~14 s a level, the test 131 s in make test; 6 s, tried: 163 s; 5 s (jobs without
        # byte code, slower): 308 s against 240 s with 2
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-keep-successful-logs": True,
        "retries": 0,
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(override, sort_keys=False))
    return directory


@pytest.mark.slow
@pytest.mark.slurm
def test_toy_grid_runs_through_slurm(slurm, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    override = override_profile(tmp_path / "test-profile", monkeypatch)
    environ = site_env(KDGRID_PARTITION="debug")
    start = time.monotonic()
    # the toy grid with its beam column only: every kind of job still goes through SLURM once or more;
    # its teacher, set and alignments go into a shared store (share.store) for the second grid below
    shared = {"grid": {"methods": ["beam"]}, "share": {"store": str(tmp_path / "store")}}
    config = write_config(tmp_path / "toy_beam.yaml", TOY, **shared)
    proc = snakemake_in_root("--profile", "slurm", "--profile", str(override), "--directory", str(work),
                             f"--configfile={config}", "--show-failed-logs", environ=environ, timeout=600)
    elapsed = time.monotonic() - start
    log = proc.stdout + proc.stderr
    assert "Using profile" in log

    # the grid: a BLEU in every cell, C(d) and F(d) below
    rows = list(csv.DictReader(open(work / "results/toy/grid.csv")))
    assert [r["student"] for r in rows] == ["nat", "C(d)", "F(d)"]
    assert list(rows[0]) == ["student", "raw", "toy.beam"]
    for row in rows:
        for value in list(row.values())[1:]:
            assert 0.0 <= float(value) <= 100.0, row

    # every job went through SLURM: one completed SLURM job per Snakemake job, in partition debug
    planned = {r: n for r, n in job_counts(log).items() if r not in LOCAL_RULES}
    expected = sum(n for rule, n in planned.items() if rule != "all")
    done = [j for j in slurm.jobs() if j.get("WorkDir") == str(work)]
    assert len(done) == expected, (planned, done)
    assert {j["JobState"] for j in done} == {"COMPLETED"} and {j["Partition"] for j in done} == {"debug"}
    by_id = {j["JobId"]: j for j in done}
    logs = sorted((work / ".snakemake" / "slurm_logs").rglob("*.log"))  # rule_<rule>/[wildcards/]<jobid>.log
    rule_of = {p.stem: p.relative_to(work / ".snakemake" / "slurm_logs").parts[0].removeprefix("rule_")
               for p in logs}
    assert set(rule_of) == set(by_id)
    assert {r: list(rule_of.values()).count(r) for r in set(rule_of.values())} == \
        {r: n for r, n in planned.items() if r != "all"}
    # the profile's run times reached sbatch (train_teacher: 24 h)
    teacher = next(by_id[i] for i, r in rule_of.items() if r == "train_teacher")
    assert teacher["TimeLimit"] in ("1-00:00:00", "1440"), teacher
    print(f"toy grid through SLURM: {len(done)} jobs in {elapsed:.0f}s")

    # A second config (another results folder) with the same teacher and set: it submits no job that
    # makes them (training, distillation, alignment); the store's products are local fetch jobs.
    work_b = tmp_path / "work_b"
    work_b.mkdir()
    config_b = write_config(tmp_path / "toy_b.yaml", TOY, corpus={"name": "toyb"}, **shared)
    targets = ["results/toyb/teachers/toy/model.pt", "results/toyb/distill/toy.beam/data_metrics.json"]
    proc = snakemake_in_root("--profile", "slurm", "--profile", str(override), "--directory", str(work_b),
                             f"--configfile={config_b}", *targets, "--show-failed-logs", environ=environ,
                             timeout=600)
    planned_b = job_counts(proc.stdout + proc.stderr)
    submitted = [j for j in slurm.jobs() if j.get("WorkDir") == str(work_b)]
    assert {r for r in planned_b if r.startswith("fetch_")} == {"fetch_teacher", "fetch_distilled", "fetch_alignment"}
    assert len(submitted) == sum(n for r, n in planned_b.items() if r not in LOCAL_RULES | {"all"}) > 0, planned_b
    assert not {"train_teacher", "distill", "align_distilled"} & set(planned_b), planned_b
    assert (work_b / "results/toyb/teachers/toy/model.pt").read_bytes() == \
        (work / "results/toy/teachers/toy/model.pt").read_bytes()
