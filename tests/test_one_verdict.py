"""Both loaders give every stored file the same verdict: a JPEG corrupted in place (same size)
is left out by both, with the same reason, found by the default start-up check (the CRC-32
against checksums.txt, reading only the files changed since they last matched); a JPEG with an
EXIF orientation is turned by both. The dataset's own files (the CRC cache, checksums.txt, the
manifests, ...) are read only when they are regular files within a bound set by its counts."""
import contextlib
import os
import resource
import shutil
import signal

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from twocol.data import bad as bad_module
from twocol.data import loader as loader_module
from twocol.data.layout import CHECKSUMS, CLASSES, META, STATS, VERIFIED
from twocol.data.loader import make_loader
from twocol.devices import Placement

from conftest import LOADER_BACKENDS, LOADER_SIZE, loader_config, one_line_error, train_args, twocol_in_process as twocol

CRC_CHANGED = f"CRC-32 differs from {CHECKSUMS} (changed since it was stored)"


@pytest.fixture
def root(loader_root, tmp_path):
    """A copy of the session's loader set as prepare left it: without the CRC cache that other
    tests' loaders wrote into it."""
    return shutil.copytree(loader_root, tmp_path / "s", ignore=shutil.ignore_patterns(VERIFIED))


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


@contextlib.contextmanager
def bounded(seconds=20, memory=1 << 30):
    """What this process may still spend: `seconds` (a read that blocks is interrupted) and
    `memory` more bytes of address space (a read that never ends fails)."""
    def timed_out(*_):
        raise TimeoutError(f"still running after {seconds} s")

    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    old_limit, old_handler = resource.getrlimit(resource.RLIMIT_AS), signal.signal(signal.SIGALRM, timed_out)
    resource.setrlimit(resource.RLIMIT_AS, (used + memory, old_limit[1]))
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_AS, old_limit)
        signal.signal(signal.SIGALRM, old_handler)


def put(path, what):
    """Something that is no file to read in place of `path`: a FIFO (a read waits for a writer),
    a link to /dev/zero (a read never ends) or a file of 30 MB (far past any bound here)."""
    path.unlink(missing_ok=True)
    if what == "fifo":
        os.mkfifo(path)
    elif what == "/dev/zero":
        path.symlink_to("/dev/zero")
    else:
        path.write_bytes(b"a" * 30_000_000)


SAID = {"fifo": "is a FIFO (named pipe), not a regular file", "/dev/zero": "(a link to /dev/zero) is a character "
        "device, not a regular file", "huge": "is 30,000,000 bytes, more than a listing of its 51 images takes (6,"}


@pytest.mark.parametrize("what", ["fifo", "/dev/zero", "huge"])
def test_a_cache_that_is_no_regular_file_or_too_long_is_ignored_with_one_line_and_written_anew(root, capsys, what):
    loader(root)
    corrupt_in_place(root / loader(root).files[4])
    put(root / VERIFIED, what)
    capsys.readouterr()
    with bounded():
        assert loader(root).excluded == {4: CRC_CHANGED}  # every file read again
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"twocol: {root / VERIFIED} {SAID[what]}"), err
    assert err.endswith(": ignored (the CRC of every file is read) and written anew\n"), err
    assert (root / VERIFIED).is_file() and not (root / VERIFIED).is_symlink()
    assert len((root / VERIFIED).read_text().splitlines()) == len(loader(root).files) - 1  # all but the bad one


@pytest.mark.parametrize("name", [CHECKSUMS, "train.txt", CLASSES, META, STATS])
@pytest.mark.parametrize("what", ["fifo", "/dev/zero", "huge"])
def test_a_dataset_file_that_is_no_regular_file_or_too_long_is_refused_with_one_line(tiny_set, tmp_path, capsys, name,
                                                                                      what):
    data = shutil.copytree(tiny_set, tmp_path / "set", ignore=shutil.ignore_patterns(VERIFIED))
    put(data / name, what)
    with bounded():
        code, _, err = twocol(capsys, *train_args(data, tmp_path / "run", "--threads", "1"))
    one_line_error(code, err, f"{data / name} {SAID[what] if what != 'huge' else 'is 30,000,000 bytes, more than'}")
    assert "missing" not in err


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
