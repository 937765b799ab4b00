"""Hostile source trees for `twocol prepare`: class names that
would shift labels, symbolic links that loop or leave the tree, empty class folders, images too
large to decode, two writers of one destination."""
import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from twocol.data.build import BadImage
from twocol.data.layout import open_dataset
from twocol.data.decode import MAX_PIXELS, load_source

from conftest import one_line_error, twocol_in_process as twocol

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def tree(root, classes, per_class=2):
    """root/train/<class>/ and root/val/<class>/ with per_class small JPEGs each; class names
    may be bytes (a name that is not UTF-8)."""
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            folder = os.path.join(os.fsencode(root / split), os.fsencode(name))
            os.makedirs(folder)
            for i in range(per_class):
                with open(os.path.join(folder, b"img%d.jpg" % i), "wb") as f:
                    f.write(jpeg(100 * c + i))
    return root


def huge_png(path, side=13000):
    """A valid greyscale PNG of side x side black pixels, written a row block at a time (about
    170 KB on disk; decoding it would take side**2 bytes and more)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z, rows = zlib.compressobj(1), b"\0" * (side + 1) * 500
    idat = b"".join(z.compress(rows) for _ in range(side // 500)) + z.compress(b"\0" * (side + 1) * (side % 500))
    idat += z.flush()
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.mark.parametrize("bad,shown", [("b\nc", "b\\nc"), (b"c\xff", "c\\xff"), ("d\u2028e", "d\\u2028e")])
def test_a_class_name_that_would_shift_labels_is_refused_before_any_work(tmp_path, capsys, bad, shown):
    src = tree(tmp_path / "src", ["a", bad, "z"])
    code, _, err = twocol(capsys, "prepare", src, tmp_path / "dst", "--size", "8", "--workers", "1")
    one_line_error(code, err, f"class folder {src}/train/{shown} holds a line break, a control character or a byte "
                              "that is not UTF-8; rename it")
    assert not (tmp_path / "dst" / "train").exists()  # refused before any image was made


def test_links_empty_folders_and_huge_images_are_reported_and_labels_stay_put(tmp_path, capsys):
    src = tree(tmp_path / "src", ["a", "b", "empty", "z"])
    for split in ("train", "val"):
        for f in (src / split / "empty").iterdir():
            f.unlink()
    a = src / "train" / "a"
    (a / "loop.jpg").symlink_to("loop.jpg")                    # a link to itself
    (a / "passwd.jpg").symlink_to("/etc/passwd")               # a link leaving the tree
    (src / "train" / "outside").symlink_to("/etc")             # a class folder leaving it
    (a / "again.jpg").symlink_to(src / "val" / "b" / "img0.jpg")  # inside the tree: followed
    (a / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    huge_png(a / "huge.png")
    (a / os.fsdecode(b"bad\xffname.jpg")).write_bytes(b"not an image")
    dst = tmp_path / "dst"
    code, out, err = twocol(capsys, "prepare", src, dst, "--size", "8", "--workers", "1")
    assert code == 0, err
    report = (dst / "report.txt").read_text(encoding="utf-8")
    reasons = dict(line.split("\t")[1:] for line in report.splitlines()[1:])
    assert reasons == {
        str(a / "loop.jpg"): "broken symbolic link (a loop or a missing target)",
        str(a / "dangling.jpg"): "broken symbolic link (a loop or a missing target)",
        str(a / "passwd.jpg"): "symbolic link leading outside the source tree: not followed",
        str(src / "train" / "outside"): "symbolic link leading outside the source tree: not followed",
        str(src / "train" / "empty"): "empty class folder: no image in it",
        str(src / "val" / "empty"): "empty class folder: no image in it",
        str(a / "huge.png"): f"too large: 13000x13000 pixels, over prepare's limit of {MAX_PIXELS:,} decoded pixels",
        str(a / "bad\\xffname.jpg"): "not an image (no known image format)",
    }, report
    assert "/etc" not in report.replace(str(tmp_path), "")  # nothing beyond the links' own names
    ds = open_dataset(dst)
    assert ds.classes == ["a", "b", "empty", "z"]
    assert sorted(ds.train) == sorted([("train/a/again.jpg", 0), ("train/a/img0.jpg", 0), ("train/a/img1.jpg", 0),
                                       ("train/b/img0.jpg", 1), ("train/b/img1.jpg", 1),
                                       ("train/z/img0.jpg", 3), ("train/z/img1.jpg", 3)])
    assert "see" in err and "report.txt" in err


def test_an_image_over_the_pixel_limit_is_not_decoded_but_one_below_is(tmp_path):
    # Decoding the 13000 x 13000 one took 11 s and 1.3 GB here; it is refused from its header.
    huge_png(tmp_path / "huge.png")
    with pytest.raises(BadImage, match="too large: 13000x13000"):
        load_source(str(tmp_path / "huge.png"), 256)
    huge_png(tmp_path / "large.png", side=3000)
    assert load_source(str(tmp_path / "large.png"), 16).shape == (16, 16, 3)


HOLDER = "import sys, time; from twocol.lock import DirLock; DirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"


def test_two_prepares_into_one_destination(tmp_path, capsys):
    src = tree(tmp_path / "src", ["a", "b"])
    dst = tmp_path / "dst"
    first = subprocess.Popen([sys.executable, "-c", HOLDER, str(dst)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert first.stdout.readline().strip() == "held"
        code, _, err = twocol(capsys, "prepare", src, dst, "--size", "8", "--workers", "1")
        one_line_error(code, err, f"dataset {dst} is in use by pid {first.pid}")
    finally:
        first.kill()
        first.wait()
    code, _, err = twocol(capsys, "prepare", src, dst, "--size", "8", "--workers", "1")
    assert code == 0, err
    assert open_dataset(dst).meta["train"] == 4 and not (dst / ".lock").exists()
