"""bench/gpu_check.sh --dry-run: every section's Python on the CPU at tiny sizes, so that no
Python error reaches a GPU machine's short window."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["build", "kernel_tests", "model_tests", "dali_tests", "kernel_bench", "throughput", "compile",
            "profile", "e2e", "e2e_dali", "report"]
RESULTS = ["kernels.json", "throughput.json", "throughput-compile.json", "profile-off.json", "e2e.json",
           "e2e-dali.json"]


def gpu_check(*args, out):
    return subprocess.run(["bash", "bench/gpu_check.sh", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OUT": str(out), "PY": sys.executable}, timeout=900)


def test_section_limits_fit_the_gpu_windows():
    """The quick check within 4 minutes, the whole script within 8, and the lent machine's three
    calls (quick, rest, DALI) within 680 s of its 15 minutes, a start on top."""
    script = (ROOT / "bench" / "gpu_check.sh").read_text()
    limits = {mode: sum(int(s) for s in re.findall(r":(\d+)", spec))
              for mode, spec in re.findall(r'^  (\w+|\*)\) DEFAULT="([^"]+)"', script, re.M)}
    assert set(limits) == {"quick", "rest", "dali", "dry", "*"}
    assert limits["quick"] <= 240 and limits["*"] <= 480
    assert limits["quick"] + limits["rest"] + limits["dali"] <= 680


def test_a_dry_run_refuses_to_write_under_bench_results():
    r = gpu_check("--dry-run", out=ROOT / "bench" / "results" / "dry")
    assert r.returncode == 2 and "not under bench/results/" in r.stderr
    assert not (ROOT / "bench" / "results" / "dry").exists()


@pytest.mark.slow
def test_the_dry_run_runs_every_section_without_an_error(tmp_path):
    before = sorted(p.name for p in (ROOT / "bench" / "results").iterdir())
    out = tmp_path / "out"
    r = gpu_check("--dry-run", out=out)
    summary = (out / "summary.txt").read_text()
    status = {line.split()[0]: line.split(None, 2)[2] for line in summary.splitlines()}
    assert list(status) == SECTIONS, summary
    for name, s in status.items():  # ok, or skipped with its reason
        assert s == "ok" or (s.startswith("skipped: ") and len(s) > 20), (name, s, r.stdout[-3000:])
    assert r.returncode == 0, r.stdout[-3000:]
    for name in ("kernel_bench", "throughput", "compile", "profile", "e2e", "e2e_dali", "report"):
        assert status[name] == "ok", name
    for name in RESULTS:
        res = json.loads((out / name).read_text())
        assert res.get("not_reached", []) == [], name
    rows = {r["variant"] for r in json.loads((out / "throughput-compile.json").read_text())["results"]
            if "median_step_s" in r}
    assert rows == {"twocol", "twocol + torch.compile"}
    assert (out / "profile-off" / "timeline.png").stat().st_size > 0
    assert not (out / "profile-not-reached.txt").exists()  # every profile made
    assert "## Fused ReLU+LRN kernels" in (out / "report.md").read_text()
    assert sorted(p.name for p in (ROOT / "bench" / "results").iterdir()) == before
