import os

# Idle OpenMP threads sleep instead of spinning, as the CLI arranges for itself (twocol.threads):
# it must be set before torch loads, and tests call the CLI in this process.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from twocol import sim  # noqa: E402
from twocol.cli import main  # noqa: E402
from twocol.config import load_config  # noqa: E402
from twocol.data import loader as loader_module  # noqa: E402
from twocol.data.synth import synthesize  # noqa: E402

CONFIGS = "configs"


def config(name, *overrides):
    return load_config(f"{CONFIGS}/{name}.yaml", list(overrides))


@pytest.fixture(autouse=True)
def isolation_checked():
    """The column isolation checker is on in every test."""
    with sim.ColumnIsolation():
        yield


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def twocol_in_process(capsys, *args):
    """`twocol ARGS` through the CLI's main() in this process (a subprocess would spend a second
    importing torch per call): (exit code, stdout, stderr), as a user would see them. Bytes
    arguments (file names that are not UTF-8) are passed as the OS would."""
    try:
        code = main([os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args])
    except SystemExit as e:  # argparse's errors and --help
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *needles):
    """Exit code 2 and one line, `twocol: error: ...`, holding every needle, no traceback."""
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("twocol: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


# The loader tests' small set: 3 classes of 12 images of 20 px, 16 px crops, batches of 8.
LOADER_SIZE, LOADER_CROP, LOADER_BATCH = 20, 16, 8
LOADER_BACKENDS = ["torch", pytest.param("dali", marks=pytest.mark.skipif(
    loader_module.dali_problem("cpu") is not None, reason="DALI does not run here"))]


@pytest.fixture(scope="session")
def loader_root(tmp_path_factory):
    """Read-only: a test that breaks files works on a copy."""
    return synthesize(tmp_path_factory.mktemp("data") / "s", classes=3, per_class=12, image_size=LOADER_SIZE,
                      val_per_class=5, workers=1)


def loader_config(*overrides):
    return config("small_twocol", f"data.image_size={LOADER_SIZE}", f"model.input_size={LOADER_CROP}",
                  f"data.batch_size={LOADER_BATCH}", "data.workers=0", *overrides)


# Training runs: configs/tiny_twocol.yaml on the session's one small set, through the CLI in this
# process. An epoch is 5 steps of 32 images: enough for a checkpoint, a resume, a bad image, a
# signal; the one test that asserts learning has its own, larger set (test_train.py).
TINY_TRAIN = ["-c", "configs/tiny_twocol.yaml", "model.num_classes=4", "train.log_every=2", "data.loader=torch",
              "data.workers=0"]


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory):
    """4 classes of 40 training and 10 validation images of 44 px (tiny_twocol's size).
    Read-only: a test that breaks files works on a copy."""
    return synthesize(tmp_path_factory.mktemp("tiny") / "set", classes=4, per_class=40, image_size=44,
                      val_per_class=10, workers=1)


def train_args(data, run, *extra):
    """`twocol train` of the tiny net on `data` into `run`."""
    return ["train", "--gpus", "cpu", "--data", data, "--run-dir", run, *TINY_TRAIN, *extra]


@pytest.fixture(scope="session")
def trained_run(tiny_set, tmp_path_factory):
    """The session's one short trained run: one finished epoch (5 steps) of the tiny net on
    tiny_set. Read-only: a test that resumes or changes it works on a copy (shutil.copytree)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main([str(a) for a in train_args(tiny_set, run, "train.epochs=1")]) == 0
    return run
