"""Per-device delivery: the one normalisation function on the host and on torch devices, the
Feeder's copies and byte counts, and the model's per-column inputs. A second device is
simulated with torch's "meta" device (shapes, no data): column B on it gets its own uint8 copy
and normalises it there, as on a second GPU."""
import numpy as np
import pytest
import torch

from twocol import sim
from twocol.commands.describe import format_tables
from twocol.data.feed import Feeder, feed_bytes_per_image
from twocol.data.loader import make_loader
from twocol.data.normalise import MeanImage, normalise
from twocol.data.plan import eval_plan
from twocol.describe import describe
from twocol.devices import Placement
from twocol.inputs import ColumnInputs, column_inputs
from twocol.model import build_model

from conftest import (LOADER_BACKENDS as BACKENDS, LOADER_CROP as CROP,
                      LOADER_SIZE as SIZE, config, loader_config as cfg)

CPU, META = torch.device("cpu"), torch.device("meta")
TWO = Placement(CPU, META)  # column A on the host, column B on another device


def test_normalise_gives_the_same_bits_on_numpy_and_on_torch_and_follows_the_formula():
    rng = np.random.default_rng(0)
    mean_hwc = rng.uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    pixels = rng.integers(0, 256, (6, 3, CROP, CROP), dtype=np.uint8)
    windows = np.stack([rng.integers(0, SIZE - CROP + 1, 6), rng.integers(0, SIZE - CROP + 1, 6),
                        np.array([0, 1, 0, 1, 1, 0])], 1).astype(np.int32)
    shift = rng.normal(0, 5, (6, 3)).astype(np.float32)
    mean = MeanImage(mean_hwc, CROP, CPU)
    for w, sh, scale in ((windows, shift, 73.0), ((2, 1, True), None, 1.1), ((0, 3, False), shift, 1.0)):
        host = normalise(pixels, w, sh, scale, mean)
        dev_w = w if isinstance(w, tuple) else torch.from_numpy(w).long()
        dev = normalise(torch.from_numpy(pixels), dev_w, None if sh is None else torch.from_numpy(sh), scale, mean)
        assert host.dtype == np.float32 and np.array_equal(host, dev.numpy())  # bit for bit
        # The formula, in float64: the mean image cut at (y, x), mirrored with the crop.
        for i in range(6):
            y, x, m = w if isinstance(w, tuple) else w[i]
            win = mean_hwc[y:y + CROP, x:x + CROP].transpose(2, 0, 1).astype(np.float64)
            want = (pixels[i] - (win[..., ::-1] if m else win) + (0 if sh is None else sh[i][:, None, None])) / scale
            np.testing.assert_allclose(host[i], want, rtol=1e-6, atol=1e-4)


def test_feed_bytes_per_image_for_each_placement():
    paper = config("alexnet_paper")  # 224 crops, per-crop mean windows, lighting on
    code = config("alexnet_2012code")  # centre mean window: no window numbers per crop
    px = 3 * 224 * 224
    assert px == 150_528
    gpu0, gpu1 = torch.device("cuda", 0), torch.device("cuda", 1)
    cases = [
        (paper, Placement.cpu(), "host", {"A": 0, "B": 0}),
        (paper, Placement(gpu0, gpu0), "host", {"A": px + 24 + 8, "B": 0}),
        (paper, Placement(gpu0, gpu0), "gpu", {"A": 24 + 8, "B": 0}),
        (paper, Placement(gpu0, gpu1), "host", {"A": px + 24 + 8, "B": px + 24}),
        (paper, Placement(gpu0, gpu1), "gpu", {"A": 24 + 8, "B": px + 24}),
        (code, Placement(gpu0, gpu1), "gpu", {"A": 12 + 8, "B": px + 12}),
        (config("alexnet_paper", "data.lighting_std=0"), Placement(gpu0, gpu1), "host", {"A": px + 12 + 8, "B": px + 12}),
    ]
    for c, placement, decode, want in cases:
        assert feed_bytes_per_image(c, placement, decode) == want, (c.name, placement, decode)
    # A float32 batch copied to column B instead would be four times the uint8 crop.
    assert 4 * px == 602_112


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_device_gets_its_own_copy_and_the_counted_bytes(loader_root, backend):
    c = cfg()
    ld = make_loader(c, loader_root, "train", TWO, train=True, backend=backend)
    host = make_loader(c, loader_root, "train", Placement.cpu(), train=True, backend=backend)
    per_image = feed_bytes_per_image(c, TWO, "host")
    assert per_image == {"A": 0, "B": 3 * CROP * CROP + 24}
    for (x, y), (ref, ref_y) in zip(ld.epoch(1), host.epoch(1)):
        assert x.a.device == CPU and x.b.device == META and x.b.shape == x.a.shape and x.b.dtype == torch.float32
        assert y.device == CPU and torch.equal(y, ref_y)
        # uint8 delivered and normalised on the device = the host's float path, bit for bit.
        assert torch.equal(x.a, ref.a)
    assert ld.feed_bytes() == {"A": 0, "B": ld.num_images * per_image["B"]}
    assert host.feed_bytes() == {"A": 0, "B": 0}  # one device: no copy
    ld.reset_feed_bytes()
    tens = make_loader(c, loader_root, "val", TWO, train=False, ten_crop=True, backend=backend)
    n = sum(len(y) for _, y in tens.epoch(0))
    assert tens.feed_bytes() == {"A": 0, "B": n * 10 * 3 * CROP * CROP}  # 10 views, no per-crop numbers


