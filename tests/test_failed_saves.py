"""A checkpoint that cannot be written (a full disk, a folder made read-only during the run, an
error of the file system) ends the run with one line naming the path and the OS's reason, exit
code 2, and the previous checkpoint as it was: the cleanup after it never hides that error."""
import builtins
import errno
import os
import shutil

import pytest

from twocol.data import base

from conftest import one_line_error, twocol_in_process as twocol
from test_hostile_runs import files_at_most

@pytest.fixture
def data(tiny_set):
    return tiny_set


@pytest.fixture
def trained(trained_run):
    """The session's run of one finished epoch (read-only: each test resumes a copy)."""
    return trained_run


def resume(capsys, run, data, *extra):
    return twocol(capsys, "train", "--resume", run / "checkpoint.pt", "--gpus", "cpu", "--threads", "1",
                  "--data", data, "train.epochs=2", *extra)


# Where the write stops, as a share of the checkpoint's size: in torch.save's first bytes, inside
# a tensor it writes straight from memory, and in its last bytes.
@pytest.mark.parametrize("share", [0.01, 0.5, 0.97])
def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_checkpoint(data, trained, tmp_path, capsys, share):
    run = shutil.copytree(trained, tmp_path / "run")
    ckpt = run / "checkpoint.pt"
    before = ckpt.read_bytes()
    with files_at_most(int(len(before) * share)):
        code, _, err = resume(capsys, run, data)
    one_line_error(code, err, f"cannot write {ckpt}: File too large", "previous checkpoint is unchanged")
    assert ckpt.read_bytes() == before
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]


def refuse_new_names(monkeypatch, folder, why=errno.EACCES):
    """From now on, as for a folder made read-only (chmod a-w, which root ignores): making,
    removing or renaming an entry of `folder` fails; files already there can still be written."""
    folder = os.path.realpath(folder)

    def inside(path):
        return os.path.dirname(os.path.realpath(os.fsdecode(path))) == folder

    def refuse(path):
        raise OSError(why, os.strerror(why), os.fsdecode(path))

    real_open, real_os_open, real_unlink, real_replace = builtins.open, os.open, os.unlink, os.replace

    def guarded_open(path, mode="r", *a, **kw):
        if isinstance(path, (str, bytes, os.PathLike)) and any(c in mode for c in "wax") \
                and not os.path.exists(path) and inside(path):
            refuse(path)
        return real_open(path, mode, *a, **kw)

    def guarded_os_open(path, flags, *a, **kw):
        if flags & os.O_CREAT and not os.path.exists(path) and inside(path):
            refuse(path)
        return real_os_open(path, flags, *a, **kw)

    def guarded_unlink(path, *a, **kw):
        if inside(path):
            refuse(path)
        return real_unlink(path, *a, **kw)

    def guarded_replace(src, dst, *a, **kw):
        if inside(src) or inside(dst):
            refuse(dst)
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    monkeypatch.setattr(os, "unlink", guarded_unlink)
    monkeypatch.setattr(os, "replace", guarded_replace)


@pytest.mark.parametrize("why,reason", [(errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only file system"),
                                        (errno.EIO, "Input/output error")])
def test_a_run_directory_made_read_only_mid_run_names_the_failed_save(data, trained, tmp_path, capsys, monkeypatch,
                                                                      why, reason):
    run = shutil.copytree(trained, tmp_path / "run")
    ckpt = run / "checkpoint.pt"
    before = ckpt.read_bytes()
    real = base.Loader.epoch

    def read_only_from_epoch_2(self, e, start_batch=0):
        if self.train and e == 1:
            refuse_new_names(monkeypatch, run, why)
        yield from real(self, e, start_batch)

    monkeypatch.setattr(base.Loader, "epoch", read_only_from_epoch_2)
    code, _, err = resume(capsys, run, data)
    monkeypatch.undo()
    one_line_error(code, err, f"cannot write {ckpt}: {reason}", "previous checkpoint is unchanged")
    assert ckpt.read_bytes() == before
