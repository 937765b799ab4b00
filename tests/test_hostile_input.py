"""Hostile input: small files that would expand without bound,
binary files where text is expected, values no code path can use, the thread count. Each gets
exit code 2 and one line naming the file or key, within bounded memory and time."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch

from twocol.errors import ConfigError
from twocol.threads import cgroup_cpus, choose_threads

from conftest import one_line_error, twocol_in_process as twocol

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def laughs(levels: int = 9, width: int = 9) -> str:
    """The 'billion laughs' as a YAML flow list: level i holds `width` aliases of level i-1,
    so the last expands to width ** levels strings (9 ** 9 = 387 million) from 412 bytes."""
    parts = ["&a0 [" + ",".join(['"lol"'] * width) + "]"]
    parts += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


# Runs each case through the CLI with the address space capped at 100 MB above what the
# process holds once torch is loaded, and prints its exit code and seconds as JSON lines.
BOUNDED = textwrap.dedent("""
    import json, resource, sys, time
    import torch
    from twocol.cli import main
    cases = json.loads(sys.argv[1])
    vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:")) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + 100 * 2 ** 20, resource.RLIM_INFINITY))
    for args in cases:
        start = time.perf_counter()
        code = main(args)
        print(json.dumps({"code": code, "seconds": time.perf_counter() - start}), flush=True)
