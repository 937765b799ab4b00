"""The loaders: batch contents checked against numpy over the stored files, for both backends.
Both deliver uint8 crops that the Feeder normalises on each column's device (test_data_feed.py
checks that path on its own); here the CPU simulation's batches, column A's tensor, are
compared with the float32 numpy formula, exactly."""
import functools

import numpy as np
import pytest
import torch
from PIL import Image

from twocol import sim
from twocol.data import loader as loader_module
from twocol.data.layout import open_dataset
from twocol.data.loader import make_loader
from twocol.devices import Placement
from twocol.errors import DataError

from conftest import (LOADER_BACKENDS as BACKENDS, LOADER_BATCH as BATCH, LOADER_CROP as CROP,
                      LOADER_SIZE as SIZE, loader_config as cfg)


def loader(loader_root, split="train", *overrides, backend="torch", **kw):
    kw.setdefault("train", split == "train")
    return make_loader(cfg(*overrides), loader_root, split, Placement.cpu(), backend=backend, **kw)


@functools.lru_cache(maxsize=None)
def stored(loader_root, rel):
    return np.asarray(Image.open(loader_root / rel).convert("RGB"))


def view(loader_root, rel, y, x, mirror, mean, scale=1.0, shift=(0.0, 0.0, 0.0)):
    """What the loaders promise for one image, in numpy: (3, CROP, CROP) float32."""
    img = stored(loader_root, rel)[y:y + CROP, x:x + CROP].astype(np.float32)
    v = (img - mean[y:y + CROP, x:x + CROP] + np.float32(shift)) / np.float32(scale)
    return np.ascontiguousarray((v[:, ::-1] if mirror else v).transpose(2, 0, 1))


def delivered(ld, epoch, start=0):
    images, labels = zip(*ld.epoch(epoch, start))
    return torch.cat([x.a for x in images]), torch.cat(labels)


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_batches_have_the_right_shape_dtype_and_labels(loader_root, backend):
    ld = loader(loader_root, backend=backend)
    assert ld.backend == backend and len(ld) == 36 // BATCH
    batches = list(ld.epoch(0))
    assert len(batches) == len(ld)
    labels = open_dataset(loader_root).split("train")
    plan = ld.plan(0)
    for b, (inputs, y) in enumerate(batches):
        x = inputs.a
        # One device: both columns read the same memory, each through its own tagged tensor.
        assert inputs.b is not x and inputs.b.data_ptr() == x.data_ptr() and torch.equal(inputs.b, x)
        assert (sim.column_of(x), sim.column_of(inputs.b)) == ("A", "B")
        assert x.shape == (BATCH, 3, CROP, CROP) and x.dtype == torch.float32 and x.device.type == "cpu"
        assert y.shape == (BATCH,) and y.dtype == torch.int64 and 0 <= y.min() and y.max() < 3
        assert y.tolist() == [labels[i][1] for i in plan.index[plan.batch(b)]]
        assert x.isfinite().all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_lighting_each_image_is_exactly_one_crop_and_crops_and_flips_vary(loader_root, backend):
    ds = open_dataset(loader_root)
    ld = loader(loader_root, "train", "data.lighting_std=0", "data.input_scale=1", backend=backend)
    span = SIZE - CROP + 1
    found = []
    for epoch in range(5):
        x, _ = delivered(ld, epoch)
        plan = ld.plan(epoch)
        for img, i in zip(x.numpy(), plan.index):
            rel = ds.train[i][0]
            hits = [(y0, x0, m) for y0 in range(span) for x0 in range(span) for m in (False, True)
                    if np.array_equal(img, view(loader_root, rel, y0, x0, m, ds.mean))]
            assert len(hits) == 1, f"{rel}: {len(hits)} exact matches"
            found.append(hits[0])
    ys, xs, ms = map(np.array, zip(*found))
    assert set(ys) == set(range(span)) and set(xs) == set(range(span))
    assert 0.35 < ms.mean() < 0.65
    assert len(set(found)) > 30  # of 50 possible (position, flip) combinations, over 160 images


def test_crops_and_flips_per_chunk_leave_the_other_draws_unchanged(loader_root):
    base = loader(loader_root, "train", "data.batch_size=4").plan(0)
    crops = loader(loader_root, "train", "data.batch_size=4", "data.crop_chunk=4").plan(0)
    both = loader(loader_root, "train", "data.batch_size=4", "data.crop_chunk=4", "data.flip_chunk=4").plan(0)
    pos = np.stack([crops.crop_y, crops.crop_x], 1).reshape(-1, 4, 2)
    assert (pos == pos[:, :1]).all() and len({tuple(p) for p in pos[:, 0]}) > 1
    # Each chunk takes its first image's draw; flips stay per image unless flip_chunk says.
    assert np.array_equal(pos[:, 0], np.stack([base.crop_y, base.crop_x], 1)[::4])
    assert np.array_equal(crops.mirror, base.mirror) and 0 < crops.mirror.mean() < 1
    flips = both.mirror.reshape(-1, 4)
    assert (flips == flips[:, :1]).all() and 0 < flips[:, 0].mean() < 1
    assert np.array_equal(flips[:, 0], base.mirror[::4])
    for p in (crops, both):
        assert np.array_equal(p.index, base.index) and np.array_equal(p.shift, base.shift)


