import pytest
import torch

from twocol.devices import Placement
from twocol.errors import PlacementError


def test_cpu_is_the_simulation():
    p = Placement.parse("cpu")
    assert p.simulated and p.a == p.b == torch.device("cpu")


def test_default_without_cuda_is_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert Placement.parse(None).simulated


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_two_ids_put_one_column_on_each_gpu(two_gpus):
    p = Placement.parse("0,1")
    assert (p.a, p.b, p.simulated) == (torch.device("cuda", 0), torch.device("cuda", 1), False)
    assert Placement.parse("1,0").a == torch.device("cuda", 1)


def test_one_id_puts_both_columns_on_it(two_gpus):
    p = Placement.parse("1")
    assert p.a == p.b == torch.device("cuda", 1)
    assert Placement.parse(None).spec == "0,1"


@pytest.mark.parametrize("spec,message", [
    ("2", "GPU 2 does not exist"),
    ("0,0", "repeats a GPU id"),
    ("0,1,1", "names 3 GPUs"),
    ("gpu", "is not 'cpu' or a list of GPU ids"),
])
def test_bad_ids_name_the_devices_that_exist(two_gpus, spec, message):
    with pytest.raises(PlacementError, match=message) as e:
        Placement.parse(spec)
    assert "cuda:0, cuda:1" in str(e.value)


def test_no_gpu_error_says_only_the_cpu_exists(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PlacementError, match="no CUDA devices, only the CPU"):
        Placement.parse("0")
