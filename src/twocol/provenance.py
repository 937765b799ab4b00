"""Which commit of twocol a result was made with, also on a machine whose copy of the tree has
no .git (a GPU machine that was sent the working tree): git's HEAD where this source tree is a
git checkout, else the commit the sender named in the environment variable COMMIT_VARIABLE."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

COMMIT_VARIABLE = "TWOCOL_COMMIT"
ROOT = Path(__file__).resolve().parents[2]  # the tree holding src/twocol


def commit(root: Path = ROOT) -> tuple[str | None, str | None]:
    """(short commit, None), or (None, why it is not known). Only a git checkout whose top level
    is `root` counts: a copy of the tree inside some other repository is not that repository's
    HEAD."""
    try:
        git = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        lines = git.stdout.split()
        if git.returncode == 0 and len(lines) == 2 and Path(lines[0]).resolve() == root.resolve():
            return lines[1], None
    except (OSError, subprocess.TimeoutExpired):
        pass
    named = os.environ.get(COMMIT_VARIABLE, "").strip()
    if re.fullmatch(r"[0-9a-f]{7,40}", named):
        return named, None
    if named:
        return None, f"{COMMIT_VARIABLE}={named[:50]!r} is not a commit (7 to 40 hex digits)"
    return None, (f"{root} is not a git checkout and {COMMIT_VARIABLE} is not set (set it to the "
                  "commit the tree was copied from)")


def commit_fields(root: Path = ROOT) -> dict:
    """A result's record of its commit: {"commit": ...}, with "commit_missing" saying why where
    it is not known (the commit is then null)."""
    sha, missing = commit(root)
    return {"commit": sha, **({"commit_missing": missing} if missing else {})}
