"""What the start-up check of a dataset's files costs (data.verify_files), per file: the size
check (a stat), the CRC check at a first start (every file read) and at a later one (only the
files changed since they last matched, here none). The figures of docs/data.md come from this script.

    python -m bench.verify_files DST [--repeats 5]      # DST: a prepared set, e.g. from
    twocol synth DST --classes 10 --per-class 200 --val-per-class 1 --size 256

The first start is timed with the files in the page cache (they were just read or written):
from a cold disk it also waits for reading the set once.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from twocol.data.bad import check_files
from twocol.data.layout import VERIFIED, open_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    ds = open_dataset(args.root)
    n = len(ds.train)
    kib = sum((args.root / rel).stat().st_size for rel, _ in ds.train) / n / 1024
    print(f"{args.root}: {n} training images, {kib:.1f} KiB each on average; median of {args.repeats} starts")
    for label, mode, first in (("size", "size", False), ("crc, first start", "crc", True),
                               ("crc, later start", "crc", False)):
        times = []
        for _ in range(args.repeats):
            if first:
                (args.root / VERIFIED).unlink(missing_ok=True)
            start = time.perf_counter()
            check_files(ds, "train", mode)
            times.append(time.perf_counter() - start)
        t = statistics.median(times)
        print(f"{label:>17}: {t * 1e3:7.0f} ms, {t / n * 1e6:6.1f} us per file")


if __name__ == "__main__":
    main()
