"""`twocol train`: train a net; under torchrun, one two-column net per process."""
from __future__ import annotations

import time
from pathlib import Path

from ..checkpoint import checkpoint_config, load_checkpoint
from ..checkpoint_checks import resumed_origin
from ..data.synth import dataset_root
from ..distributed import barrier, gather_objects, init, placement_for, shutdown, world_from_env
from ..errors import TwocolError
from ..interrupt import Interrupted, exit_code
from ..train import train
from ..viz.training import plot_run
from .common import (add_config_arguments, add_threads_argument, config_of, refuse_ablations_without_config,
                     set_threads)

HELP = "train a net (default: the small two-column net on the built-in synthetic data)"
DEFAULT_CONFIG = "configs/small_twocol.yaml"


def add_arguments(p) -> None:
    add_config_arguments(p, default_config=None, config_help=f"YAML config (default: {DEFAULT_CONFIG}, "
                                                             "or with --resume the checkpoint's own)")
    p.add_argument("--data", help="prepared dataset (twocol prepare / twocol synth); default: the "
                                  "built-in synthetic set under data/, created if missing")
    p.add_argument("--run-dir", help="where metrics, checkpoint and plot go (default: "
                                     "<train.out_dir>/<config name>-<date-time>)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue a run from its checkpoint.pt "
                                                          "(in that checkpoint's directory unless --run-dir)")
    add_threads_argument(p)


def run(args) -> int:
    set_threads(args.threads)
    resume = Path(args.resume) if args.resume else None
    data, gpus = args.data, args.gpus
    if resume is not None:
        if args.config is None:
            refuse_ablations_without_config(args)
        ckpt = load_checkpoint(resume)
        # Continue on the run's own dataset and devices unless given anew.
        data, gpus = resumed_origin(ckpt, resume, data, gpus)
    if resume is not None and args.config is None:
        # Continue with the run's own config (overrides still apply, e.g. train.epochs=...).
        cfg = checkpoint_config(ckpt, resume, args.overrides)
    else:
        cfg = config_of(args, path=args.config or DEFAULT_CONFIG)
    ckpt = None  # train() reads it again: not two copies of the weights in memory
    world = world_from_env()
    placement = placement_for(world, gpus)
    init(world, placement)
    try:
        if args.run_dir:
            run_dir = Path(args.run_dir)
        elif resume is not None:
            run_dir = resume.parent
        else:  # rank 0's clock names the run for every rank
            run_dir = gather_objects(Path(cfg.train.out_dir) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}", world)[0]
        if world.is_main:
            data_root = dataset_root(cfg, data)
        barrier(world)  # the others wait while rank 0 makes the synthetic set
        if not world.is_main:
            data_root = dataset_root(cfg, data)
        origin = {"data": str(Path(data).resolve()) if data is not None else None, "gpus": gpus}
        try:
            final = train(cfg, placement, data_root, run_dir, resume=resume,
                          check_isolation=args.check_isolation, world=world, origin=origin)
        except Interrupted as e:
            return exit_code(e.signum)
    finally:
        shutdown(world)
    if not world.is_main:
        return 0
    try:  # the run is done and checkpointed: a figure that cannot be drawn does not undo that
        png = plot_run(run_dir / "metrics.jsonl", run_dir / "curves.png")
    except (TwocolError, OSError) as e:
        png = f"not drawn ({e})"
    errors = ", ".join(f"{name} {100 * final[key]:.2f}%" for name, key in
                       (("val top-1 error", "val_top1_error"), ("top-5", "val_top5_error"))
                       if isinstance(final.get(key), float))
    print(f"done: {errors or 'no epoch finished in this run'}; checkpoint {run_dir / 'checkpoint.pt'}, curves {png}")
    return 0
