"""The `twocol` command line: one subcommand per module of twocol.commands, in the order a user
needs them. Errors a user can cause (TwocolError) are one line on stderr and an exit code."""
from __future__ import annotations

import argparse
import sys

from .commands import describe, evaluate, features, prepare, profile, synth, train, viz
from .errors import TwocolError

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
        return args._run(args) or 0
    except TwocolError as e:
        print(f"twocol: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("twocol: interrupted", file=sys.stderr)
        return 130
