"""The `twocol` command line. Each subcommand lives in its own module, imported on use, which
provides `add_arguments(parser)` and `run(args) -> int`."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import TwocolError

# name -> (module, one-line help)
COMMANDS = {
    "describe": ("twocol.describe", "print the layers, devices, shapes, parameters and links of a config's net"),
    "prepare": ("twocol.data.prepare", "resize an ImageNet-style tree to stored squares, with manifests, mean image and PCA"),
    "synth": ("twocol.data.synth", "write the built-in synthetic dataset (shapes x textures) in prepare's layout"),
    "train": ("twocol.train", "train a net (default: the small two-column net on the built-in synthetic data)"),
    "eval": ("twocol.evaluate", "top-1/top-5 error of checkpoints, centre crop or 10-patch, alone or as an ensemble"),
    "features": ("twocol.features", "save the last hidden layer (fc7) of every image of a split, for viz neighbours"),
    "viz": ("twocol.viz.commands", "figures of what the columns learn: conv1 filters, nearest neighbours, colour curve"),
}


def add_config_arguments(p: argparse.ArgumentParser, gpus: bool = True,
                         default_config: str | None = "configs/alexnet_paper.yaml",
                         config_help: str = "YAML config (default: %(default)s)") -> None:
    """The options every command that builds a net shares."""
    p.add_argument("-c", "--config", default=default_config, help=config_help)
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="config overrides, e.g. model.lrn.enabled=false data.batch_size=64")
    if gpus:
        p.add_argument("--gpus", default=None,
                       help="'0,1' (column A on cuda:0, B on cuda:1), '0' (both on cuda:0) or 'cpu' "
                            "(simulated two devices); default: 0,1 / 0 / cpu by what this machine has")
        p.add_argument("--check-isolation", action="store_true",
                       help="fail if a tensor crosses between the columns anywhere but a named link")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twocol",
        description="The two-GPU model-parallel AlexNet (Krizhevsky, Sutskever, Hinton 2012).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
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
        return importlib.import_module(args._module).run(args) or 0
    except TwocolError as e:
        print(f"twocol: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("twocol: interrupted", file=sys.stderr)
        return 130
