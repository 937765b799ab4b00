import pytest
import torch

from twocol import sim
from twocol.config import load_config

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