def test_lighting_stops_after_lighting_until_epoch_and_rescale_follows_it(loader_root):
    d = ("data.lighting_std=0.1", "data.input_scale=2", "data.lighting_until_epoch=2", "data.lighting_rescale=true")
    ld = loader(loader_root, "train", *d)
    plain = loader(loader_root, "train", "data.lighting_std=0.1", "data.input_scale=2")
    for epoch in (0, 1):  # epochs 1 and 2: lighting on, crops divided by 1 + 0.1 too
        p = ld.plan(epoch)
        assert p.scale == pytest.approx(2 * 1.1) and np.array_equal(p.shift, plain.plan(epoch).shift)
    for epoch in (2, 5):
        p = ld.plan(epoch)
        assert p.shift is None and p.scale == 2.0
        assert np.array_equal(p.crop_x, plain.plan(epoch).crop_x)
    assert loader(loader_root, "val", *d).plan(0).scale == 2.0  # test crops are never rescaled
    x, _ = delivered(ld, 0)
    off, _ = delivered(loader(loader_root, "train", "data.lighting_std=0", "data.input_scale=2"), 0)
    shift = torch.from_numpy(ld.plan(0).shift)[:, :, None, None]
    torch.testing.assert_close(x, (off * 2 + shift) / np.float32(2.2), rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_centre_mean_window_subtracts_the_mean_images_centre_from_every_crop(loader_root, backend):
    ds = open_dataset(loader_root)
    c = (SIZE - CROP) // 2
    centre = ds.mean[c:c + CROP, c:c + CROP].transpose(2, 0, 1)
    ld = loader(loader_root, "train", "data.lighting_std=0", "data.input_scale=1", "data.mean_window=centre",
                backend=backend)
    x, _ = delivered(ld, 0)
    plan = ld.plan(0)
    for img, i, y0, x0, m in zip(x.numpy(), plan.index, plan.crop_y, plan.crop_x, plan.mirror):
        crop = stored(loader_root, ds.train[i][0])[y0:y0 + CROP, x0:x0 + CROP].transpose(2, 0, 1).astype(np.float32)
        np.testing.assert_array_equal(img, (crop[..., ::-1] if m else crop) - centre)
    tens, _ = delivered(loader(loader_root, "val", "data.input_scale=1", "data.mean_window=centre", backend=backend,
                               ten_crop=True), 0)
    rel = ds.val[0][0]
    for v, (y0, x0, m) in enumerate([(0, 0, False), (SIZE - CROP, 0, True)]):
        crop = stored(loader_root, rel)[y0:y0 + CROP, x0:x0 + CROP].transpose(2, 0, 1).astype(np.float32)
        np.testing.assert_array_equal(tens[0, [1, 8][v]].numpy(), (crop[..., ::-1] if m else crop) - centre)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lighting_is_a_per_image_colour_shift_along_the_principal_components(loader_root, backend):
    ds = open_dataset(loader_root)
    std, scale = 0.5, 73.0
    on = loader(loader_root, "train", f"data.lighting_std={std}", f"data.input_scale={scale}", backend=backend)
    off = loader(loader_root, "train", "data.lighting_std=0", f"data.input_scale={scale}", backend=backend)
    alphas = []
    for epoch in range(4):
        diff = (delivered(on, epoch)[0] - delivered(off, epoch)[0]).double().numpy() * scale
        shift = diff.mean(axis=(2, 3))
        assert np.abs(diff - shift[:, :, None, None]).max() < 1e-3  # the same shift at every pixel
        alphas.append(shift @ ds.eigvecs / (ds.eigvals / 255.0))
    alpha = np.concatenate(alphas)
    assert abs(alpha.std() / std - 1) < 0.15 and abs(alpha.mean()) < 0.1
    assert np.abs(np.corrcoef(alpha.T) - np.eye(3)).max() < 0.25


@pytest.mark.parametrize("backend", BACKENDS)
def test_ten_crop_views_in_the_documented_order(loader_root, backend):
    ds = open_dataset(loader_root)
    ld = loader(loader_root, "val", "data.input_scale=1", backend=backend, ten_crop=True)
    x, y = delivered(ld, 0)
    assert x.shape == (15, 10, 3, CROP, CROP) and y.tolist() == [l for _, l in ds.val]
    m, c = SIZE - CROP, (SIZE - CROP) // 2
    corners = [(c, c), (0, 0), (0, m), (m, 0), (m, m)]  # centre, TL, TR, BL, BR
    for img, (rel, _) in zip(x.numpy(), ds.val):
        for v, (y0, x0, mirror) in enumerate([(a, b, False) for a, b in corners] + [(a, b, True) for a, b in corners]):
            np.testing.assert_array_equal(img[v], view(loader_root, rel, y0, x0, mirror, ds.mean), err_msg=f"view {v}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_shards", [1, 2])
def test_eval_epoch_delivers_every_image_exactly_once(loader_root, backend, num_shards):
    ds = open_dataset(loader_root)
    c = (SIZE - CROP) // 2
    images, labels, sizes = [], [], []
    for shard in range(num_shards):
        ld = loader(loader_root, "val", "data.input_scale=1", backend=backend, shard_id=shard, num_shards=num_shards)
        batches = list(ld.epoch(0))
        assert len(batches) == len(ld)
        sizes += [len(b[1]) for b in batches]
        images += [b[0].a for b in batches]
        labels += [b[1] for b in batches]
    assert sizes == ([8, 7] if num_shards == 1 else [7, 8])
    x, y = torch.cat(images).numpy(), torch.cat(labels)
    assert y.tolist() == [l for _, l in ds.val]
    for img, (rel, _) in zip(x, ds.val):
        np.testing.assert_array_equal(img, view(loader_root, rel, c, c, False, ds.mean))


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_shards_split_an_epoch_without_overlap(loader_root, backend):
    for epoch in (0, 1):
        loaders = [loader(loader_root, backend=backend, shard_id=s, num_shards=3) for s in range(3)]
        parts = [ld.plan(epoch).index for ld in loaders]
        assert [len(ld) for ld in loaders] == [1, 1, 1] and all(len(p) == BATCH for p in parts)
        assert len(set(np.concatenate(parts))) == 3 * BATCH
        labels = [l for _, l in open_dataset(loader_root).train]
        for ld, part in zip(loaders, parts):
            assert delivered(ld, epoch)[1].tolist() == [labels[i] for i in part]
    assert not np.array_equal(loaders[0].plan(0).index, loaders[0].plan(1).index)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_resumed_epoch_sees_the_same_batches(loader_root, backend):
    whole = list(loader(loader_root, backend=backend).epoch(2))
    again = loader(loader_root, backend=backend)  # a fresh loader, as after a restart
    for start in (0, 1, 3, len(whole)):
        tail = list(again.epoch(2, start_batch=start))
        assert len(tail) == len(whole) - start
        for (xa, ya), (xb, yb) in zip(whole[start:], tail):
            assert torch.equal(xa.a, xb.a) and torch.equal(ya, yb)
    other = list(again.epoch(3))
    assert not torch.equal(whole[0][0].a, other[0][0].a)


def test_dali_and_torch_produce_the_same_tensors_bit_for_bit(loader_root):
    if loader_module.dali_problem("cpu") is not None:
        pytest.skip("DALI does not run here")
    for split, kw in (("train", {}), ("val", {}), ("val", {"ten_crop": True})):
        a = delivered(loader(loader_root, split, backend="torch", **kw), 1)
        b = delivered(loader(loader_root, split, backend="dali", **kw), 1)
        # Same libjpeg-turbo decode to the same uint8 crops, then the same normalise().
        assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0]), (split, kw)


