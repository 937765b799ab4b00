"""`twocol prepare` from the ILSVRC archives as downloaded: small archives in the official layout
(an outer tar of per-class tars, a flat validation tar, the devkit with a meta.mat in the real
struct layout, non-leaf synsets included, IDs not in WNID order), built here."""
import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
from PIL import Image

from bench.prepare_archives import devkit_tar, meta_mat, synsets_for, tar_bytes, write_release, write_tree
from twocol.data import build as build_module
from twocol.data import ilsvrc
from twocol.data.layout import open_dataset
from twocol.data.prepare import prepare
from twocol.data.tarstream import TarStream
from twocol.errors import DataError

from conftest import one_line_error, twocol_in_process as twocol

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
WNIDS = ["n03000134", "n01440764", "n02085620"]  # the archive holds them in this (unsorted) order


def error_after_progress(code, err, *needles):
    """Exit code 2 and one error line, `twocol: error: ...`, holding every needle, after the
    progress lines of the work done before the error; no traceback."""
    errors = [l for l in err.splitlines() if not l.startswith("prepare: ")]
    one_line_error(code, "".join(f"{l}\n" for l in errors), *needles)


def image(seed, mode="RGB", fmt="JPEG", h=30, w=40):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((w, h), Image.BILINEAR).convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def clean_images():
    """train: WNID -> [(name, bytes)], val: [(name, bytes, WNID)] in a shuffled order."""
    train = {w: [(f"{w}_{i + 1}.JPEG", image(10 * c + i)) for i in range(3)] for c, w in enumerate(WNIDS)}
    val = [(f"ILSVRC2012_val_{i + 1:08d}.JPEG", image(100 + i), WNIDS[(i * 2) % 3]) for i in range(6)]
    return train, [val[i] for i in (3, 0, 5, 1, 4, 2)]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("ilsvrc")
    train, val = clean_images()
    synsets = write_release(root / "download", train, val)
    return root / "download", train, val, synsets


@pytest.fixture(scope="module")
def from_archives(release, tmp_path_factory):
    dst = tmp_path_factory.mktemp("prepared") / "set"
    return dst, prepare(release[0], dst, size=16, workers=2)


