"""One training step (twocol.step): training's loop, bench/throughput.py and bench/e2e.py take
bit-identical steps on the CPU."""
import torch

from conftest import config
from twocol.checkpoint import RunState
from twocol.devices import Placement
from twocol.inputs import ColumnInputs
from twocol.interrupt import StopFlag
from twocol.model import build_model
from twocol.monitor import MetricsLog, Progress
from twocol.optim import make_optimizer
from twocol.train import train_one_epoch

STEPS = 3


class SameBatch:
    """A loader that hands out one batch STEPS times (what train_one_epoch asks of a loader)."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return STEPS

    def epoch(self, epoch, start_batch=0):
        for _ in range(start_batch, STEPS):
            yield self.images, self.labels

    def excluded_in(self, epoch):
        return []

    def reset_feed_bytes(self):
        pass

    def feed_bytes(self):
        return {}


def weights_after(run_steps, cfg, placement):
    """Weights of a fresh net (seed 0) after STEPS steps by run_steps(net, images, labels), the
    same batch and dropout draws each time."""
    net = build_model(cfg, placement, seed=0)
    gen = torch.Generator().manual_seed(1)
    side = cfg.model.input_size
    images = ColumnInputs.copied(torch.randn(8, 3, side, side, generator=gen), placement)
    labels = torch.randint(0, cfg.model.num_classes, (8,), generator=gen)
    torch.manual_seed(2)
    run_steps(net, images, labels)
    return [p.detach().clone() for p in net.parameters()]


def test_training_and_the_benches_take_bit_identical_steps(tmp_path):
    from bench import e2e, throughput
    cfg = config("tiny_twocol", "data.batch_size=8")  # dropout on: its draws must match too
    placement = Placement.cpu()

    def training(net, images, labels):
        with StopFlag() as stop:
            train_one_epoch(net, make_optimizer(net, cfg.optim), SameBatch(images, labels), cfg, RunState(),
                            MetricsLog(tmp_path / "m.jsonl", enabled=False), Progress("t", STEPS, enabled=False), stop)

    def throughput_bench(net, images, labels):
        step = throughput.step_timer(net, cfg, placement, images, labels, cfg.train.amp)
        for _ in range(STEPS):
            step()

    def e2e_bench(net, images, labels):
        step = e2e.trainer(cfg, placement, net)
        for _ in range(STEPS):
            step(images, labels)

    trained = weights_after(training, cfg, placement)
    before = [p.detach() for p in build_model(cfg, placement, seed=0).parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(trained, before))  # the steps moved every weight
    for bench in (throughput_bench, e2e_bench):
        got = weights_after(bench, cfg, placement)
        assert all(torch.equal(a, b) for a, b in zip(trained, got)), bench.__name__
