"""`python -m bench.report`: write bench/results/latest.md and latest.png."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.report import __doc__ as DOC, write_report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("bench/results"))
    p.add_argument("--out", type=Path, default=None, help="markdown file (default: RESULTS/latest.md; the chart "
                                                          "goes next to it as .png)")
    a = p.parse_args(argv)
    written = write_report(a.results, a.out)
    if written is None:
        print(f"bench/report: no results in {a.results}; run make bench", file=sys.stderr)
        return 1
    md, found = written
    print(f"wrote {md} and {md.with_suffix('.png')} from {', '.join(v['_file'] for v in found.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
