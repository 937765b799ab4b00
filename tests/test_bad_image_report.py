"""The bad-image report (RUN/bad_images.tsv) exists whenever a message points to it, with every
file and its reason: for the images the start-up check finds, as for those found while decoding."""
import shutil

import pytest

from twocol.data.layout import CHECKSUMS, open_dataset
from twocol.data.synth import synthesize

from conftest import LOADER_BACKENDS, one_line_error, twocol_in_process as twocol

TINY = ["-c", "configs/tiny_twocol.yaml", "model.num_classes=4", "data.batch_size=16", "data.workers=0",
        "train.epochs=1"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("data") / "s", classes=4, per_class=16, image_size=44,
                      val_per_class=2, workers=1)


def report(run):
    lines = (run / "bad_images.tsv").read_text().splitlines()
    assert lines[0].startswith("# epoch")
    return sorted(tuple(line.split("\t")) for line in lines[1:])


@pytest.mark.parametrize("backend", LOADER_BACKENDS)
@pytest.mark.parametrize("found", ["at start", "while decoding"])
def test_a_stop_for_bad_images_points_to_a_report_listing_them(clean, tmp_path, capsys, backend, found):
    data = shutil.copytree(clean, tmp_path / "data")
    if found == "while decoding":
        (data / CHECKSUMS).unlink()
    broken = sorted(rel for rel, _ in open_dataset(data).train[:2])
    for rel in broken:
        (data / rel).write_bytes(b"x" * 10)  # 2 of 64: over data.max_bad_fraction=0.01
    run = tmp_path / "run"
    code, _, err = twocol(capsys, "train", "--gpus", "cpu", "--threads", "1", "--data", data, "--run-dir", run,
                          *TINY, f"data.loader={backend}")
    one_line_error(code, err, "are bad (more than data.max_bad_fraction=0.01)", f"see {run / 'bad_images.tsv'}")
    rows = report(run)
    if found == "at start":  # every file the check left out, though the run stopped before reading it
        assert rows == [("1", "train", rel, f"10 bytes, {CHECKSUMS} says {(clean / rel).stat().st_size} "
                                            "(changed since it was stored)") for rel in broken]
    else:  # those met before the stop, each with the decoder's reason
        assert rows and all(r[2] in broken and r[3].startswith("cannot decode") for r in rows)
