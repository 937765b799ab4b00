import os

import pytest
import torch

from twocol import sim
from twocol.cli import main
from twocol.config import load_config
from twocol.data import loader as loader_module
from twocol.data.synth import synthesize

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


@pytest.fixture(scope="module")
def loader_root(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("data") / "s", classes=3, per_class=12, image_size=LOADER_SIZE,
                      val_per_class=5, workers=1)


def loader_config(*overrides):
    return config("small_twocol", f"data.image_size={LOADER_SIZE}", f"model.input_size={LOADER_CROP}",
                  f"data.batch_size={LOADER_BATCH}", "data.workers=0", *overrides)
