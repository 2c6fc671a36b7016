"""Planning imports no torch: the facts the workflow plans with (method kinds, --wrap defaults, which
students rescore, the decoding backend's keys) live once, in kdgrid's torch-free modules, which the
workflow and the package both import. Each check runs in a fresh interpreter, so nothing an earlier
test imported counts."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, env

TOY_S5 = ROOT / "tests" / "configs" / "toy_section5.yaml"
# what common.smk and config_check.py import, the package faces that must stay light, and the
# modules of jobs that only move text (a gather job pays no torch import, ~2 CPU-s)
PLANNING = ["config_check", "filter_check", "resources", "kdgrid.methods.kinds", "kdgrid.kd.specs",
            "kdgrid.models.configs", "kdgrid.decoding_backend", "kdgrid.methods", "kdgrid.kd", "kdgrid.models",
            "kdgrid.shards"]


def _python(code: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env(),
                          timeout=300)


def test_the_planning_modules_import_no_torch():
    code = (f"import importlib, sys; sys.path.insert(0, {str(ROOT / 'workflow')!r}); "
            f"[importlib.import_module(m) for m in {PLANNING!r}]; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"planning imported torch modules: {proc.stdout[:500]}"


def test_a_dry_run_plans_without_torch(tmp_path):
    """The Snakefile's dry run with torch made unimportable (as on a host whose Python lacks it):
    any import of torch while planning would fail it."""
    code = ("import sys; sys.modules['torch'] = None; from snakemake.cli import main; "
            f"sys.argv = ['snakemake', '-s', {str(ROOT / 'Snakefile')!r}, '--directory', {str(tmp_path)!r}, "
            f"'-n', '--quiet', '--configfile', {str(TOY_S5)!r}]; main()")
    proc = _python(code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
