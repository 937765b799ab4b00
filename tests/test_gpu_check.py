"""bench/gpu_check.sh: the dry run (every section's Python on the CPU at tiny sizes, so that no
Python error costs a GPU machine's time), from a copy of the tree without .git as a GPU machine
may get it; the section limits against the script's own words; a test section cut off by its
limit."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["build", "kernel_tests", "model_tests", "dali_tests", "kernel_bench", "throughput", "compile",
            "profile", "e2e", "e2e_dali", "report"]
RESULTS = ["kernels.json", "throughput.json", "throughput-compile.json", "profile-off.json", "e2e.json",
           "e2e-dali.json"]
USAGE = {"QUICK=1 ": "quick", " --rest": "rest", " --dali": "dali", "": "*"}


def gpu_check(*args, out, root=ROOT, env=None):
    return subprocess.run(["bash", "bench/gpu_check.sh", *args], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "OUT": str(out), "PY": sys.executable, **(env or {})}, timeout=900)


def test_section_limits_add_up_to_what_the_script_says():
    """Each mode's limits add up to the minutes its usage line gives and to the seconds the limits'
    comment gives; the quick check within 4 minutes; every section of the full run in one of the
    three parts (quick, rest, DALI)."""
    script = (ROOT / "bench" / "gpu_check.sh").read_text()
    specs = dict(re.findall(r'^  (\w+|\*)\) DEFAULT="([^"]+)"', script, re.M))
    assert set(specs) == {"quick", "rest", "dali", "dry", "*"}
    limits = {mode: sum(int(s) for s in re.findall(r":(\d+)", spec)) for mode, spec in specs.items()}
    names = {mode: {s.split(":")[0] for s in spec.split()} for mode, spec in specs.items()}
    assert limits["quick"] <= 240
    assert names["*"] <= names["quick"] | names["rest"] | names["dali"]
    stated = re.search(r"full: (\d+) s together; quick: (\d+); rest: (\d+); dali: (\d+)", script)
    assert [int(n) for n in stated.groups()] == [limits[m] for m in ("*", "quick", "rest", "dali")]
    usage = {USAGE[(q or "") + (flag or "")]: float(minutes) for q, flag, minutes in re.findall(
        r"^#   (QUICK=1 )?bash bench/gpu_check\.sh( --\w+)?\s+#[^\d\n]*([\d.]+) minutes", script, re.M)}
    assert usage == {"quick": 4, "rest": round(limits["rest"] / 60, 1), "dali": round(limits["dali"] / 60, 1),
                     "*": round(limits["*"] / 60, 1)}


def test_a_dry_run_refuses_to_write_under_bench_results():
    r = gpu_check("--dry-run", out=ROOT / "bench" / "results" / "dry")
    assert r.returncode == 2 and "not under bench/results/" in r.stderr
    assert not (ROOT / "bench" / "results" / "dry").exists()


def tree_without_git(dest: Path) -> Path:
    """The working tree as a GPU machine may get it: the tracked files and the untracked ones git
    does not ignore, and the built twocol._C (ignored), without .git."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    for name in map(os.fsdecode, filter(None, listed)):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    for built in (ROOT / "src" / "twocol").glob("_C*.so"):
        shutil.copy2(built, dest / "src" / "twocol" / built.name)
    assert not (dest / ".git").exists()
    return dest


@pytest.mark.slow
def test_the_dry_run_runs_every_section_and_records_the_commit_from_a_tree_without_git(tmp_path):
    # The full hash, where git here would say the short one: what the results hold came from the
    # variable, in a tree that has no .git.
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    root = tree_without_git(tmp_path / "tree")
    before = sorted(p.name for p in (root / "bench" / "results").iterdir())
    out = tmp_path / "out"
    r = gpu_check("--dry-run", out=out, root=root, env={"TWOCOL_COMMIT": commit})
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
        assert res.get("environment", res)["commit"] == commit, name  # profile.json: at its top
    machine = (out / "machine.txt").read_text()
    assert machine.startswith(f"commit: {commit}\n") and "\nxz: " in machine and "\n/dev/shm: " in machine
    assert r.stdout.count(f"commit: {commit}\n") == 2  # first, and again beside the summary
    rows = {r["variant"] for r in json.loads((out / "throughput-compile.json").read_text())["rows"]
            if "median_step_s" in r}
    assert rows == {"twocol", "twocol + torch.compile"}
    kernels = json.loads((out / "kernels.json").read_text())["rows"]
    assert kernels and all(r["host_median_ms"] == r["median_ms"] and r["host_bound"] == [] for r in kernels)
    assert (out / "profile-off" / "timeline.png").stat().st_size > 0
    assert not (out / "profile-not-reached.txt").exists()  # every profile made
    md = (out / "report.md").read_text()
    assert "## Fused ReLU+LRN kernels" in md and f"commit {commit}" in md
    assert sorted(p.name for p in (root / "bench" / "results").iterdir()) == before


@pytest.mark.slow
def test_a_test_section_cut_off_by_its_limit_still_says_what_passed_and_failed(tmp_path):
    """A section running tests the way the test sections do (run_tests), stopped by its limit
    in its third test: its log and its summary line still count the two tests before the cut."""
    tests = tmp_path / "test_cut.py"
    tests.write_text("import time\n\n\ndef test_one():\n    pass\n\n\ndef test_two():\n    assert False\n\n\n"
                     "def test_slow():\n    time.sleep(120)\n\n\ndef test_never():\n    pass\n")
    out = tmp_path / "out"
    # A section of its own, handed to the script as bash hands exported functions to a child.
    r = gpu_check(out=out, env={"SECTIONS": "cut:10", "BASH_FUNC_section_cut%%": f"() {{ run_tests {tests}; }}"})
    assert r.returncode == 1, r.stdout[-3000:]
    (line,) = (out / "summary.txt").read_text().splitlines()
    name, seconds, status = line.split(None, 2)
    assert (name, status) == ("cut", "FAILED (timed out; before the cut: 1 failed, 1 passed)"), line
    assert 10 <= int(seconds[:-1]) < 20
    log = (out / "cut.log").read_text()
    assert "KeyboardInterrupt: SIGTERM: the section's time limit" in log and "1 failed, 1 passed" in log
