"""prepare, the synthetic set and the dataset layout."""
import io
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from twocol.data import synth as synth_module
from twocol.data.layout import open_dataset
from twocol.data.lighting import pca
from twocol.data.synth import ensure_synthetic, synthesize
from twocol.data.prepare import prepare
from twocol.errors import DataError

from conftest import config, twocol_in_process as twocol


def noise(h, w, seed):
    """A smooth random RGB image (JPEG keeps it well)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def jpeg_bytes(pixels, mode="RGB", **kw):
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


BAD = {"truncated.JPEG": "truncated", "text.JPEG": "not an image", "empty.JPEG": "empty file"}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """An ImageNet-style tree with every kind of awkward file ImageNet holds or a user might add."""
    src = tmp_path_factory.mktemp("src")
    files = {}
    for split, n in (("train", 4), ("val", 2)):
        for c, cls in enumerate(("n001", "n002")):
            for i in range(n):
                files[f"{split}/{cls}/img{i}.JPEG"] = jpeg_bytes(noise(30 + 7 * i, 40, 100 * c + 10 * i + (split == "val")))
    odd = "train/n001/"
    files[odd + "grey.JPEG"] = jpeg_bytes(noise(36, 36, 1), "L")
    files[odd + "cmyk.JPEG"] = jpeg_bytes(noise(36, 48, 2), "CMYK")
    png = io.BytesIO()
    Image.fromarray(noise(40, 30, 3)).save(png, "PNG")
    files[odd + "png.JPEG"] = png.getvalue()
    # Left half red, right half blue, stored sideways: EXIF orientation 6 says "rotate 90 CW".
    sideways = np.zeros((20, 40, 3), np.uint8)
    sideways[:, :20] = (255, 0, 0)
    sideways[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    files[odd + "exif.JPEG"] = jpeg_bytes(sideways, exif=exif.tobytes())
    files[odd + "truncated.JPEG"] = jpeg_bytes(noise(64, 64, 4))[:-300]
    files[odd + "text.JPEG"] = b"this is not an image\n"
    files[odd + "empty.JPEG"] = b""
    for rel, data in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return src


@pytest.fixture(scope="module")
def prepared(source, tmp_path_factory):
    dst = tmp_path_factory.mktemp("prep") / "out"
    meta = prepare(source, dst, size=24, workers=2)
    return dst, meta


def test_prepare_skips_exactly_the_bad_files_and_keeps_the_rest(source, prepared):
    dst, meta = prepared
    lines = [l.split("\t") for l in (dst / "report.txt").read_text().splitlines() if not l.startswith("#")]
    reported = {os.path.basename(path): reason for _, path, reason in lines}
    assert set(reported) == set(BAD)
    for name, why in BAD.items():
        assert reported[name].startswith(why), reported[name]
    ds = open_dataset(dst)
    assert ds.classes == ["n001", "n002"]
    kept = {rel.rsplit("/", 1)[1] for rel, _ in ds.train}
    assert kept == {f"img{i}.jpg" for i in range(4)} | {"grey.jpg", "cmyk.jpg", "png.jpg", "exif.jpg"}
    assert len(ds.train) == 12 and len(ds.val) == 4 and meta["skipped"] == 3
    assert sorted(label for _, label in ds.val) == [0, 0, 1, 1]
    for rel, _ in ds.train + ds.val:
        with Image.open(dst / rel) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (24, 24)


def test_prepare_applies_exif_orientation(prepared):
    dst, _ = prepared
    px = np.asarray(Image.open(dst / "train/n001/exif.jpg")).astype(int)
    red, blue = np.array([255, 0, 0]), np.array([0, 0, 255])
    # Upright, the red half is on top; unrotated, the top-right corner would be blue.
    assert np.abs(px[2, 21] - red).max() < 40 and np.abs(px[21, 2] - blue).max() < 40


def test_mean_image_and_pca_equal_numpy_over_the_stored_files(prepared):
    dst, _ = prepared
    ds = open_dataset(dst)
    imgs = np.stack([np.asarray(Image.open(dst / rel).convert("RGB"), np.float64) for rel, _ in ds.train])
    np.testing.assert_allclose(ds.mean, imgs.mean(0), rtol=0, atol=1e-4)
    cov = np.cov(imgs.reshape(-1, 3), rowvar=False, bias=True)
    with np.load(dst / "stats.npz") as z:
        np.testing.assert_allclose(z["cov"], cov, rtol=1e-9)
    vals, vecs = np.linalg.eigh(cov)
    np.testing.assert_allclose(ds.eigvals, vals[::-1], rtol=1e-9)
    for i in range(3):  # eigenvectors are defined up to sign
        assert abs(abs(ds.eigvecs[:, i] @ vecs[:, 2 - i]) - 1) < 1e-9
    assert (ds.eigvecs.sum(0) > 0).all()


def test_pca_orders_and_orients_eigenvectors():
    vals, vecs = pca(np.diag([1.0, 9.0, 4.0]))
    assert vals.tolist() == [9.0, 4.0, 1.0]
    np.testing.assert_allclose(np.abs(vecs), np.eye(3)[:, [1, 2, 0]])
    assert (vecs.sum(0) > 0).all()


def test_second_prepare_run_skips_finished_work(source, prepared):
    dst, meta = prepared
    before = {p: p.stat().st_mtime_ns for p in dst.rglob("*") if p.is_file()}
    assert prepare(source, dst, size=24, workers=2) == meta
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*") if p.is_file()} == before


def test_prepare_refuses_other_settings_in_the_same_destination(source, prepared):
    dst, _ = prepared
    with pytest.raises(DataError, match="image_size=24"):
        prepare(source, dst, size=32, workers=1)


def test_flat_val_folder_with_a_labels_file(source, tmp_path):
    src = tmp_path / "flat"
    (src / "val").mkdir(parents=True)
    os.symlink(source / "train", src / "train")
    for i in range(3):
        (src / "val" / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(jpeg_bytes(noise(30, 30, 10 + i)))
    (src / "labels.csv").write_text("ImageId,PredictionString\n"
                                    "ILSVRC2012_val_00000000,n002 1 2 3 4\n"
                                    "ILSVRC2012_val_00000002,n001 5 6 7 8\n")
    prepare(src, tmp_path / "out", size=16, workers=1, val_labels=src / "labels.csv")
    ds = open_dataset(tmp_path / "out")
    assert [(r.rsplit("/", 1)[1], l) for r, l in ds.val] == [("ILSVRC2012_val_00000002.jpg", 0),
                                                              ("ILSVRC2012_val_00000000.jpg", 1)]
    assert "ILSVRC2012_val_00000001.JPEG\tno label" in (tmp_path / "out/report.txt").read_text()
    (src / "bad.txt").write_text("ILSVRC2012_val_00000000 n999\n")
    with pytest.raises(DataError, match="'n999' is not a class"):
        prepare(src, tmp_path / "out2", size=16, workers=1, val_labels=src / "bad.txt")


def test_prepare_errors_name_the_problem(tmp_path):
    src = tmp_path / "src"  # not tmp_path itself: a destination inside the source is refused
    src.mkdir()
    with pytest.raises(DataError, match="no train/ folder"):
        prepare(src, tmp_path / "out")
    (src / "train/a").mkdir(parents=True)
    (src / "train/b").mkdir()
    (src / "val").mkdir()
    (src / "val/x.JPEG").write_bytes(b"")
    with pytest.raises(DataError, match="--val-labels"):
        prepare(src, tmp_path / "out")


def small_synth(path, **kw):
    return synthesize(path, classes=3, per_class=6, image_size=20, val_per_class=2, **kw)


def test_synthetic_set_is_a_function_of_the_seed(tmp_path):
    a, b, c = (small_synth(tmp_path / n, seed=s, workers=1) for n, s in (("a", 0), ("b", 0), ("c", 1)))
    ds = open_dataset(a)
    assert len(ds.train) == 18 and len(ds.val) == 6 and ds.image_size == 20
    assert ds.classes == ["00-disk-solid", "01-square-solid", "02-triangle-solid"]
    for rel, _ in ds.train + ds.val:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert sum((a / rel).read_bytes() != (c / rel).read_bytes() for rel, _ in ds.train) == len(ds.train)


def test_synthetic_classes_need_both_shape_and_texture():
    grid = synth_module.class_grid(10)
    assert len(set(grid)) == 10
    assert len({s for s, _, _ in grid}) == 5 and len({t for _, t, _ in grid}) == 2
    assert len(set(synth_module.class_grid(synth_module.MAX_CLASSES))) == synth_module.MAX_CLASSES
    with pytest.raises(DataError, match="2 to 96 classes"):
        synth_module.class_grid(97)


def test_interrupted_run_leaves_no_partial_file_and_resumes(tmp_path, monkeypatch):
    real, calls = synth_module.render, []

    def interrupted(spec, **kw):
        if len(calls) == 17:  # after a whole chunk of 16 and one image of the next
            raise KeyboardInterrupt
        calls.append(spec)
        return real(spec, **kw)

    monkeypatch.setattr(synth_module, "render", interrupted)
    with pytest.raises(KeyboardInterrupt):
        small_synth(tmp_path / "x", workers=1)
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "x").rglob("*"))
    assert len([p for p in (tmp_path / "x").rglob("*.jpg")]) == 17
    assert len(list((tmp_path / "x/.partial").glob("train-*.npz"))) == 1
    with pytest.raises(DataError, match="incomplete"):
        open_dataset(tmp_path / "x")

    calls.clear()
    monkeypatch.setattr(synth_module, "render", lambda spec, **kw: calls.append(spec) or real(spec, **kw))
    small_synth(tmp_path / "x", workers=1)
    assert len(calls) == 24 - 17  # only what was not stored yet
    small_synth(tmp_path / "fresh", workers=1)
    for rel, _ in open_dataset(tmp_path / "fresh").train:
        assert (tmp_path / "x" / rel).read_bytes() == (tmp_path / "fresh" / rel).read_bytes()
    assert not (tmp_path / "x/.partial").exists()


def test_open_dataset_names_what_is_missing_or_corrupt(tmp_path):
    root = small_synth(tmp_path / "d", workers=1)
    open_dataset(root)
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "nothing")
    with pytest.raises(DataError, match="not a twocol dataset"):
        open_dataset(tmp_path)
    first = (root / "val.txt").read_text().splitlines()[0].split()[0]
    (root / first).unlink()
    with pytest.raises(DataError, match=f"missing, e.g. {first}"):
        open_dataset(root)
    (root / "train.txt").write_text("train/x.jpg seven\n")
    with pytest.raises(DataError, match="train.txt: line 1"):
        open_dataset(root)
    (root / "stats.npz").write_bytes(b"junk")
    (root / "meta.json").write_text("{")
    with pytest.raises(DataError, match="meta.json is corrupt"):
        open_dataset(root)


def test_ensure_synthetic_makes_once_then_reuses(tmp_path, capsys):
    cfg = config("small_twocol", "data.synth_classes=2", "data.synth_per_class=3", "data.image_size=64")
    root = ensure_synthetic(tmp_path / "s", cfg)
    assert "making the synthetic dataset" in capsys.readouterr().err
    meta = json.loads((root / "meta.json").read_text())
    assert meta["params"]["classes"] == 2 and meta["train"] == 6 and meta["val"] == 2
    stamp = (root / "meta.json").stat().st_mtime_ns
    assert ensure_synthetic(tmp_path / "s", cfg) == root and (root / "meta.json").stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="holds another dataset"):
        ensure_synthetic(tmp_path / "s", config("small_twocol", "data.synth_classes=3", "data.synth_per_class=3",
                                                "data.image_size=64"))


def test_cli_prepare_and_synth(source, tmp_path, capsys):
    code, out, err = twocol(capsys, "prepare", source, tmp_path / "p", "--size", "16", "--workers", "2")
    assert code == 0, err
    assert "12 train and 4 val images of 16x16, 2 classes" in out and "skipped 3 file(s)" in err
    code, _, err = twocol(capsys, "synth", tmp_path / "p", "--classes", "2", "--per-class", "4", "--size", "16")
    errors = [l for l in err.splitlines() if l.startswith("twocol: error:")]
    assert code == 2 and len(errors) == 1 and "other settings" in errors[0] and "Traceback" not in err


@pytest.mark.slow
def test_ten_classes_of_500_generate_in_well_under_a_minute(tmp_path):
    start = time.perf_counter()
    synthesize(tmp_path / "s", classes=10, per_class=500, image_size=72)
    assert time.perf_counter() - start < 60
    assert open_dataset(tmp_path / "s").meta["train"] == 5000
