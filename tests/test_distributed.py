"""Data parallelism over model-parallel pairs, on the CPU with gloo: 2 processes x 2 simulated
devices each."""
import subprocess
import sys

import pytest
import torch

from conftest import TINY_TRAIN
from ddp_worker import train as train_in_process
from twocol.checkpoint import load_checkpoint, restore
from twocol.config import load_config
from twocol.devices import Placement
from twocol.distributed import World, placement_for
from twocol.errors import CheckpointError, PlacementError
from twocol.model import build_model
from twocol.optim import LRSchedule, make_optimizer

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_doubled_batch(tmp_path):
    """DDP averages the two ranks' gradients, so 2 x batch 8 takes the same steps as 1 x batch 16
    (float64; they differ only by the order of the floating-point sums)."""
    out = tmp_path / "ddp.pt"
    r = subprocess.run(TORCHRUN + ["tests/ddp_worker.py", "4", "16", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)
    single = train_in_process(4, 16, World()).state_dict()
    for k, v in single.items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-9, atol=1e-12, msg=k)
    init = build_model(load_config("configs/small_twocol.yaml", []), Placement.cpu(), seed=0)
    assert any(not torch.equal(single[k].float(), v) for k, v in init.state_dict().items() if k in single)


def test_each_process_gets_its_pair_of_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    p = placement_for(World(rank=1, size=2, local_rank=1), "0,1,2,3")
    assert (p.a, p.b) == (torch.device("cuda", 2), torch.device("cuda", 3))
    assert placement_for(World(rank=0, size=2, local_rank=0), None).b == torch.device("cuda", 1)
    assert placement_for(World(rank=1, size=2, local_rank=1), "cpu").simulated
    with pytest.raises(PlacementError, match="no pair for local rank 2"):
        placement_for(World(rank=2, size=3, local_rank=2), "0,1,2,3")


def test_mid_epoch_checkpoint_refuses_another_number_of_processes(tmp_path):
    cfg = load_config("configs/small_twocol.yaml", [])
    net = build_model(cfg, Placement.cpu(), seed=0)
    opt = make_optimizer(net, cfg.optim)
    sched = LRSchedule(opt, cfg.schedule, cfg.optim.lr)
    ckpt = {"model": net.state_dict(), "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
            "epoch": 1, "batch": 3, "step": 10, "world_size": 2, "config": cfg.to_dict(), "rng": {}, "rng_per_rank": []}
    with pytest.raises(CheckpointError, match="mid-epoch by 2 process"):
        restore(ckpt, tmp_path / "c.pt", net, opt, sched, cfg, World())
    ckpt["batch"] = 0  # an epoch-end checkpoint resumes on any number of processes
    assert restore(ckpt, tmp_path / "c.pt", net, opt, sched, cfg, World()).epoch == 1


@pytest.mark.slow
def test_torchrun_trains_with_two_cpu_pairs_and_writes_one_checkpoint(tiny_set, tmp_path):
    data = tiny_set
    run = tmp_path / "run"
    r = subprocess.run(TORCHRUN + ["-m", "twocol", "train", "--gpus", "cpu",
                                   "--data", str(data), "--run-dir", str(run), "train.epochs=1",
                                   "--check-isolation", *TINY_TRAIN], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = load_checkpoint(run / "checkpoint.pt")
    # 160 images, 2 shards of 80, 2 full batches of 32 each: each image at most once
    assert ckpt["world_size"] == 2 and ckpt["step"] == 2 and len(ckpt["rng_per_rank"]) == 2
    assert ckpt["metrics"]["val_top1_error"] is not None
    assert r.stdout.count("epoch 1/1") == 1  # only rank 0 speaks
    # and it resumes on one process (epoch-end checkpoint)
    r = subprocess.run([sys.executable, "-m", "twocol", "train", "--resume", str(run / "checkpoint.pt"),
                        "--gpus", "cpu", "--data", str(data), "train.epochs=2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert load_checkpoint(run / "checkpoint.pt")["world_size"] == 1