def test_the_feeder_counts_a_copy_only_where_it_makes_one():
    mean = np.zeros((SIZE, SIZE, 3), np.float32)
    feeder = Feeder(TWO, mean, CROP, "crop")
    plan = eval_plan(4, cfg().data, shard_id=0, num_shards=1, stored=SIZE, crop=CROP)
    pixels = torch.zeros(4, 3, CROP, CROP, dtype=torch.uint8)
    x, y = feeder.deliver(pixels, np.arange(4), plan, np.arange(4), [(2, 2, False)])
    assert feeder.bytes == {"A": 0, "B": pixels.numel()} and x.b.device == META
    single = Feeder(Placement.cpu(), mean, CROP, "crop")
    single.deliver(pixels.numpy(), np.arange(4), plan, np.arange(4), [(2, 2, False)])
    assert single.bytes == {"A": 0, "B": 0}


def test_nets_take_one_input_per_column_device_and_never_copy_a_to_b():
    c = config("tiny_twocol")
    net = build_model(c, Placement.cpu(), seed=0).eval()
    x = torch.randn(2, 3, 40, 40)
    out = net(ColumnInputs.shared(x))
    assert torch.equal(out, net(x))  # a plain tensor where both columns run on its device
    inputs = ColumnInputs.shared(x)
    # Column A reading column B's input is a crossing the isolation checker refuses.
    with pytest.raises(sim.IsolationError), net.run_a:
        net.col_a.stages[0](inputs.b)
    two = Placement(CPU, META)
    with pytest.raises(ValueError, match="one tensor per column device"):
        column_inputs(x, two)
    with pytest.raises(ValueError, match="column B's input is on cpu, not on its device meta"):
        column_inputs(ColumnInputs(x, x), two)
    assert column_inputs(ColumnInputs.copied(x, two), two).b.device == META


def test_describe_shows_the_feed_per_column():
    d = describe(config("tiny_twocol"), Placement.cpu())
    assert d["feed"] == [{"column": "A", "device": "cpu", "host_decode_bytes_per_image": 0},
                         {"column": "B", "device": "cpu", "host_decode_bytes_per_image": 0}]


def test_describe_table_lists_both_decodes_where_column_a_is_a_gpu():
    d = describe(config("tiny_twocol"), Placement.cpu())
    px = 3 * 40 * 40
    d["feed"] = [{"column": "A", "device": "cuda:0", "host_decode_bytes_per_image": px + 32,
                  "gpu_decode_bytes_per_image": 32},
                 {"column": "B", "device": "cuda:1", "host_decode_bytes_per_image": px + 24,
                  "gpu_decode_bytes_per_image": px + 24}]
    lines = format_tables(d).splitlines()
    head = next(i for i, l in enumerate(lines) if l.startswith("column "))
    assert lines[head].split() == ["column", "device", "host", "decode", "gpu", "decode"]
    assert lines[head + 1].split() == ["A", "cuda:0", f"{px + 32:,}", "32"]
    assert lines[head + 2].split() == ["B", "cuda:1", f"{px + 24:,}", f"{px + 24:,}"]
