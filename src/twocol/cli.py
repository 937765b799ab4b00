"""The `twocol` command line: one subcommand per module of twocol.commands, in the order a user
needs them. Errors a user can cause (TwocolError) and failures of the machine (OSError: disk
full, read-only folder) are one line on stderr and an exit code: 2 for bad input or an unusable
state, 3 for a diverged run, 128 + the signal's number when stopped by one (130 SIGINT, 143 SIGTERM)."""
from __future__ import annotations

import argparse
import os
import signal
import sys

# Before torch loads (the commands import it), since OpenMP reads this once: waiting threads
# sleep instead of spinning, so that runs sharing the cores do not burn each other's time
# (twocol.threads; docs/guarantees.md measures it). A value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import ConfigError, TwocolError, one_line  # noqa: E402
from .threads import omp_num_threads  # noqa: E402 (it does not load torch)

# OpenMP also reads OMP_NUM_THREADS when torch loads, and complains on stderr of a value it cannot
# use, before our own one line: such a value is taken out of the environment first, and main()
# refuses it.
try:
    omp_num_threads()
    BAD_OMP_NUM_THREADS = None
except ConfigError as e:
    BAD_OMP_NUM_THREADS = e
    del os.environ["OMP_NUM_THREADS"]

from .commands import describe, evaluate, features, prepare, profile, synth, train, viz  # noqa: E402

COMMANDS = {"describe": describe, "prepare": prepare, "synth": synth, "train": train, "eval": evaluate,
            "features": features, "viz": viz, "profile": profile}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twocol",
        description="The two-GPU model-parallel AlexNet (Krizhevsky, Sutskever, Hinton 2012).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP[0].upper() + module.HELP[1:] + ".")
        p.set_defaults(_run=module.run)
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling a positional list at the first option, so overrides given after
    # an option (`--check-isolation a.b=1`) come back unparsed: take them as overrides too.
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = args.overrides + extra
    try:
        if BAD_OMP_NUM_THREADS is not None:
            raise BAD_OMP_NUM_THREADS
        return args._run(args) or 0
    except TwocolError as e:
        print(f"twocol: error: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # what the library did not name itself: the file and the OS's reason
        where = f"{e.filename}: " if e.filename else ""
        print(f"twocol: error: {one_line(where + (e.strerror or str(e) or type(e).__name__))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"twocol: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
