"""The data path on a GPU: DALI's mixed decoder against its CPU decoder on the same plan, each
column's device fed by the pipeline, pinned copies, bad and unusual JPEGs. Run by
bench/gpu_check.sh (section dali_tests) on a GPU machine; skipped elsewhere, except the
comparison helper's own check, which runs on the CPU against the torch loader."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from twocol.data import loader as loader_module
from twocol.data.feed import feed_bytes_per_image
from twocol.data.layout import CHECKSUMS
from twocol.data.loader import choose_backend, make_loader
from twocol.data.synth import synthesize
from twocol.devices import Placement
from twocol.errors import DataError

from conftest import config

SIZE, CROP, BATCH = 72, 64, 16
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (bench/gpu_check.sh runs these on a GPU)")
needs_mixed = pytest.mark.skipif(not CUDA or loader_module.dali_problem("cuda:0") is not None,
                                 reason="needs DALI's mixed decoder on cuda:0 (bench/gpu_check.sh, section dali_tests)")
needs_dali_cpu = pytest.mark.skipif(loader_module.dali_problem("cpu") is not None, reason="DALI does not run here")

# nvJPEG against libjpeg-turbo, both with the same ("fancy") chroma upsampling: their IDCTs round
# differently. Bounded per image, as the mean absolute difference in 0..255 levels of the
# mean-subtracted crop: libjpeg-turbo's fast IDCT against its exact one, a cruder change than
# nvJPEG's, differs by 1.06 at most on these images; one image's crop one pixel off, by 2.2 at
# least (flipped: 14). No bound on single pixels: where the two decoders treat a sharp colour edge
# differently (chroma upsampling at a crop window's border, for one), a few pixels may differ by
# tens of levels, while any wrong crop, flip or order moves every pixel of an image.
IMAGE_MEAN_TOL = 1.5


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("data") / "s", classes=3, per_class=16, image_size=SIZE,
                      val_per_class=6, workers=2)


def cfg(*overrides):
    return config("small_twocol", f"data.image_size={SIZE}", f"model.input_size={CROP}", f"data.batch_size={BATCH}",
                  "data.workers=2", "data.input_scale=1", *overrides)


def batches(ld, epoch=1):
    out = [(x.a.cpu(), y.cpu()) for x, y in ld.epoch(epoch)]
    return torch.cat([x for x, _ in out]), torch.cat([y for _, y in out]), ld.take_bad()


def agree(a, b, image_mean_tol):
    """Two deliveries of the same plan: same labels, same bad images, and each image's pixels
    (all its views) within `image_mean_tol` levels of each other on average. Returns the
    absolute differences."""
    (xa, ya, bad_a), (xb, yb, bad_b) = a, b
    assert torch.equal(ya, yb) and bad_a == bad_b and xa.shape == xb.shape
    assert len(ya) > 0, "nothing delivered"
    d = (xa.double() - xb.double()).abs()
    per_image = d.flatten(1).mean(1)
    worst = int(per_image.argmax())
    assert per_image[worst] <= image_mean_tol, (
        f"image {worst}: mean {per_image[worst]:.3f} levels off (all images: mean {d.mean():.3f}, "
        f"max {d.max():.1f})")
    return d


@needs_dali_cpu
def test_agreement_helper_on_the_cpu(root):
    """The helper of the GPU test, on DALI's CPU decoder against the torch loader (bit-equal)."""
    for split, kw in (("train", {}), ("val", {"ten_crop": True})):
        a = batches(make_loader(cfg(), root, split, Placement.cpu(), train=split == "train", backend="torch", **kw))
        b = batches(make_loader(cfg(), root, split, Placement.cpu(), train=split == "train", backend="dali", **kw))
        assert agree(a, b, 0.0).max() == 0


@needs_mixed
@pytest.mark.parametrize("split,ten_crop", [("train", False), ("val", True)])
def test_mixed_decoder_agrees_with_the_cpu_decoder_on_the_same_plan(root, split, ten_crop):
    gpu = Placement.parse("0")
    train = split == "train"
    # Evaluation has no lighting: one pass (each mixed pipeline costs the section time).
    for lighting in ("data.lighting_std=0", "data.lighting_std=0.5")[:2 if train else 1]:
        mixed = make_loader(cfg(lighting, "data.decoder=mixed"), root, split, gpu, train=train, ten_crop=ten_crop)
        host = make_loader(cfg(lighting, "data.decoder=cpu"), root, split, gpu, train=train, ten_crop=ten_crop)
        assert (mixed.backend, mixed.decoder, host.decoder) == ("dali", "mixed", "cpu")
        a, b = batches(mixed), batches(host)
        agree(a, b, IMAGE_MEAN_TOL)
        if lighting.endswith("0"):
            plain = (a[0], b[0])
        elif train:  # identical lighting: the shift each decoder's crops got is the same
            torch.testing.assert_close(a[0] - plain[0], b[0] - plain[1], rtol=0, atol=1e-4)


