"""One process at a time in a run directory or a dataset being written.

`DirLock(folder)` holds an exclusive `flock` on `folder/.lock`, a file that names the holder's
pid. A second process asking for the same folder gets a LockError naming that pid (or, with
`wait=True`, waits for it). The kernel drops the lock when its holder exits in any way (SIGKILL
and power cuts included), so a lock is never left stale; a left-over `.lock` file is harmless.
flock is not reliable on some network file systems (old NFS); there two hosts are not kept apart.

A flock belongs to the open file, which a forked child (a DataLoader worker) shares: a child
closes its copies at once, so that a holder killed with SIGKILL frees the folder at once, not
when its orphaned workers notice and exit seconds later.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from .errors import LockError

LOCK = ".lock"


class DirLock:
    """`with DirLock(folder, "run directory"):` ... The folder is created if missing. Reentrant
    within a process: a nested DirLock of a folder this process holds is a no-op."""

    _held: dict[str, int] = {}  # folder (resolved) -> nesting depth, in this process
    _fds: dict[str, int] = {}   # folder (resolved) -> the locked file's descriptor

    def __init__(self, folder: str | Path, what: str = "folder", wait: bool = False, on_wait=None):
        self.folder, self.what, self.wait, self.on_wait = Path(folder), what, wait, on_wait
        self.path = self.folder / LOCK
        self.fd: int | None = None
        self.key: str | None = None

    def _holder(self) -> str:
        try:
            text = self.path.read_text()[:20].strip()
        except (OSError, UnicodeDecodeError):
            return "another process"
        return f"pid {text}" if text.isascii() and text.isdigit() else "another process"

    def acquire(self) -> "DirLock":
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.key = str(self.folder.resolve())
        except OSError as e:
            raise LockError(f"cannot create the {self.what} {self.folder}: {e.strerror or e}") from None
        if self.key in DirLock._held:
            DirLock._held[self.key] += 1
            return self
        waited = False
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise LockError(f"cannot lock the {self.what} {self.folder} ({self.path}: {e.strerror or e})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if not self.wait:
                    raise LockError(f"the {self.what} {self.folder} is in use by {self._holder()} (a twocol process "
                                    f"writing there); wait for it to end or use another {self.what}") from None
                if not waited and self.on_wait is not None:
                    self.on_wait(f"waiting for {self._holder()}, which is writing the {self.what} {self.folder}")
                waited = True
                time.sleep(0.5)
                continue
            # The holder before us may have removed the file between our open and our lock:
            # then we hold a lock on a name that no longer exists, and must start again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        DirLock._held[self.key] = 1
        DirLock._fds[self.key] = fd
        return self

    def release(self) -> None:
        if self.key not in DirLock._held:
            return
        DirLock._held[self.key] -= 1
        if DirLock._held[self.key] == 0:
            del DirLock._held[self.key]
            DirLock._fds.pop(self.key, None)
        if self.fd is not None:
            # Removed while still locked, so that no one can lock the old file after we let go.
            # A folder that became read-only keeps it (harmless, see above); the error that
            # ends the run, such as a checkpoint that could not be written, is the one to tell.
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None

    @staticmethod
    def _forget_in_child() -> None:
        for fd in DirLock._fds.values():
            os.close(fd)
        DirLock._held.clear()  # the child's release() is then a no-op: the parent holds on
        DirLock._fds.clear()

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


os.register_at_fork(after_in_child=DirLock._forget_in_child)
