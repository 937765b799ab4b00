"""Bad images after prepare (a stored JPEG emptied, replaced by garbage, truncated, or replaced
by a valid JPEG of another size): both loaders skip it, say why, keep every other image where
the plan puts it; a run records it and goes on, and stops with exit 2 and a checkpoint when
there are too many."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from twocol.checkpoint import load_checkpoint
from twocol.data import loader as loader_module
from twocol.data.layout import CHECKSUMS, open_dataset
from twocol.data.loader import make_loader
from twocol.devices import Placement

from conftest import (LOADER_BACKENDS, LOADER_BATCH, LOADER_CROP, LOADER_SIZE, config, one_line_error, train_args,
                      twocol_in_process as twocol)

SIZE, CROP, BATCH = LOADER_SIZE, LOADER_CROP, LOADER_BATCH
BACKENDS = LOADER_BACKENDS
KINDS = ["empty", "garbage", "truncated", "wrong_size"]


@pytest.fixture
def clean(loader_root):
    """The session's loader set (read-only)."""
    return loader_root


@pytest.fixture
def root(clean, tmp_path):
    """A copy of the clean set that a test may break."""
    return shutil.copytree(clean, tmp_path / "s")


def corrupt(path, kind):
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 600, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif kind == "wrong_size":
        Image.new("RGB", (SIZE + 4, SIZE + 4), (200, 30, 40)).save(path, "JPEG")
    elif kind == "same_size":  # a block of zeros where there were bytes: the file keeps its size
        data = bytearray(path.read_bytes())
        data[len(data) // 2:len(data) // 2 + 40] = bytes(40)
        path.write_bytes(bytes(data))
    elif kind == "gif":  # a good image in a format only Pillow reads
        Image.open(path).convert("RGB").save(path, "GIF")


def loader(root, split="train", *overrides, backend="torch", **kw):
    c = config("small_twocol", f"data.image_size={SIZE}", f"model.input_size={CROP}", f"data.batch_size={BATCH}",
               "data.workers=0", "data.lighting_std=0", *overrides)
    return make_loader(c, root, split, Placement.cpu(), train=split == "train", backend=backend, **kw)


def epoch(ld, e=1, start=0):
    out = [(x.a, y) for x, y in ld.epoch(e, start)]
    return out, ld.take_bad()


def victim(ld, e=1):
    """The manifest index and path of the third image of epoch e's second batch."""
    i = int(ld.plan(e).index[BATCH + 2])
    return i, ld.files[i]


def assert_skipped_only(clean_batches, batches, position):
    """The batches equal the clean run's, less the image at (batch, row)."""
    b, r = position
    assert [len(y) for _, y in batches] == [len(y) - (k == b) for k, (_, y) in enumerate(clean_batches)]
    for k, ((x, y), (cx, cy)) in enumerate(zip(batches, clean_batches)):
        keep = [i for i in range(len(cy)) if (k, i) != (b, r)]
        assert torch.equal(x, cx[keep]) and torch.equal(y, cy[keep])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_image_is_skipped_and_reported_with_checksums(clean, root, backend, kind):
    clean_batches, _ = epoch(loader(clean, backend=backend))
    i, rel = victim(loader(clean))
    corrupt(root / rel, kind)
    ld = loader(root, backend=backend)
    assert list(ld.excluded) == [i]  # found by the start-up check, before any decoding
    batches, bad = epoch(ld)
    assert [(b.index, b.path) for b in bad] == [(i, rel)]
    assert f"{CHECKSUMS} says" in bad[0].reason and "changed since it was stored" in bad[0].reason
    assert_skipped_only(clean_batches, batches, (1, 2))


@pytest.mark.parametrize("kind", KINDS)
def test_without_checksums_both_loaders_find_the_same_bad_image_when_reading(clean, root, kind):
    clean_batches, _ = epoch(loader(clean))
    i, rel = victim(loader(clean))
    corrupt(root / rel, kind)
    (root / CHECKSUMS).unlink()  # a set made before checksums.txt existed
    reasons = {}
    for backend in [b if isinstance(b, str) else b.values[0] for b in BACKENDS]:
        if backend == "dali" and loader_module.dali_problem("cpu") is not None:
            continue
        ld = loader(root, backend=backend)
        assert ld.excluded == {}
        batches, bad = epoch(ld)
        assert [(b.index, b.path) for b in bad] == [(i, rel)], backend
        reasons[backend] = bad[0].reason
        assert_skipped_only(clean_batches, batches, (1, 2))
        # And again in a later epoch, where the image sits elsewhere.
        later = next(e for e in range(2, 9) if i in ld.plan(e).index)
        assert [b.path for b in epoch(ld, later)[1]] == [rel]
    want = {"wrong_size": f"is {SIZE + 4}x{SIZE + 4}, not the dataset's {SIZE}x{SIZE}", "truncated": "truncated: ",
            "empty": "cannot decode: ", "garbage": "cannot decode: "}[kind]
    assert all(r.startswith(want) for r in reasons.values()) and len(set(reasons.values())) == 1, reasons


@pytest.mark.parametrize("kind", ["gif", "truncated"])
def test_a_file_dali_fails_on_while_reading_is_judged_by_pillow(clean, root, kind):
    """What the start-up header check does not catch (a well-formed JPEG whose data DALI cannot
    decode): DALI fails on the batch, its files are judged, the pipeline is built again."""
    if loader_module.dali_problem("cpu") is not None:
        pytest.skip("DALI does not run here")
    i, rel = victim(loader(clean))
    corrupt(root / rel, kind)
    (root / CHECKSUMS).unlink()
    a, bad_a = epoch(loader(root, backend="torch"))
    ld = loader(root, backend="dali")
    ld.by_pillow.clear(), ld.found.clear()  # as if the start-up header check had let it through to DALI
    b, bad_b = epoch(ld)
    assert bad_a == bad_b and [x.path for x in bad_b] == ([] if kind == "gif" else [rel])
    assert (ld.by_pillow, ld.found) == (({i}, {}) if kind == "gif" else (set(), {i: bad_a[0].reason}))
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


def test_crc_check_finds_a_change_that_keeps_the_size(clean, root):
    i, rel = victim(loader(clean))
    corrupt(root / rel, "same_size")
    assert loader(root, "train", "data.verify_files=size").excluded == {}  # only compares sizes
    assert loader(root).excluded == {i: f"CRC-32 differs from {CHECKSUMS} (changed since it was stored)"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_resumed_epoch_with_a_bad_image_sees_the_same_batches(clean, root, backend):
    _, rel = victim(loader(clean))
    corrupt(root / rel, "garbage")
    (root / CHECKSUMS).unlink()
    whole, _ = epoch(loader(root, backend=backend))
    for start in (1, 2):
        tail, bad = epoch(loader(root, backend=backend), start=start)
        assert len(tail) == len(whole) - start and [b.path for b in bad] == ([rel] if start <= 1 else [])
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(whole[start:], tail))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_of_bad_images_is_delivered_empty_and_eval_skips_it(clean, root, backend):
    ld = loader(clean, "val", backend=backend)
    last = ld.plan(0).batch(1)
    for i in ld.plan(0).index[last]:
        corrupt(root / ld.files[i], "garbage")
    batches, bad = epoch(loader(root, "val", backend=backend), 0)
    assert [len(y) for _, y in batches] == [8, 0] and batches[1][0].shape == (0, 3, CROP, CROP)
    assert len(bad) == 7


def test_an_image_only_pillow_decodes_is_decoded_not_skipped(clean, root):
    if loader_module.dali_problem("cpu") is not None:
        pytest.skip("DALI does not run here")
    _, rel = victim(loader(clean))
    corrupt(root / rel, "gif")
    (root / CHECKSUMS).unlink()
    a, bad_a = epoch(loader(root, backend="torch"))
    ld = loader(root, backend="dali")
    b, bad_b = epoch(ld)
    assert bad_a == bad_b == [] and ld.by_pillow == {victim(ld)[0]}  # found at start, never given to DALI
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


# Through the command line (in this process), as a user meets it, on the session's tiny_set.

@pytest.mark.parametrize("backend", BACKENDS)
def test_training_goes_on_past_a_bad_image_and_records_it(tiny_set, tmp_path, backend, capsys):
    data = shutil.copytree(tiny_set, tmp_path / "data")
    rel = open_dataset(data).train[17][0]
    corrupt(data / rel, "truncated")
    code, _, err = twocol(capsys, *train_args(data, tmp_path / "run", "train.epochs=2", f"data.loader={backend}"))
    assert code == 0, err
    lines = (tmp_path / "run" / "bad_images.tsv").read_text().splitlines()
    assert lines[0].startswith("# epoch") and [l.split("\t")[:3] for l in lines[1:]] == [
        ["1", "train", rel], ["2", "train", rel]]
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["path"]) for r in rows if r["kind"] == "bad_image"] == [(1, rel), (2, rel)]
    assert all("feed_bytes" in r for r in rows if r["kind"] == "step")


def test_too_many_bad_images_stop_the_run_with_exit_2_and_a_checkpoint(tiny_set, tmp_path, capsys):
    data = shutil.copytree(tiny_set, tmp_path / "data")
    (data / CHECKSUMS).unlink()  # found while reading, mid-epoch
    items = open_dataset(data).train
    for k in range(0, len(items), 12):  # 14 of 160 (9%)
        corrupt(data / items[k][0], "garbage")
    code, _, err = twocol(capsys, *train_args(data, tmp_path / "run", "train.epochs=2"))
    one_line_error(code, err)
    line = err.strip()
    assert "images of epoch 1 are bad (more than data.max_bad_fraction=0.01)" in line
    assert "bad_images.tsv" in line and "--resume" in line
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["epoch"] == 0 and ckpt["step"] == ckpt["batch"] < 3
