"""Writing files so that a crash never leaves half of one: every file the project writes for a
later reader (checkpoints, dataset images and manifests, results) goes through `atomic_write`.

The data goes to a temporary file beside the target, named `.<name>.tmp-<pid>`, is flushed and
fsynced, and is renamed over the target; the folder is then fsynced so the rename itself is
durable. A reader, or a run resumed after a kill or a power cut, sees the old file or the whole
new one. A process killed mid-write leaves its temporary file behind: `remove_stale_temps`
deletes those whose writer is gone.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import BinaryIO, Callable

_TEMP = re.compile(r"^\..+\.tmp-(\d+)$")


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes | str | Callable[[BinaryIO], None]) -> None:
    """Replace `path` by `data` (bytes, text, or a function that writes to the open binary
    file) in one step. (The fsyncs cost about 0.5 ms a file here: 10 minutes of one core for
    ImageNet's 1.3 million prepared images, against hours of decoding.)"""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # (a read-only folder) the write's own error is the one to tell
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def is_temp_name(name: str) -> bool:
    return _TEMP.match(name) is not None


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files in `folder` whose writing process no longer runs (a writer
    killed mid-write); returns them. A live writer's file is left alone."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in os.scandir(folder):
        m = _TEMP.match(entry.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed
