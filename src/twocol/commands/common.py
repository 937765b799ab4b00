"""Options and steps that several commands share."""
from __future__ import annotations

import argparse

import torch

from ..ablations import ABLATIONS, apply_ablations
from ..config import Config, load_config
from ..errors import ConfigError
from ..threads import choose_threads


def add_config_arguments(p: argparse.ArgumentParser, gpus: bool = True,
                         default_config: str | None = "configs/alexnet_paper.yaml",
                         config_help: str = "YAML config (default: %(default)s)") -> None:
    """The options of every command that builds a net."""
    p.add_argument("-c", "--config", default=default_config, help=config_help)
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="config overrides, e.g. model.lrn.enabled=false data.batch_size=64")
    p.add_argument("--ablation", action="append", default=[], metavar="NAME",
                   help="apply one of the paper's ablations to the config, as bench/paper.py does "
                        "(repeatable; after the overrides): "
                        + "; ".join(f"{a.name}: {a.what}" for a in ABLATIONS.values()))
    if gpus:
        add_gpus_argument(p)
        p.add_argument("--check-isolation", action="store_true",
                       help="fail if a tensor crosses between the columns anywhere but a named link")


def add_gpus_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpus", default=None,
                   help="'0,1' (column A on cuda:0, B on cuda:1), '0' (both on cuda:0) or 'cpu' "
                        "(simulated two devices); default: 0,1 / 0 / cpu by what this machine has")


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="compute threads of this process (default: OMP_NUM_THREADS if set, else the CPUs "
                        "this process may use: its affinity and cgroup quota)")


def set_threads(requested: int | None = None) -> None:
    """Compute with the threads twocol.threads.choose_threads picks (--threads given as `requested`)."""
    torch.set_num_threads(choose_threads(requested)[0])


def refuse_ablations_without_config(args) -> None:
    if args.config is None and args.ablation:
        raise ConfigError("--ablation needs --config (a checkpoint's own config already holds its ablations)")


def config_of(args, path: str | None = None) -> Config:
    """The config file (`path`, default args.config) with the overrides, then the ablations."""
    if path is None:
        refuse_ablations_without_config(args)
    return apply_ablations(load_config(path or args.config, args.overrides), args.ablation)