""")


def deflated_checkpoint(small, out, size=16 * 2 ** 20):
    """A checkpoint whose one tensor record is `size` bytes of zeros, deflated (to about 1/1000):
    torch.load reads compressed members too, allocating what they expand to (200 MB from 200 KB
    measured here)."""
    torch.save({"format": 1, "model": {"w": torch.zeros(4)}, "config": {}}, small)
    with zipfile.ZipFile(small) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            name = "x/" + info.filename.split("/", 1)[1]
            if name != "x/data/0":
                dst.writestr(name, src.read(info))
                continue
            record = zipfile.ZipInfo(name)
            record.compress_type = zipfile.ZIP_DEFLATED
            with dst.open(record, "w", force_zip64=True) as f:
                block = bytes(2 ** 22)
                for _ in range(size // len(block)):
                    f.write(block)
    assert out.stat().st_size < 2 ** 20


def test_expanding_and_absurd_inputs_are_refused_in_bounded_memory_and_time(tmp_path):
    bomb = laughs()
    assert len(f"name: {bomb}\n") == 412  # a 412-byte file
    (tmp_path / "bomb.yaml").write_text(f"name: {bomb}\n")
    nested = ["lol"] * 9  # the same tree in a checkpoint's stored config: shared references
    for _ in range(8):
        nested = [nested] * 9
    torch.save({"format": 1, "model": {}, "config": {"name": nested}}, tmp_path / "bomb.pt")
    assert (tmp_path / "bomb.pt").stat().st_size < 4096
    deflated_checkpoint(tmp_path / "small.pt", tmp_path / "zipped.pt")
    (tmp_path / "deep.yaml").write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp_path / "big.yaml").write_text("description: '" + "x" * 100_000 + "'\n")
    tiny = ["-c", "configs/tiny_twocol.yaml", "--gpus", "cpu"]
    cases = [["describe", "-c", str(tmp_path / "bomb.yaml")],
             ["describe", *tiny, f"name={bomb}"],
             ["eval", "--ckpt", str(tmp_path / "bomb.pt"), "--gpus", "cpu", "--threads", "1"],
             ["eval", "--ckpt", str(tmp_path / "zipped.pt"), "--gpus", "cpu", "--threads", "1"],
             ["describe", "-c", str(tmp_path / "deep.yaml")],
             ["describe", "-c", str(tmp_path / "big.yaml")],
             ["describe", *tiny, "model.conv_widths=[100000000,16,24,24,16]"],
             ["describe", *tiny, "model.input_size=2000", "data.image_size=2000", "model.fc_widths=[4096,4096]"],
             ["describe", *tiny, "data.batch_size=100000000"]]
    r = subprocess.run([sys.executable, "-c", BOUNDED, json.dumps(cases)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"},
                       timeout=300)
    results = [json.loads(line) for line in r.stdout.splitlines()]
    errors = r.stderr.splitlines()
    assert len(results) == len(cases) and len(errors) == len(cases), r.stderr[-3000:]
    needles = ["bomb.yaml: YAML aliases (*a0) are not allowed", "override 'name=[&a0", "bomb.pt: more than 10,000 values",
               "zipped.pt is not a twocol checkpoint: its member 'x/data/0' is compressed",
               "deep.yaml: not valid YAML", "big.yaml: larger than a config's limit of 65,536 bytes",
               "parameters, over the limit of 1,000,000,000", "parameters, over the limit of 1,000,000,000",
               "GiB for a training step of data.batch_size=100000000"]
    for result, line, needle in zip(results, errors, needles):
        assert result["code"] == 2 and line.startswith("twocol: error: ") and needle in line, (line, needle)
        assert len(line) < 400, line  # an excerpt of the value, never the value
        assert result["seconds"] < 10, (line, result)  # the unbounded versions took 55 s and more


@pytest.mark.parametrize("args,needles", [
    (["--gpus", "\u00b2"], ["--gpus '\u00b2' is not 'cpu' or a list of GPU ids"]),
    (["data.workers=-1"], ["data.workers must be >= 0"]),
    (["name=../../etc"], ["name must be 1 to 100 printable characters without '/'"]),
    (["model.input_size=0"], ["model.input_size must be positive"]),
    (["data.image_size=100000"], ["data.image_size must be at most 2048"]),
    (["model.nope=" + "x" * 5000 + "\n"], ["override 'model.nope=xxxx", "...': unknown key 'model.nope'"]),
    (["model.lrn.k=" + "[" * 100 + "]" * 100], ["model.lrn.k", "nested more than 16 deep"]),
    (["data.batch_size=" + "1" * 5000], ["data.batch_size must be int, got '1111"]),  # over int()'s 4300 digits
    (["model.input_size=" + "9" * 300], ["model.input_size must be int, got one of 300 digits"]),
    (["optim.lr=1e99999"], ["optim.lr must be a finite number, got inf"]),
])
def test_bad_values_are_one_line_naming_the_key(capsys, args, needles):
    code, _, err = twocol(capsys, "describe", "-c", "configs/tiny_twocol.yaml", *args)
    one_line_error(code, err, *needles)
    assert len(err) < 400


@pytest.mark.parametrize("content,needle", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not a text file (not UTF-8)"),
    (b"data:\n  batch_size: " + b"1" * 5000 + b"\n", "not valid YAML (Exceeds the limit (4300 digits)"),
])
def test_a_config_file_python_cannot_read_is_one_line(tmp_path, capsys, content, needle):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    one_line_error(*twocol(capsys, "describe", "-c", path)[::2], f"{path}: {needle}")


@pytest.fixture
def data(tiny_set):
    return tiny_set


def truncate(path):
    path.write_bytes(path.read_bytes()[:100])


def empty(path):
    path.write_bytes(b"")


def binary(path):
    path.write_bytes(b"\x00\xff\xfe" * 10)


def npz_claiming_a_huge_mean(path):
    # A zip member whose header says 50000 x 50000 x 3 float32 (30 GB) but holds none of it.
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (50000, 50000, 3), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mean.npy", npy)
        for name, arr in (("eigvals", np.ones(3)), ("eigvecs", np.eye(3))):
            with z.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, arr)


@pytest.mark.parametrize("name,spoil,needle", [
    ("stats.npz", truncate, "stats.npz is corrupt"),
    ("stats.npz", empty, "stats.npz is corrupt"),
    ("stats.npz", npz_claiming_a_huge_mean, "stats.npz: mean (50000, 50000, 3)"),
    ("train.txt", binary, "train.txt is not a text file"),
    ("classes.txt", binary, "classes.txt is not a text file"),
])
def test_a_corrupt_dataset_file_is_one_line_naming_it(data, tmp_path, capsys, name, spoil, needle):
    root = shutil.copytree(data, tmp_path / "set")
    spoil(root / name)
    code, _, err = twocol(capsys, "train", "--gpus", "cpu", "--threads", "1", "--data", root, "--run-dir",
                          tmp_path / "run", "-c", "configs/tiny_twocol.yaml", "data.loader=torch")
    one_line_error(code, err, needle)


def test_thread_count_follows_the_option_the_environment_and_the_cgroup_quota(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # within any machine's CPUs (more are lowered: test_hostile_limits)
    assert choose_threads(1) == (1, "--threads")
    assert choose_threads() == (1, "OMP_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "\u00b2")
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS"):
        choose_threads()
    monkeypatch.delenv("OMP_NUM_THREADS")
    n, why = choose_threads()
    assert n == min(len(os.sched_getaffinity(0)), int(cgroup_cpus() or 10 ** 6)) and n >= 1, why
    one_line_error(*twocol(capsys, "eval", "--ckpt", tmp_path / "x.pt", "--threads", "0")[::2],
                   "--threads must be at least 1")
    # cgroup v2 (a container's --cpus 1.5 on the process's own group, none above) and v1
    (tmp_path / "proc").write_text("0::/job/task\n")
    (tmp_path / "v2" / "job" / "task").mkdir(parents=True)
    (tmp_path / "v2" / "cpu.max").write_text("max 100000\n")
    (tmp_path / "v2" / "job" / "task" / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpus(tmp_path / "v2", tmp_path / "proc") == 1.5
    (tmp_path / "proc").write_text("4:memory:/x\n3:cpu,cpuacct:/docker/abc\n")
    (tmp_path / "v1" / "cpu,cpuacct" / "docker" / "abc").mkdir(parents=True)
    (tmp_path / "v1" / "cpu,cpuacct" / "docker" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "v1" / "cpu,cpuacct" / "docker" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "v1" / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpus(tmp_path / "v1", tmp_path / "proc") == 3.0
    assert cgroup_cpus(tmp_path / "none", tmp_path / "proc") is None