def test_torch_workers_give_the_same_batches(loader_root):
    a = delivered(loader(loader_root), 0)
    b = delivered(loader(loader_root, "train", "data.workers=2"), 0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_make_loader_refuses_what_it_cannot_do(loader_root, monkeypatch):
    with pytest.raises(DataError, match="holds 20x20 images but the config's data.image_size is 24"):
        make_loader(cfg("data.image_size=24"), loader_root, "train", Placement.cpu(), train=True)
    with pytest.raises(DataError, match="ten_crop needs train=False"):
        loader(loader_root, train=True, ten_crop=True)
    with pytest.raises(DataError, match="shard 2 of 2"):
        loader(loader_root, shard_id=2, num_shards=2)
    with pytest.raises(DataError, match="3 classes but the config's model.num_classes is 2"):
        loader(loader_root, "train", "model.num_classes=2")
    with pytest.raises(ValueError, match="start_batch"):
        loader(loader_root).epoch(0, start_batch=99)
    with pytest.raises(DataError, match="data.decoder is mixed .* but --gpus cpu puts column A on the CPU"):
        loader(loader_root, "train", "data.decoder=mixed", backend="dali")
    assert loader(loader_root, "train", "data.decoder=mixed", backend="torch").backend == "torch"  # DALI's key only
    monkeypatch.setattr(loader_module, "dali_problem", lambda device: "no DALI in this test")
    with pytest.raises(DataError, match="data.loader is dali but no DALI in this test"):
        loader(loader_root, backend="dali")
    assert loader(loader_root, backend=None).backend == "torch"  # small_twocol says auto
