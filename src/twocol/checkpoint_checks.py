"""The checks a checkpoint passes before any of it is used. A checkpoint file is untrusted: one
that this code did not write, or that was edited, is a CheckpointError naming the field, never a
traceback and never code run (torch.load with weights_only, a zip that expands as torch.save
wrote it, every field of the type and bounds it must have, every weight of the shape its net
needs and finite)."""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import torch

from .config import Config, config_from_dict
from .errors import CheckpointError, ConfigError
from .rng import rng_problem
from .typed_yaml import show

# Bounds of a checkpoint's position: far beyond any run (the paper's took 90 epochs of 10,000
# steps), so that an edited field cannot claim 10^30 epochs.
MAX_EPOCHS, MAX_STEPS = 10 ** 6, 10 ** 12


def whole(value, lo: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lo


def check_zip(path: Path) -> None:
    """torch.save writes a zip of stored (uncompressed) members, and torch.load reads a
    compressed one too, allocating its uncompressed size: 200 MB from a 200 KB file. Refuse a
    file that is not such a zip before torch reads any of it."""
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is truncated or not a twocol checkpoint (not the zip file torch.save "
                              f"writes: {show(str(e) or type(e).__name__, 100)})") from None
    for m in members:
        if m.compress_type != zipfile.ZIP_STORED or m.file_size != m.compress_size:
            raise CheckpointError(f"{path} is not a twocol checkpoint: its member {show(m.filename, 60)} is "
                                  f"compressed ({m.compress_size:,} bytes that expand to {m.file_size:,}); torch.save compresses none")


def check_position(ckpt: dict, path: Path, world_size: int, rank: int, batches: int | None):
    """(epoch, batch, step, this rank's RNG states or None) of a checkpoint to resume on
    `world_size` processes, each field checked; `batches`: the batches per epoch of the run (a
    mid-epoch position must lie within it)."""
    def bad(field: str, what: str):
        raise CheckpointError(f"{path}: {field} {what}")

    for field in ("optimizer", "schedule", "epoch", "batch", "step"):
        if field not in ckpt:
            bad(field, "is missing (not a checkpoint that `twocol train` can resume)")
    epoch, batch, step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
    if not whole(epoch) or epoch > MAX_EPOCHS:
        bad("epoch", f"must be a whole number in 0..{MAX_EPOCHS:,}, got {show(epoch)}")
    if not whole(batch) or (batches is not None and batch > batches):
        bad("batch", f"must be a whole number in 0..{batches if batches is not None else 'batches per epoch'}"
                     f" (the position in the epoch), got {show(batch)}")
    if not whole(step, batch) or step > MAX_STEPS:
        bad("step", f"must be a whole number in {batch} (batch)..{MAX_STEPS:,}, got {show(step)}")
    saved_world = ckpt.get("world_size", 1)
    if not whole(saved_world, 1):
        bad("world_size", f"must be a whole number >= 1, got {show(saved_world)}")
    if saved_world != world_size and batch != 0:
        raise CheckpointError(f"{path} was written mid-epoch by {saved_world} process(es); it can only "
                              f"resume on {saved_world}, not {world_size} (epoch-end checkpoints resume on any number)")
    if not isinstance(ckpt.get("metrics", {}), dict):
        bad("metrics", f"must be a mapping, got {show(ckpt['metrics'])}")
    rng = None
    if saved_world == world_size:
        per_rank = ckpt.get("rng_per_rank")
        if not isinstance(per_rank, list) or len(per_rank) != saved_world:
            bad("rng_per_rank", f"must list {saved_world} RNG state(s), got {show(per_rank)}")
        rng = per_rank[rank]
        problem = rng_problem(rng)
        if problem:
            raise CheckpointError(f"{path}: rng_per_rank[{rank}]{problem}")
    return epoch, batch, step, rng


def check_schedule(sched, path: Path) -> None:
    if not (isinstance(sched, dict) and all(whole(sched.get(k)) for k in ("drops", "stale"))
            and all(isinstance(sched.get(k), (int, float)) and not isinstance(sched.get(k), bool)
                    for k in ("best", "base_lr")) and sched["base_lr"] > 0):
        raise CheckpointError(f"{path}: schedule must hold drops, stale (whole numbers), best and base_lr (numbers), "
                              f"got {show(sched)}")


def check_optimizer_state(saved, optimizer, net, path: Path) -> None:
    """The optimiser's saved state must have this optimiser's groups and, for every parameter,
    a velocity of that parameter's shape (torch would load a wrong one and fail at a later step)."""
    def bad(field: str, what: str):
        raise CheckpointError(f"{path}: {field} {what}")

    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict) \
            or not isinstance(saved.get("param_groups"), list):
        bad("optimizer", "must hold 'state' and 'param_groups'")
    groups = saved["param_groups"]
    if len(groups) != len(optimizer.param_groups):
        bad("optimizer.param_groups", f"has {len(groups)} group(s), this optimiser {len(optimizer.param_groups)}")
    names = {id(p): n for n, p in net.named_parameters()}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, (g, mine) in enumerate(zip(groups, optimizer.param_groups)):
        if not isinstance(g, dict) or not isinstance(g.get("params"), list) or len(g["params"]) != len(mine["params"]):
            bad(f"optimizer.param_groups[{i}]", f"must list {len(mine['params'])} parameters")
        for k in ("lr", "momentum", "weight_decay", "lr_mult"):
            v = g.get(k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                bad(f"optimizer.param_groups[{i}].{k}", f"must be a finite number, got {show(v)}")
    for key, entry in saved["state"].items():
        if not whole(key) or key >= len(params):
            bad("optimizer.state", f"names parameter {show(key)}, this net has {len(params)}")
        p = params[key]
        v = entry.get("velocity") if isinstance(entry, dict) else None
        if not isinstance(v, torch.Tensor) or v.shape != p.shape or not v.is_floating_point():
            got = f"shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else show(v)
            bad(f"optimizer.state[{key}].velocity", f"(of {names[id(p)]}) must be a float tensor of shape "
                                                    f"{tuple(p.shape)}, got {got}")


def check_weights(net: torch.nn.Module, ckpt: dict, path: str | Path) -> None:
    """Refuse (with the key named) a missing, extra, misshapen or non-finite weight."""
    own, saved = net.state_dict(), ckpt["model"]
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: model must be a mapping of weights, got {show(saved)}")
    missing = [k for k in own if k not in saved]
    if missing:
        raise CheckpointError(f"{path} does not fit this net: model.{missing[0]} is missing"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = [k for k in saved if k not in own]
    if extra:
        raise CheckpointError(f"{path} does not fit this net: model.{show(extra[0])} is not a weight of it")
    for k, mine in own.items():
        v = saved[k]
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise CheckpointError(f"{path}: model.{k} must be a float tensor, got {show(v)}")
        if v.shape != mine.shape:
            raise CheckpointError(f"{path} does not fit this net: model.{k} has shape {tuple(v.shape)}, "
                                  f"this net's is {tuple(mine.shape)}")
        if not torch.isfinite(v).all():
            raise CheckpointError(f"{path}: model.{k} holds non-finite values")


def stored_config(ckpt: dict) -> dict:
    """The config a checkpoint was trained with, as a mapping, read as the net it was: one written
    before model.dropout_convention existed was trained with torch.nn.Dropout, so it reads as
    "inverted" (not today's default); one written before model.conv_link existed with conv3 in
    model.layers_off had no conv link (the link went with conv3), so it reads as "none"."""
    stored = ckpt["config"]
    model = dict(stored.get("model", {}))
    if "dropout_convention" not in model:
        model["dropout_convention"] = "inverted"
    if "conv_link" not in model and isinstance(model.get("layers_off"), list) and "conv3" in model["layers_off"]:
        model["conv_link"] = "none"
    return {**stored, "model": model} if model != stored.get("model", {}) else stored


def stored_cfg(ckpt: dict, path: str | Path) -> Config:
    """The config a checkpoint was trained with (`stored_config`), checked as any config is."""
    try:
        return config_from_dict(stored_config(ckpt), source=f"config stored in {path}")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def eval_dropout_scale(cfg: Config) -> float:
    """What evaluation multiplies fc6's and fc7's outputs by: 1 - dropout under the paper's
    convention, 1 under the inverted one."""
    m = cfg.model
    return 1.0 - m.dropout if m.dropout_convention == "paper" else 1.0


def check_same_architecture(ckpt: dict, cfg: Config, path: str | Path, source: str = "config") -> None:
    """Refuse a checkpoint whose net differs from the config's (by any model setting); `source`
    names where `cfg` comes from: a config file, or an override of the checkpoint's own."""
    # Read through the config classes, so a key added since the checkpoint was written compares
    # as its default (or, for the dropout convention, as what such a checkpoint was trained with).
    trained_cfg = stored_cfg(ckpt, path)
    stored = trained_cfg.to_dict()["model"]
    wanted = cfg.to_dict()["model"]

    def diff(a, b, prefix=""):
        for k in sorted(set(a) | set(b)):
            va, vb = a.get(k), b.get(k)
            if isinstance(va, dict) and isinstance(vb, dict):
                yield from diff(va, vb, f"{prefix}{k}.")
            elif va != vb:
                yield f"{prefix}{k}: checkpoint {show(va)}, {source} {show(vb)}"

    diffs = list(diff(stored, wanted))
    # Dropout changes no weight, so a net may go on training at another rate; but what the
    # trained weights expect at test must stay what they were trained for.
    diffs = [d for d in diffs if not d.startswith("dropout")]
    trained, asked = eval_dropout_scale(trained_cfg), eval_dropout_scale(cfg)
    if trained != asked:
        m = cfg.model
        diffs.append(f"dropout: the checkpoint's net multiplies fc6 and fc7 by {trained:g} at test (model.dropout "
                     f"{stored['dropout']:g}, {stored['dropout_convention']}), the {source}'s by {asked:g} "
                     f"({m.dropout:g}, {m.dropout_convention}); "
                     + ("override model.dropout and model.dropout_convention to match" if source == "config"
                        else "keep model.dropout and model.dropout_convention as trained"))
    if diffs:
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        if source == "config":
            raise CheckpointError(f"{path} holds another architecture: model.{diffs[0]}{more}")
        raise CheckpointError(f"{path}: an override would change the net it holds, which is kept as trained: "
                              f"model.{diffs[0]}{more}")


def recorded_classes(ckpt: dict, path: str | Path) -> list[str] | None:
    """The class names a checkpoint was trained on; None for a checkpoint older than them."""
    classes = ckpt.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{path}: classes must be a list of class names, got {show(classes)}")
    return classes


def check_same_classes(ckpt: dict, path: str | Path, classes: list[str], root: str | Path) -> None:
    """Refuse a dataset (at `root`, with `classes`) whose class names or order differ from
    those the checkpoint was trained on: its labels would mean other classes."""
    theirs = recorded_classes(ckpt, path)
    if theirs is None or list(classes) == theirs:
        return
    i = next(k for k in range(max(len(theirs), len(classes)))
             if k >= len(theirs) or k >= len(classes) or theirs[k] != classes[k])

    def name(names):
        return show(names[i], 60) if i < len(names) else "missing"

    raise CheckpointError(f"{path} was trained on other classes than {root}: class {i} is {name(theirs)} in the "
                          f"checkpoint, {name(classes)} in the dataset ({len(theirs)} and {len(classes)} classes)")


def resumed_origin(ckpt: dict, path: str | Path, data: str | None, gpus: str | None) -> tuple[str | None, str | None]:
    """(--data, --gpus) for a run resumed (or a net evaluated) from `ckpt`: those given now, else
    the ones its run was started with. A recorded dataset that is gone is a CheckpointError
    naming it."""
    origin = ckpt.get("origin", {})
    if not (isinstance(origin, dict) and all(isinstance(origin.get(k), (str, type(None))) for k in ("data", "gpus"))):
        raise CheckpointError(f"{path}: origin must hold data and gpus (each a string or null), got {show(origin)}")
    if data is None and origin.get("data") is not None:
        data = origin["data"]
        if not Path(data).is_dir():
            raise CheckpointError(f"{path} was trained on the dataset {data}, which is not there any more (moved "
                                  f"or deleted?); give its place with --data")
    return data, gpus if gpus is not None else origin.get("gpus")
