"""`twocol viz FIGURE`: figures of what the columns learn (the paper's Figures 3 and 4)."""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import load_net
from ..devices import Placement
from ..viz.curve import draw_curve, read_scores
from ..viz.filters import column_label, draw_filters
from ..viz.neighbours import SPACES, draw_neighbours, neighbours

HELP = "figures of what the columns learn: conv1 filters, nearest neighbours, colour curve"


def add_filters_arguments(p) -> None:
    p.add_argument("--ckpt", required=True, help="a twocol checkpoint")
    p.add_argument("-o", "--out", required=True, metavar="FILE.png", help="where to write the figure")


def filters(args) -> int:
    # Drawing needs no accelerator: the weights are read on the CPU whatever trained them.
    net, cfg, ckpt = load_net(args.ckpt, Placement.cpu())
    scores = draw_filters(net, args.out, f"conv1 kernels: {cfg.name}, epoch {ckpt.get('epoch', '?')}")
    for name, s in scores.items():
        print(f"{column_label(name)}: colour specialisation mean {s['mean']:.4f} std {s['std']:.4f} "
              f"over {s['kernels']} kernels")
    print(f"wrote {args.out}")
    return 0


def add_neighbours_arguments(p) -> None:
    p.add_argument("--feats", required=True, metavar="FEATS", help="features of the query images (`twocol features`)")
    p.add_argument("--query", type=int, action="append", required=True, metavar="N",
                   help="row of FEATS to query (repeatable)")
    p.add_argument("--train-feats", metavar="FEATS",
                   help="training-split features to search (needed when FEATS is not the train split)")
    p.add_argument("--k", type=int, default=6, help="neighbours per query (default: %(default)s)")
    p.add_argument("-o", "--out", required=True, metavar="FILE.png", help="where to write the figure")


def neighbours_figure(args) -> int:
    query_meta, bank_meta, found = neighbours(args.feats, args.train_feats, args.query, args.k)
    for r, n in enumerate(args.query):
        print(f"query {query_meta['split']} row {n}: {query_meta['relpaths'][n]} "
              f"({query_meta['classes'][query_meta['labels'][n]]})")
        for space, heading in SPACES:
            idx, dist = found[space]
            print(f"  {heading}:")
            for b, d in zip(idx[r], dist[r]):
                print(f"    {d:12.4f}  {bank_meta['relpaths'][b]} ({bank_meta['classes'][bank_meta['labels'][b]]})")
    draw_neighbours(args.out, args.query, query_meta, bank_meta, found)
    print(f"wrote {args.out}")
    return 0


def add_curve_arguments(p) -> None:
    p.add_argument("--metrics", required=True, metavar="RUN/metrics.jsonl", help="a training run's metrics log")
    p.add_argument("-o", "--out", required=True, metavar="FILE.png", help="where to write the figure")


def curve(args) -> int:
    scores = read_scores(args.metrics)
    draw_curve(scores, args.out, f"colour specialisation of conv1, {Path(args.metrics).parent.name}")
    for epoch, s in scores:
        print(f"epoch {epoch}: " + ", ".join(f"column {c} {v['mean']:.4f} ± {v['std']:.4f}" for c, v in sorted(s.items())))
    print(f"wrote {args.out}")
    return 0


# name -> (help, add_arguments, run)
FIGURES = {
    "filters": ("conv1 kernels of both columns as an image grid, with each column's colour-specialisation "
                "score (the paper's Figure 3)", add_filters_arguments, filters),
    "neighbours": ("nearest training images of query images in the last hidden layer, next to the nearest "
                   "by raw pixels (the paper's Figure 4)", add_neighbours_arguments, neighbours_figure),
    "curve": ("the columns' colour specialisation over training, from a training log", add_curve_arguments, curve),
}


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="figure", metavar="FIGURE", required=True)
    for name, (help_text, add, run_figure) in FIGURES.items():
        q = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        add(q)
        q.set_defaults(_figure=run_figure)


def run(args) -> int:
    return args._figure(args)
