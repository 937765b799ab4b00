import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from conftest import config, one_line_error, twocol_in_process as twocol
from twocol.checkpoint import load_checkpoint, load_net, save_checkpoint
from twocol.checkpoint_checks import check_same_architecture
from twocol.devices import Placement
from twocol.errors import CheckpointError
from twocol.model import build_model


def small_state(cfg, seed=0):
    net = build_model(cfg, Placement.cpu(), seed=seed)
    return {"model": net.state_dict(), "config": cfg.to_dict(), "epoch": 1, "batch": 0, "step": 3}


def test_round_trip_loads_the_same_weights(tmp_path):
    cfg = config("small_twocol")
    save_checkpoint(tmp_path / "c.pt", small_state(cfg, seed=4))
    net, got_cfg, ckpt = load_net(tmp_path / "c.pt", Placement.cpu())
    ref = build_model(cfg, Placement.cpu(), seed=4)
    assert got_cfg == cfg and ckpt["step"] == 3
    for a, b in zip(net.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_truncated_file_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "c.pt", small_state(config("small_twocol")))
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a twocol checkpoint"):
        load_checkpoint(tmp_path / "c.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    save_checkpoint(tmp_path / "c.pt", small_state(config("small_twocol")))
    ckpt = load_checkpoint(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="another architecture: model.arch"):
        check_same_architecture(ckpt, config("small_onecol"), tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="model.lrn.enabled"):
        load_net(tmp_path / "c.pt", Placement.cpu(), config("small_twocol", "model.lrn.enabled=false"))
    # dropout changes no weight
    check_same_architecture(ckpt, config("small_twocol", "model.dropout=0"), tmp_path / "c.pt")


def test_pickled_objects_are_never_loaded_and_the_refusal_says_so_in_whole_words(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": 1, "model": {}, "config": {}, "x": Evil()}, evil)
    code, _, err = twocol(capsys, "eval", "--ckpt", evil, "--gpus", "cpu")
    one_line_error(code, err)
    assert err == f"twocol: error: {evil} is not a twocol checkpoint: loading it would call " \
                  f"{os.system.__module__}.system, which twocol never runs (a checkpoint holds only tensors and " \
                  "plain values)\n"
    assert not (tmp_path / "pwned").exists()


WRITER = textwrap.dedent("""
    import sys, torch
    from twocol.checkpoint import save_checkpoint
    i = 0
    while True:
        i += 1
        save_checkpoint(sys.argv[1], {"model": {"w": torch.full((8_000_000,), float(i))}, "config": {}, "n": i})
        print(i, flush=True)
""")


def test_kill_during_a_write_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "c.pt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "1"  # one complete checkpoint exists
        time.sleep(0.15)  # now somewhere inside a later write (each takes ~0.1-0.5 s here)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    ckpt = load_checkpoint(path)
    assert torch.all(ckpt["model"]["w"] == ckpt["n"])
