"""`twocol viz ...`: one subcommand per figure, each in its own module with
add_arguments(parser) and run(args)."""
from __future__ import annotations

import importlib

SUBCOMMANDS = {
    "filters": ("twocol.viz.filters", "conv1 kernels of both columns as an image grid, with "
                "each column's colour-specialisation score (the paper's Figure 3)"),
    "neighbours": ("twocol.viz.neighbours", "nearest training images of query images in the "
                   "last hidden layer, next to the nearest by raw pixels (the paper's Figure 4)"),
    "curve": ("twocol.viz.curve", "the columns' colour specialisation over training, from a "
              "training log"),
}


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="figure", metavar="FIGURE", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        q = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        q.set_defaults(_figure_module=module)
        importlib.import_module(module).add_arguments(q)


def run(args) -> int:
    return importlib.import_module(args._figure_module).run(args)