@needs_cuda
@pytest.mark.parametrize("backend", ["torch", pytest.param("dali-mixed", marks=needs_mixed),
                                     pytest.param("dali-cpu", marks=needs_dali_cpu)])
def test_each_column_device_is_fed_by_the_pipeline(root, backend):
    """Column A on cuda:0, column B on the host: two devices, each normalising its own copy."""
    two = Placement(torch.device("cuda", 0), torch.device("cpu"))
    which, _, decoder = backend.partition("-")
    c = cfg(*([f"data.decoder={decoder}"] if decoder else []))
    ld = make_loader(c, root, "train", two, train=True, backend=which)
    n = 0
    for x, y in ld.epoch(1):
        assert x.a.device == two.a and x.b.device == two.b and y.device == two.a
        assert torch.equal(x.a.cpu(), x.b)  # the same function on both devices, the same bits
        n += len(y)
    per_image = feed_bytes_per_image(c, two, "gpu" if decoder == "mixed" else "host")
    assert ld.feed_bytes() == {k: n * v for k, v in per_image.items()}
    one = make_loader(c, root, "train", Placement.parse("0"), train=True, backend=which)
    for x, _ in one.epoch(1):
        assert x.b.data_ptr() == x.a.data_ptr()  # one device: no copy for column B
    assert one.feed_bytes()["B"] == 0


@needs_cuda
def test_torch_loader_pins_its_batches_for_non_blocking_copies(root):
    ld = make_loader(cfg(), root, "train", Placement.parse("0"), train=True, backend="torch")
    raw = next(iter(ld._batches(ld.plan(0), 0)))
    assert raw.pixels.dtype == torch.uint8 and raw.pixels.is_pinned()


def odd_jpeg(path, kind):
    img = Image.open(path).convert("RGB")
    if kind == "cmyk":
        img.convert("CMYK").save(path, "JPEG", quality=90)
    elif kind == "progressive":
        img.save(path, "JPEG", quality=90, progressive=True)
    elif kind == "422":
        img.save(path, "JPEG", quality=90, subsampling="4:2:2")
    elif kind == "grey":
        img.convert("L").save(path, "JPEG", quality=90)


@needs_mixed
@pytest.mark.parametrize("kind", ["cmyk", "progressive", "422", "grey"])
def test_a_jpeg_the_gpu_decoder_may_reject_is_decoded_another_way(root, tmp_path, kind):
    data = shutil.copytree(root, tmp_path / "s")
    (data / CHECKSUMS).unlink()
    gpu = Placement.parse("0")
    rel = make_loader(cfg(), data, "val", gpu, train=False).files[3]
    odd_jpeg(data / rel, kind)
    mixed_loader = make_loader(cfg("data.decoder=mixed"), data, "val", gpu, train=False)
    assert (mixed_loader.backend, mixed_loader.decoder) == ("dali", "mixed")
    mixed = batches(mixed_loader, 0)
    host = batches(make_loader(cfg("data.decoder=cpu"), data, "val", gpu, train=False), 0)
    assert mixed[2] == [] and len(mixed[1]) == 18  # delivered, not skipped
    d = agree(mixed, host, IMAGE_MEAN_TOL)
    if kind == "cmyk":
        # No plain JPEG (4 channels): Pillow decodes it for both loaders, so the same bits. The
        # val plan is the manifest's order: row 3 is files[3].
        assert 3 in mixed_loader.by_pillow and d[3].max() == 0


@needs_mixed
@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_bad_images_on_the_gpu_are_skipped_like_on_the_cpu(root, tmp_path, kind):
    data = shutil.copytree(root, tmp_path / "s")
    (data / CHECKSUMS).unlink()
    ld = make_loader(cfg(), data, "train", Placement.cpu(), train=True, backend="torch")
    rel = ld.files[int(ld.plan(1).index[5])]
    raw = (data / rel).read_bytes()
    (data / rel).write_bytes(np.random.default_rng(1).bytes(600) if kind == "garbage" else raw[:len(raw) // 2])
    cpu = batches(make_loader(cfg(), data, "train", Placement.cpu(), train=True, backend="torch"))
    gpu = batches(make_loader(cfg("data.decoder=mixed"), data, "train", Placement.parse("0"), train=True))
    assert [b.path for b in gpu[2]] == [rel] and gpu[2] == cpu[2]
    agree(gpu, cpu, IMAGE_MEAN_TOL)


@needs_cuda
def test_a_device_dali_does_not_see_is_a_one_line_error():
    n = torch.cuda.device_count()
    if loader_module.dali_problem("cpu") is not None:
        pytest.skip("DALI does not run here")
    beyond = Placement(torch.device("cuda", n), torch.device("cuda", n))
    assert loader_module.dali_problem(f"cuda:{n}") == f"DALI sees {n} CUDA device(s), so not cuda:{n}"
    with pytest.raises(DataError, match=f"data.decoder is mixed but DALI sees {n} CUDA device"):
        choose_backend(cfg("data.decoder=mixed", "data.loader=dali"), beyond)