def stored(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def test_the_archives_give_the_set_the_extracted_tree_gives(release, from_archives, tmp_path):
    src, train, val, _ = release
    dst, meta = from_archives
    labels = write_tree(tmp_path / "tree", train, val)
    prepare(tmp_path / "tree", tmp_path / "from-tree", size=16, workers=1, val_labels=labels)
    for name in ("classes.txt", "train.txt", "val.txt", "checksums.txt"):
        assert (dst / name).read_bytes() == (tmp_path / "from-tree" / name).read_bytes(), name
    files = stored(dst)
    assert files == stored(tmp_path / "from-tree") and len(files) == 9 + 6
    with np.load(dst / "stats.npz") as a, np.load(tmp_path / "from-tree/stats.npz") as b:
        for k in ("mean", "cov", "eigvals", "eigvecs"):
            assert np.array_equal(a[k], b[k]), k
    assert meta["train"] == 9 and meta["val"] == 6 and meta["skipped"] == 0
    assert not any(tmp_path.rglob("*.tar")) and not any(dst.rglob("*.JPEG"))  # nothing extracted


def test_classes_are_the_leaf_synsets_by_wnid_and_val_labels_follow_the_ground_truth(release, from_archives):
    _, _, val, synsets = release
    dst, _ = from_archives
    leaves = [s for s in synsets if not s["children"]]
    assert [s["WNID"] for s in sorted(leaves, key=lambda s: s["ID"])] != sorted(WNIDS)  # IDs not in WNID order
    assert len(synsets) > len(leaves)  # non-leaf synsets in meta.mat
    ds = open_dataset(dst)
    assert ds.classes == sorted(WNIDS)
    want = {name.replace(".JPEG", ".jpg"): sorted(WNIDS).index(w) for name, _, w in val}
    assert {rel.rsplit("/", 1)[1]: label for rel, label in ds.val} == want
    assert all(rel.split("/")[1] == ds.classes[label] for rel, label in ds.train + ds.val)


def test_each_archives_md5_is_said_and_recorded_against_the_published_one(release, tmp_path, capsys):
    src = release[0]
    code, out, err = twocol(capsys, "prepare", src, tmp_path / "set", "--size", "16", "--workers", "1")
    assert code == 0, err
    meta = json.loads((tmp_path / "set/meta.json").read_text())
    assert meta["release"] == "ILSVRC2012" and meta["md5_as_published"] is False
    for name, published in ilsvrc.RELEASES[0].md5.items():
        got = hashlib.md5((src / name).read_bytes()).hexdigest()
        assert meta["archives"][name] == {"md5": got, "published": published, "matches": False}
        line = next(l for l in err.splitlines() if l.startswith(f"twocol: warning: {name} "))
        assert got in line and published in line and "meta.json" in line
    # A complete set is not made again; its record is said again.
    code, _, again = twocol(capsys, "prepare", src, tmp_path / "set", "--size", "16", "--workers", "1")
    assert code == 0 and again.count("twocol: warning:") == 3


def hostile_release(root):
    """The official layout with every odd member: CMYK, PNG and gzip-packed JPEGs, greyscale,
    not an image, empty, links, names that climb out, a folder, a top-level non-tar, a class
    tar that is no tar."""
    w = WNIDS[0]
    link = tarfile.TarInfo(f"{w}_link.JPEG")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo(f"{w}_hard.JPEG")
    hard.type, hard.linkname = tarfile.LNKTYPE, f"{w}_1.JPEG"
    folder = tarfile.TarInfo("sub")
    folder.type = tarfile.DIRTYPE
    odd = [(f"{w}_1.JPEG", image(1)), (f"{w}_cmyk.JPEG", image(2, "CMYK")), (f"{w}_grey.JPEG", image(3, "L")),
           (f"{w}_png.JPEG", image(4, fmt="PNG")), (f"{w}_gz.JPEG", gzip.compress(image(5))),
           (f"{w}_text.JPEG", b"not an image\n"), (f"{w}_empty.JPEG", b""), (link, None), (hard, None),
           (folder, None), ("../../escaped.JPEG", image(6)), ("/tmp/absolute.JPEG", image(7))]
    train = {w: odd, WNIDS[1]: [(f"{WNIDS[1]}_1.JPEG", image(8))], WNIDS[2]: []}  # an empty class tar
    val = [("ILSVRC2012_val_00000001.JPEG", image(9), WNIDS[1]), ("ILSVRC2012_val_00000002.JPEG", image(10), w)]
    write_release(root, train, val)
    # A top-level member that is not a per-class tar, appended to the training archive.
    outer = root / "ILSVRC2012_img_train.tar"
    with tarfile.open(outer) as t:
        members = [(m.name, t.extractfile(m).read()) for m in t]
    outer.write_bytes(tar_bytes(members + [("README", b"hello\n"), ("n09999999.tar", b"not a tar" * 200)]))
    return root


def test_odd_members_go_through_as_for_a_tree_and_hostile_ones_are_reported_never_written(tmp_path):
    src = hostile_release(tmp_path / "download")
    dst = src / "set"  # beside the archives: allowed
    meta = prepare(src, dst, size=16, workers=1)
    w = WNIDS[0]
    kept = {rel.rsplit("/", 1)[1] for rel, _ in open_dataset(dst).train}
    assert kept == {f"{w}_1.jpg", f"{w}_cmyk.jpg", f"{w}_grey.jpg", f"{w}_png.jpg", f"{w}_gz.jpg",
                    f"{WNIDS[1]}_1.jpg"}
    lines = [l.split("\t") for l in (dst / "report.txt").read_text().splitlines()[1:]]
    reasons = {path.replace(str(src) + "/", ""): why for _, path, why in lines}
    inner = f"ILSVRC2012_img_train.tar/{w}.tar/"
    assert reasons == {
        inner + f"{w}_text.JPEG": "not an image (no known image format)",
        inner + f"{w}_empty.JPEG": "empty file",
        inner + f"{w}_link.JPEG": "symbolic link: not followed",
        inner + f"{w}_hard.JPEG": "hard link: not followed",
        inner + "../../escaped.JPEG": "unsafe name (absolute, or climbing out with '..'): not used",
        inner + "/tmp/absolute.JPEG": "unsafe name (absolute, or climbing out with '..'): not used",
        "ILSVRC2012_img_train.tar/README": "not a tar of one class (<wnid>.tar)",
        "ILSVRC2012_img_train.tar/n09999999.tar": "not a tar archive, or a corrupt one (invalid header): what "
                                                  "follows in it is skipped",
        f"ILSVRC2012_img_train.tar/{WNIDS[2]}.tar": "no training image of this class in the archive",
    }, reasons
    assert meta["skipped"] == len(reasons)
    assert not (tmp_path / "escaped.JPEG").exists() and not list(tmp_path.rglob("escaped*"))
    assert not list(tmp_path.rglob("absolute*")) and not os.path.exists("/tmp/absolute.JPEG")
    assert {p.name for p in dst.iterdir()} >= {"train", "val", "meta.json"}


@pytest.mark.parametrize("workers", ["1", "2"])  # in this process, and through the pool
def test_a_cut_archive_is_one_line_keeps_what_was_stored_and_resumes_to_the_same_set(release, from_archives,
                                                                                     tmp_path, capsys, workers):
    src, dst_full = release[0], from_archives[0]
    cut = tmp_path / "download"
    cut.mkdir()
    for name in ("ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"):
        (cut / name).symlink_to(src / name)
    whole = (src / "ILSVRC2012_img_train.tar").read_bytes()
    with TarStream(src / "ILSVRC2012_img_train.tar") as t:
        second = [m for m in t.walk(nest=lambda n: n.endswith(".tar"))][4]  # in the second class's tar
    at = second.offset + 100
    (cut / "ILSVRC2012_img_train.tar").write_bytes(whole[:at])
    dst = tmp_path / "set"
    code, _, err = twocol(capsys, "prepare", cut, dst, "--size", "16", "--workers", workers)
    error_after_progress(code, err, f"{cut}/ILSVRC2012_img_train.tar is cut short", f"its {at:,} bytes end in member "
                   f"{second.names[0]}", "what was stored is kept")
    kept = stored(dst)
    assert len(kept) >= 6 and not (dst / "meta.json").exists()  # the validation images at least
    stamps = {p: p.stat().st_mtime_ns for p in dst.rglob("*.jpg")}
    (cut / "ILSVRC2012_img_train.tar").write_bytes(whole)  # the download completed
    code, _, err = twocol(capsys, "prepare", cut, dst, "--size", "16", "--workers", workers)
    assert code == 0, err
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # not made again
    assert stored(dst) == stored(dst_full)
    for name in ("classes.txt", "train.txt", "val.txt", "checksums.txt"):
        assert (dst / name).read_bytes() == (dst_full / name).read_bytes()


def test_an_interrupted_prepare_resumes_without_redoing_stored_images(release, from_archives, tmp_path, monkeypatch):
    src, dst_full = release[0], from_archives[0]
    real, calls = ilsvrc.load_bytes, []

    def interrupted(data, size):
        if len(calls) == 8:
            raise KeyboardInterrupt
        calls.append(1)
        return real(data, size)

    monkeypatch.setattr(ilsvrc, "load_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, tmp_path / "set", size=16, workers=1)
    assert len(stored(tmp_path / "set")) == 8
    calls.clear()
    monkeypatch.setattr(ilsvrc, "load_bytes", lambda data, size: calls.append(1) or real(data, size))
    prepare(src, tmp_path / "set", size=16, workers=1)
    assert len(calls) == 15 - 8
    assert stored(tmp_path / "set") == stored(dst_full)
    assert (tmp_path / "set/checksums.txt").read_bytes() == (dst_full / "checksums.txt").read_bytes()


def test_a_full_disk_is_one_line_and_a_rerun_ends_as_an_uninterrupted_run(release, from_archives, tmp_path,
                                                                          capsys, monkeypatch):
    src, dst_full = release[0], from_archives[0]
    real, writes = build_module.store, []

    def full(path, data, durable):
        if len(writes) == 10 and path.suffix == ".jpg":
            raise OSError(28, "No space left on device", str(path))
        writes.append(path)
        real(path, data, durable)

    monkeypatch.setattr(build_module, "store", full)
    code, _, err = twocol(capsys, "prepare", src, tmp_path / "set", "--size", "16", "--workers", "1")
    error_after_progress(code, err, "No space left on device", ".jpg")
    monkeypatch.setattr(build_module, "store", real)
    code, _, err = twocol(capsys, "prepare", src, tmp_path / "set", "--size", "16", "--workers", "1")
    assert code == 0, err
    assert stored(tmp_path / "set") == stored(dst_full)


def devkit_with(root, truth=None, synsets=None):
    """Rewrite root's devkit with another ground truth or synset table."""
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz") as t:
        gt = [int(x) for x in t.extractfile("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt")
              .read().split()]
    synsets = synsets or synsets_for(sorted(WNIDS), {w: 3 for w in WNIDS})
    (root / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(devkit_tar(meta_mat(synsets), gt if truth is None else truth))


def copy_release(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


@pytest.mark.parametrize("case,needles", [
    ("non-leaf id", ["ILSVRC2012_validation_ground_truth.txt line 2: ILSVRC2012_ID 4 is not a class"]),
    ("fewer lines", ["ILSVRC2012_img_val.tar holds ILSVRC2012_val_00000006.JPEG, but "
                     "ILSVRC2012_validation_ground_truth.txt labels 5 images"]),
    ("more lines", ["labels 7 images but", "holds 6: ILSVRC2012_val_00000007.JPEG is missing"]),
    ("other classes", ["ILSVRC2012_img_train.tar holds n03000134.tar, but n03000134 is not a class"]),
])
def test_a_devkit_that_disagrees_with_the_archives_is_one_line_naming_the_first_disagreement(
        release, tmp_path, capsys, case, needles):
    root = copy_release(release[0], tmp_path / "download")
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz") as t:
        gt = [int(x) for x in t.extractfile("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt")
              .read().split()]
    if case == "non-leaf id":
        devkit_with(root, truth=gt[:1] + [4] + gt[2:])  # 4: the first non-leaf synset
    elif case == "fewer lines":
        devkit_with(root, truth=gt[:5])
    elif case == "more lines":
        devkit_with(root, truth=gt + gt[:1])
    else:
        devkit_with(root, synsets=synsets_for(["n01440764", "n02085620", "n09999999"], {}))
    code, _, err = twocol(capsys, "prepare", root, tmp_path / "set", "--size", "16", "--workers", "1")
    error_after_progress(code, err, *needles)


def test_other_releases_and_splits_are_refused_in_one_line(release, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "ILSVRC2017_CLS-LOC.tar.gz").write_bytes(b"")
    code, _, err = twocol(capsys, "prepare", other, tmp_path / "a", "--size", "16")
    one_line_error(code, err, "holds ILSVRC2017_CLS-LOC.tar.gz, which prepare does not read", "ILSVRC-2012",
                   "ILSVRC-2010")
    code, _, err = twocol(capsys, "prepare", release[0], tmp_path / "b", "--val-split", "test")
    one_line_error(code, err, "ILSVRC-2012 has no test labels")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "ILSVRC2012_img_val.tar").symlink_to(release[0] / "ILSVRC2012_img_val.tar")
    code, _, err = twocol(capsys, "prepare", partial, tmp_path / "c", "--size", "16")
    one_line_error(code, err, "lacks ILSVRC2012_img_train.tar, ILSVRC2012_devkit_t12.tar.gz")
    code, _, err = twocol(capsys, "prepare", release[0], tmp_path / "d", "--val-labels", str(tmp_path))
    one_line_error(code, err, "--val-labels is for an extracted tree")


def test_ilsvrc2010_reads_its_test_set_as_the_val_split(tmp_path, capsys):
    root = tmp_path / "download"
    root.mkdir()
    synsets = synsets_for(sorted(WNIDS), {w: 2 for w in WNIDS}, seed=3)
    ident = {s["WNID"]: s["ID"] for s in synsets}
    train = {w: [(f"{w}_{i + 1}.JPEG", image(20 * c + i)) for i in range(2)] for c, w in enumerate(WNIDS)}
    (root / "ILSVRC2010_images_train.tar").write_bytes(tar_bytes([(f"{w}.tar", tar_bytes(v)) for w, v in train.items()]))
    test_wnids = [WNIDS[i % 3] for i in range(4)]
    (root / "ILSVRC2010_images_test.tar").write_bytes(tar_bytes(
        [(f"test/ILSVRC2010_test_{i + 1:08d}.JPEG", image(200 + i)) for i in (2, 0, 3, 1)]))
    (root / "ILSVRC2010_test_ground_truth.txt").write_text("".join(f"{ident[w]}\n" for w in test_wnids))
    (root / "ILSVRC2010_devkit-1.0.tar.gz").write_bytes(
        devkit_tar(meta_mat(synsets, "ILSVRC2010"), [ident[WNIDS[0]]] * 3, "ILSVRC2010", "devkit-1.0"))
    code, out, err = twocol(capsys, "prepare", root, tmp_path / "set", "--size", "16", "--workers", "1",
                            "--val-split", "test")
    assert code == 0, err
    ds = open_dataset(tmp_path / "set")
    assert ds.classes == sorted(WNIDS) and len(ds.train) == 6
    assert sorted((rel.rsplit("/", 1)[1], label) for rel, label in ds.val) == \
        [(f"ILSVRC2010_test_{i + 1:08d}.jpg", sorted(WNIDS).index(w)) for i, w in enumerate(test_wnids)]
    assert ds.meta["release"] == "ILSVRC2010" and ds.meta["val_split"] == "test"
    assert ds.meta["md5_as_published"] is None and "no published MD5" in err
    # Without --val-split test, the validation archive is needed.
    code, _, err = twocol(capsys, "prepare", root, tmp_path / "set2", "--size", "16")
    one_line_error(code, err, "lacks ILSVRC2010_images_val.tar")
    # A ground truth larger than any devkit file (65 MiB, sparse) is refused unread.
    os.truncate(root / "ILSVRC2010_test_ground_truth.txt", 65 << 20)
    code, _, err = twocol(capsys, "prepare", root, tmp_path / "set3", "--size", "16", "--val-split", "test")
    one_line_error(code, err, "more than a devkit's file takes")


@pytest.mark.parametrize("keep,needle", [
    (0, "its 0 bytes end before its first member"),
    (700, "its 700 bytes end in member a.tar, 188 of its 10,240 bytes"),
    (512 + 10240, "end after member a.tar, without tar's end-of-archive marker"),
    (512 + 10240 + 600, "end after member a.tar, without tar's end-of-archive marker"),
])
def test_a_cut_archive_names_the_member_and_how_far_it_got(tmp_path, keep, needle):
    data = tar_bytes([("a.tar", tar_bytes([("b.JPEG", b"x" * 3000)]))])
    assert len(tar_bytes([("b.JPEG", b"x" * 3000)])) == 10240
    (tmp_path / "x.tar").write_bytes(data[:keep])
    with pytest.raises(DataError, match="cut short") as e:
        with TarStream(tmp_path / "x.tar") as t:
            list(t.walk(nest=lambda n: n.endswith(".tar")))
    assert needle in str(e.value)
    (tmp_path / "x.tar").write_bytes(data[:512 + 10240 + 1024])  # two zero blocks: a whole tar
    with TarStream(tmp_path / "x.tar") as t:
        assert [m.names for m in t.walk(nest=lambda n: n.endswith(".tar"))] == [("a.tar", "b.JPEG")]
        assert t.md5() == hashlib.md5(data[:512 + 10240 + 1024]).hexdigest()


def test_zeros_where_the_end_should_be_are_a_download_not_finished(tmp_path):
    data = tar_bytes([("a.JPEG", b"x" * 600)])
    (tmp_path / "x.tar").write_bytes(data + bytes(2 << 20))  # a preallocated file, filled so far
    with pytest.raises(DataError, match="x.tar is cut short or still being written: 2,105,856 bytes of zeros "
                                        "from byte 1,536 .after member a.JPEG."):
        with TarStream(tmp_path / "x.tar") as t:
            list(t.walk())


def test_a_corrupt_header_is_not_taken_for_the_end(tmp_path):
    data = bytearray(tar_bytes([("a.JPEG", b"x" * 600), ("b.JPEG", b"y" * 10)]))
    data[1536:1536 + 100] = b"\x07" * 100  # b.JPEG's header
    (tmp_path / "x.tar").write_bytes(bytes(data))
    with pytest.raises(DataError, match="is corrupt: no tar header at byte 1,536 .after member a.JPEG."):
        with TarStream(tmp_path / "x.tar") as t:
            list(t.walk())


@pytest.mark.slow
def test_prepare_killed_mid_run_resumes_to_the_set_of_an_uninterrupted_run(tmp_path):
    train = {w: [(f"{w}_{i + 1}.JPEG", image(1000 + 50 * c + i, h=375, w=500)) for i in range(40)]
             for c, w in enumerate(WNIDS)}
    val = [(f"ILSVRC2012_val_{i + 1:08d}.JPEG", image(2000 + i, h=375, w=500), WNIDS[i % 3]) for i in range(30)]
    src = tmp_path / "download"
    write_release(src, train, val)
    cmd = [sys.executable, "-m", "twocol", "prepare", str(src), str(tmp_path / "set"), "--size", "64",
           "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": SRC}
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "set").rglob("*.jpg"))) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)  # the CLI and its workers
    child.wait()
    made = len(list((tmp_path / "set").rglob("*.jpg")))
    assert 40 <= made < 150 and not (tmp_path / "set/meta.json").exists()
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    subprocess.run(cmd[:5] + [str(tmp_path / "fresh")] + cmd[6:], env=env, check=True, capture_output=True)
    assert stored(tmp_path / "set") == stored(tmp_path / "fresh")
    for name in ("classes.txt", "train.txt", "val.txt", "checksums.txt", "report.txt"):
        assert (tmp_path / "set" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()
