"""A tar archive read in one pass from the start, as it streams off the disk, nothing extracted.

`TarStream(path).walk()` gives the members in the order they are stored and, with `nest`, the
members of a member that is itself a tar (ILSVRC's training archive: one tar per class), read
in place. A regular file is given as a `Member`: where its bytes lie in the archive file, which
a worker reads back with one `read_member` (soon after the walk passed them, so from the page
cache). Every byte the walk reads goes through an MD5 (`md5()` once the walk is done).

Names are never used as paths: they only name a member (report.txt). Members that are not
regular files (links, devices), and names that are absolute or climb out with '..', are given
as `Skipped` with the reason; folders are passed over.

tarfile takes a header it cannot read for the end of the archive, and so would a download cut
at a member's edge or a corrupt header. The walk checks that where tarfile stopped, tar's
end-of-archive marker follows (at least two blocks of zeros, and nothing but zeros after
them), and otherwise fails with one line (a DataError) naming the archive, the member it got
to and how far: the members given before stay given.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from ..errors import DataError

BLOCK = 512
# tar's end: two zero blocks, padded with zeros to its record size (10 KiB by default). More
# zeros than this after the last member is a file still being filled (a download that
# preallocates), not a tar's end.
END_MIN, END_MAX = 2 * BLOCK, 1 << 20
# tarfile's read size while streaming (its default, 10 KiB, costs a Python call per 10 KiB).
STREAM_BUFFER = 1 << 16
# A member larger than this is not read into memory (an image of ImageNet is well under 1 MB).
MAX_MEMBER = 256 << 20


@dataclass(frozen=True)
class Member:
    """A regular file inside an archive: `names` is its name, and inside a nested tar its name
    there; its `size` bytes start at byte `offset` of the archive file."""
    archive: str
    names: tuple[str, ...]
    offset: int
    size: int

    def __str__(self) -> str:
        return "/".join((self.archive,) + self.names)


@dataclass(frozen=True)
class Skipped:
    """A member that is not given on, with the reason."""
    archive: str
    names: tuple[str, ...]
    reason: str

    def __str__(self) -> str:
        return "/".join((self.archive,) + self.names)


def read_member(member: Member) -> bytes:
    """The bytes of `member`, read back from its archive."""
    if member.size > MAX_MEMBER:
        raise ValueError(f"a member of {member.size:,} bytes, over {MAX_MEMBER:,}")
    fd = os.open(member.archive, os.O_RDONLY)
    try:
        data = os.pread(fd, member.size, member.offset)
    finally:
        os.close(fd)
    if len(data) != member.size:
        raise EOFError(f"the archive holds {len(data):,} of the member's {member.size:,} bytes")
    return data


def unsafe(name: str) -> bool:
    """A member name that, taken as a path, would leave the folder it is extracted in."""
    path = PurePosixPath(name)
    return path.is_absolute() or ".." in path.parts


class _Hashing:
    """A binary file read forward only, every byte into an MD5, counting the bytes read."""

    def __init__(self, f):
        self.f, self.md5, self.pos = f, hashlib.md5(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.md5.update(data)
        self.pos += len(data)
        return data


class TarStream:
    """One pass over the tar archive at `path` (see the module's docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = open(self.path, "rb", buffering=1 << 20)
        self.size = os.fstat(self._file.fileno()).st_size
        self._reader = _Hashing(self._file)
        self._last: tuple[tuple[str, ...], int, int] | None = None  # names, data offset, size
        self._md5: str | None = None

    def __enter__(self) -> "TarStream":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def md5(self) -> str:
        """The archive's MD5, once `walk` has read it to the end."""
        if self._md5 is None:
            raise RuntimeError("the walk has not reached the end of the archive")
        return self._md5

    def walk(self, nest: Callable[[str], bool] | None = None) -> Iterator[Member | Skipped]:
        """Every member but folders, in the archive's order; a regular file whose name `nest`
        accepts is opened as a tar and its members given instead (names: outer, inner)."""
        try:
            outer = tarfile.open(fileobj=self._reader, mode="r|", bufsize=STREAM_BUFFER)
        except tarfile.TarError as e:
            raise self._broken(e, first=True) from None
        try:
            for info in outer:
                names = (info.name,)
                self._last = (names, info.offset_data, info.size)
                if nest is not None and info.isreg() and not info.issparse() and not unsafe(info.name) \
                        and nest(info.name):
                    yield from self._nested(outer, info)
                else:
                    entry = self._entry(names, info, info.offset_data)
                    if entry is not None:
                        yield entry
        except (tarfile.TarError, EOFError) as e:
            raise self._broken(e) from None
        self._check_end(outer.offset)
        while self._reader.read(1 << 20):  # tar's end, into the MD5
            pass
        self._md5 = self._reader.md5.hexdigest()

    def _entry(self, names: tuple[str, ...], info: tarfile.TarInfo, offset: int) -> Member | Skipped | None:
        skip = lambda why: Skipped(str(self.path), names, why)  # noqa: E731
        if unsafe(info.name):
            return skip("unsafe name (absolute, or climbing out with '..'): not used")
        if info.isdir():
            return None
        if info.issym():
            return skip("symbolic link: not followed")
        if info.islnk():
            return skip("hard link: not followed")
        if not info.isreg() or info.issparse():
            return skip("not a regular file (a device, a fifo or a sparse file)")
        return Member(str(self.path), names, offset, info.size)

    def _nested(self, outer: tarfile.TarFile, info: tarfile.TarInfo) -> Iterator[Member | Skipped]:
        """The members of the tar that the member `info` of `outer` holds."""
        base = info.offset_data
        try:
            inner = tarfile.open(fileobj=outer.extractfile(info), mode="r|", bufsize=STREAM_BUFFER)
            for sub in inner:
                names = (info.name, sub.name)
                self._last = (names, base + sub.offset_data, sub.size)
                entry = self._entry(names, sub, base + sub.offset_data)
                if entry is not None:
                    yield entry
        except (tarfile.TarError, EOFError) as e:
            if self._ran_out(e):
                raise  # the outer archive is cut: walk() says so
            yield Skipped(str(self.path), (info.name,), f"not a tar archive, or a corrupt one ({e}): "
                                                        "what follows in it is skipped")
            return
        self._last = ((info.name,), base, info.size)
        end = self._end_problem(base + inner.offset, base + info.size)
        if end is not None:
            yield Skipped(str(self.path), (info.name,), f"corrupt tar: {end[1]}; what follows in it is skipped")

    def _end_problem(self, start: int, stop: int) -> tuple[str, str] | None:
        """Why [start, stop) of the file is not a tar's end marker, as (kind, words): kind "cut"
        (too short), "corrupt" (not zeros) or "zeros" (too many); None when it is one."""
        length = stop - start
        if length < END_MIN:
            return "cut", f"no end-of-archive marker at byte {start:,}"
        data = os.pread(self._file.fileno(), min(length, END_MAX + 1), start)
        if data.count(0) != len(data):
            return "corrupt", f"no tar header at byte {start:,}"
        if length > END_MAX:
            return "zeros", f"{length:,} bytes of zeros from byte {start:,}"
        return None

    def _check_end(self, start: int) -> None:
        """The archive ends properly where tarfile stopped, at byte `start`."""
        problem = self._end_problem(start, self.size)
        if problem is None:
            return
        kind, words = problem
        if kind == "cut":
            raise self._cut()
        if kind == "corrupt":
            raise DataError(f"{self.path} is corrupt: {words}{self._after()}")
        raise DataError(f"{self.path} is cut short or still being written: {words}{self._after()}, more than "
                        "a tar's end holds; what was stored is kept: complete the file and run the same command again")

    def _after(self) -> str:
        return f" (after member {'/'.join(self._last[0])})" if self._last else ""

    def _cut(self) -> DataError:
        where = "before its first member"
        if self._last is not None:
            names, offset, size = self._last
            name = "/".join(names)
            if offset <= self.size < offset + size:
                where = f"in member {name}, {self.size - offset:,} of its {size:,} bytes"
            else:
                where = f"after member {name}, without tar's end-of-archive marker"
        return DataError(f"{self.path} is cut short (a download not finished?): its {self.size:,} bytes end "
                         f"{where}; what was stored is kept: complete the file and run the same command again")

    def _ran_out(self, e: Exception) -> bool:
        """Whether tarfile's error `e` is the end of the file come too early."""
        return self._reader.pos >= self.size and any(w in str(e) for w in ("end of data", "empty file", "truncated"))

    def _broken(self, e: Exception, first: bool = False) -> DataError:
        """The error to raise when tarfile could not go on."""
        if self._ran_out(e):
            return self._cut()
        if first:
            return DataError(f"{self.path} is not a tar archive ({e})")
        return DataError(f"{self.path} is corrupt at byte {self._reader.pos:,}{self._after()}: {e}")
