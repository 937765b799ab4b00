"""Both loaders give every stored file the same verdict: a JPEG corrupted in place (same size)
is left out by both, with the same reason, found by the default start-up check (the CRC-32
against checksums.txt, reading only the files changed since they last matched); a JPEG with an
EXIF orientation is turned by both."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from twocol.data import bad as bad_module
from twocol.data import loader as loader_module
from twocol.data.layout import CHECKSUMS, VERIFIED
from twocol.data.loader import make_loader
from twocol.devices import Placement

from conftest import LOADER_BACKENDS, LOADER_SIZE, loader_config

CRC_CHANGED = f"CRC-32 differs from {CHECKSUMS} (changed since it was stored)"


@pytest.fixture
def root(loader_root, tmp_path):
    return shutil.copytree(loader_root, tmp_path / "s")


def loader(root, backend="torch", *overrides, split="train"):
    return make_loader(loader_config("data.lighting_std=0", *overrides), root, split, Placement.cpu(),
                       train=split == "train", backend=backend)


def corrupt_in_place(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 40] = bytes(40)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("backend", LOADER_BACKENDS)
def test_a_jpeg_corrupted_in_place_is_left_out_by_both_loaders_with_the_same_reason(root, backend):
    ld = loader(root, backend)
    i = int(ld.plan(0).index[3])
    corrupt_in_place(root / ld.files[i])
    ld = loader(root, backend)
    assert ld.excluded == {i: CRC_CHANGED}
    assert sum(len(y) for _, y in ld.epoch(0)) == ld.num_images - 1
    assert [(b.index, b.reason) for b in ld.take_bad()] == [(i, CRC_CHANGED)]


def test_the_crc_check_reads_only_the_files_changed_since_they_last_matched(root, monkeypatch):
    reads = []
    real = bad_module._read
    monkeypatch.setattr(bad_module, "_read", lambda path, whole, ends: (reads.append(whole), real(path, whole, ends))[1])
    ld = loader(root)
    n = len(ld.files)
    assert sum(reads) == n and (root / VERIFIED).is_file()  # the first start reads every file
    loader(root, split="val")
    assert len((root / VERIFIED).read_text().splitlines()) == n + len(loader(root, split="val").files)
    reads.clear()
    loader(root)
    assert sum(reads) == 0  # unchanged since: a stat each, no read
    corrupt_in_place(root / ld.files[5])
    reads.clear()
    assert loader(root).excluded == {5: CRC_CHANGED} and sum(reads) == 1
    reads.clear()
    assert loader(root).excluded == {5: CRC_CHANGED} and sum(reads) == 1  # a bad file never enters the cache


def test_a_read_only_dataset_is_checked_without_a_cache(root, monkeypatch):
    def refuse(*_):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(bad_module, "atomic_write", refuse)
    corrupt_in_place(root / loader(root).files[2])
    assert loader(root).excluded == {2: CRC_CHANGED} and not (root / VERIFIED).exists()


def test_a_damaged_cache_is_ignored(root):
    loader(root)
    (root / VERIFIED).write_text("nonsense\n")
    corrupt_in_place(root / loader(root).files[4])
    assert loader(root).excluded == {4: CRC_CHANGED}


def rotated_jpeg(path, orientation):
    """A JPEG of the dataset's size whose pixels are stored turned, with the EXIF orientation
    that turns them back; returns the upright image."""
    upright = np.zeros((LOADER_SIZE, LOADER_SIZE, 3), np.uint8)
    upright[:LOADER_SIZE // 2, :, 0] = 250  # red top half, blue left third: no symmetry
    upright[:, :LOADER_SIZE // 3, 2] = 250
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # undone by orientation 6
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, "JPEG", quality=100, subsampling=0, exif=exif.tobytes())
    return np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))


@pytest.mark.parametrize("split", ["train", "val"])
def test_both_loaders_turn_a_jpeg_as_its_exif_orientation_says(root, split):
    (root / CHECKSUMS).unlink()  # a hand-placed file
    ld = loader(root, split=split)
    rel = ld.files[0]
    upright = rotated_jpeg(root / rel, 6)
    assert np.array_equal(bad_module.read_image(root / rel, LOADER_SIZE), upright)
    batches = {}
    for backend in ["torch"] + (["dali"] if loader_module.dali_problem("cpu") is None else []):
        ld = loader(root, backend, split=split)
        batches[backend] = [(x.a, y) for x, y in ld.epoch(0)]
        assert ld.take_bad() == []
    if len(batches) == 2:
        for (xt, yt), (xd, yd) in zip(batches["torch"], batches["dali"], strict=True):
            assert torch.equal(xt, xd) and torch.equal(yt, yd)
