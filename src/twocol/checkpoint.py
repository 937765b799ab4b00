"""Checkpoints: what a run's state is, how it is written (atomically) and read back (with
torch.load(weights_only=True)), and how it is checked against the net it is loaded into.

A checkpoint is a dict of tensors and plain values only (no pickled objects):
  format, model, optimizer, schedule, epoch, batch (position in the epoch), step, rng (rank 0's
  generators), rng_per_rank, world_size (processes under torchrun), config (the resolved
  config), metrics (the last epoch's row of metrics.jsonl), classes (the dataset's class names,
  label order), origin (the run's --data, resolved, and --gpus; None for their defaults).
Checkpoints written before classes and origin existed lack them: nothing is checked or reused.

Every field is checked before it is used (`restore`, `load_model_state`): a file that is not
what this code wrote, or was edited, is a CheckpointError naming the field, never a traceback.
"""
from __future__ import annotations

import contextlib
import math
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import atomic_write, remove_stale_temps
from .config import Config, config_from_dict
from .typed_yaml import check_bounded, show
from .distributed import World, barrier, gather_objects
from .errors import CheckpointError, ConfigError
from .interrupt import shielded
from .lock import DirLock
from .model import build_model
from .rng import rng_problem, rng_states, seed_everything, set_rng_states

FORMAT = 1
# Bounds of a checkpoint's position: far beyond any run (the paper's took 90 epochs of 10,000
# steps), so that an edited field cannot claim 10^30 epochs.
MAX_EPOCHS, MAX_STEPS = 10 ** 6, 10 ** 12


@dataclass
class RunState:
    """Where a run stands."""
    epoch: int = 0  # completed epochs
    batch: int = 0  # batches done in the current epoch
    step: int = 0   # optimizer steps over the whole run


@contextlib.contextmanager
def claim_run_dir(run_dir: Path, resume: Path | None, world: World):
    """Hold `run_dir` for this run (rank 0 does, under torchrun): another process asking for it
    gets a LockError naming our pid. Temporary files of a save that was killed are removed; a
    new run (no `resume`) refuses a directory that holds a checkpoint, and so does a resumed
    one, unless that checkpoint is the one it resumes; a run resumed into another directory
    also refuses one that holds a metrics.jsonl (the log of a run that wrote no checkpoint)."""
    if not world.is_main:
        yield
        return
    with DirLock(run_dir, "run directory"):
        remove_stale_temps(run_dir)
        ckpt = run_dir / "checkpoint.pt"
        if resume is None and ckpt.exists():
            raise CheckpointError(f"{run_dir} holds the checkpoint of an earlier run: continue it with "
                                  f"--resume {ckpt}, or give another --run-dir")
        if resume is not None and ckpt.exists() and not same_file(ckpt, resume):
            raise CheckpointError(f"{run_dir} holds the checkpoint of another run, which continuing {resume} there "
                                  f"would replace; give another --run-dir")
        log = run_dir / "metrics.jsonl"
        if resume is not None and not ckpt.exists() and log.exists() and not same_file(run_dir, resume.parent):
            raise CheckpointError(f"{run_dir} holds {log.name} (of another run, without a checkpoint), which continuing "
                                  f"{resume} there would replace; give another --run-dir")
        yield


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class _Recorded:
    """A file whose write errors are kept: torch.save turns an OSError of the file it writes
    (disk full) into a RuntimeError that has lost the reason ('unexpected pos ...')."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Written atomically: a crash at any moment leaves the old checkpoint or the new one. A
    failed write (disk full, read-only folder, an error of the file system) is a
    CheckpointError naming the path and the OS's reason; the previous checkpoint is then
    untouched."""
    path = Path(path)
    out = None

    def write(f):
        nonlocal out
        out = _Recorded(f)
        torch.save({"format": FORMAT, **state}, out)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with shielded():  # a second Ctrl-C waits for the save to end
            atomic_write(path, write)
    except (OSError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and (out is None or out.error is None):
            raise  # not a failed write: a bug, shown as one
        e = out.error if isinstance(e, RuntimeError) else e
        kept = "the previous checkpoint is unchanged" if path.exists() else "no checkpoint was written"
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}; {kept}") from None


def checkpoint_state(net, optimizer, schedule, state: RunState, cfg: Config, metrics: dict,
                     world: World, about: dict | None = None) -> dict:
    """The whole state of a run. Collective under torchrun (every rank's RNG states are
    gathered), so every rank calls it; `save` then writes it from rank 0. `about`: the run's
    classes and origin."""
    rng = gather_objects(rng_states(), world)
    return {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "epoch": state.epoch, "batch": state.batch,
            "step": state.step, "rng": rng[0], "rng_per_rank": rng, "world_size": world.size,
            "config": cfg.to_dict(), "metrics": metrics, **(about or {})}


def save(path: Path, state: dict, world: World) -> None:
    if world.is_main:
        save_checkpoint(path, state)
    barrier(world)


def _whole(value, lo: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lo


def restore(ckpt: dict, path: Path, net, optimizer, schedule, cfg: Config, world: World,
            batches: int | None = None) -> RunState:
    """Load a checkpoint into a freshly built run; returns where the run stands. `batches`:
    the batches per epoch of this run (a mid-epoch position must lie within it)."""
    check_same_architecture(ckpt, cfg, path)

    def bad(field: str, what: str):
        raise CheckpointError(f"{path}: {field} {what}")

    for field in ("optimizer", "schedule", "epoch", "batch", "step"):
        if field not in ckpt:
            bad(field, "is missing (not a checkpoint that `twocol train` can resume)")
    epoch, batch, step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
    if not _whole(epoch) or epoch > MAX_EPOCHS:
        bad("epoch", f"must be a whole number in 0..{MAX_EPOCHS:,}, got {show(epoch)}")
    if not _whole(batch) or (batches is not None and batch > batches):
        bad("batch", f"must be a whole number in 0..{batches if batches is not None else 'batches per epoch'}"
                     f" (the position in the epoch), got {show(batch)}")
    if not _whole(step, batch) or step > MAX_STEPS:
        bad("step", f"must be a whole number in {batch} (batch)..{MAX_STEPS:,}, got {show(step)}")
    saved_world = ckpt.get("world_size", 1)
    if not _whole(saved_world, 1):
        bad("world_size", f"must be a whole number >= 1, got {show(saved_world)}")
    if saved_world != world.size and batch != 0:
        raise CheckpointError(f"{path} was written mid-epoch by {saved_world} process(es); it can only "
                              f"resume on {saved_world}, not {world.size} (epoch-end checkpoints resume on any number)")
    if not isinstance(ckpt.get("metrics", {}), dict):
        bad("metrics", f"must be a mapping, got {show(ckpt['metrics'])}")
    rng = None
    if saved_world == world.size:
        per_rank = ckpt.get("rng_per_rank")
        if not isinstance(per_rank, list) or len(per_rank) != saved_world:
            bad("rng_per_rank", f"must list {saved_world} RNG state(s), got {show(per_rank)}")
        rng = per_rank[world.rank]
        problem = rng_problem(rng)
        if problem:
            raise CheckpointError(f"{path}: rng_per_rank[{world.rank}]{problem}")
    load_model_state(net, ckpt, path)
    check_optimizer_state(ckpt["optimizer"], optimizer, net, path)
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        bad("optimizer", f"does not fit this net's optimiser ({show(str(e), 120)})")
    sched = ckpt["schedule"]
    if not (isinstance(sched, dict) and all(_whole(sched.get(k)) for k in ("drops", "stale"))
            and all(isinstance(sched.get(k), (int, float)) and not isinstance(sched.get(k), bool)
                    for k in ("best", "base_lr")) and sched["base_lr"] > 0):
        bad("schedule", f"must hold drops, stale (whole numbers), best and base_lr (numbers), got {show(sched)}")
    schedule.load_state_dict(sched)
    if rng is not None:
        set_rng_states(rng)
    else:  # other shards now: give each rank a fresh stream derived from the run's position
        seed_everything(cfg.train.seed + 1000 * step + world.rank)
    return RunState(epoch=epoch, batch=batch, step=step)


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
        if not _whole(key) or key >= len(params):
            bad("optimizer.state", f"names parameter {show(key)}, this net has {len(params)}")
        p = params[key]
        v = entry.get("velocity") if isinstance(entry, dict) else None
        if not isinstance(v, torch.Tensor) or v.shape != p.shape or not v.is_floating_point():
            got = f"shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else show(v)
            bad(f"optimizer.state[{key}].velocity", f"(of {names[id(p)]}) must be a float tensor of shape "
                                                    f"{tuple(p.shape)}, got {got}")


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


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    check_zip(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as e:
        if isinstance(e, pickle.UnpicklingError) and "weights only load failed" in str(e).lower():
            # torch's own message, a paragraph on how to load it anyway, would tell how to run its code
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            what = found.group(1) if found else "code to rebuild its objects"
            raise CheckpointError(f"{path} is not a twocol checkpoint: loading it would call {what}, which twocol "
                                  "never runs (a checkpoint holds only tensors and plain values)") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if len(first) > 160:  # cut between words
            first = first[:160].rsplit(" ", 1)[0] + " ..."
        raise CheckpointError(f"{path} is truncated or not a twocol checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path} is not a twocol checkpoint (format {FORMAT})")
    # Shared references let a small file stand for a huge tree of values: the fields that are
    # walked whole (compared, printed, written back as JSON) are bounded first; the others are
    # only ever read at known places.
    try:
        check_bounded(ckpt["config"], f"config stored in {path}")
        check_bounded(ckpt.get("metrics", {}), f"metrics stored in {path}")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(ckpt["config"], dict) or not isinstance(ckpt["config"].get("model", {}), dict):
        raise CheckpointError(f"{path}: config must be a mapping with a 'model' mapping")
    return ckpt


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


def checkpoint_config(ckpt: dict, path: str | Path, overrides: list[str] = ()) -> Config:
    """The config a checkpoint was trained with, and `overrides` of it (`train --resume` and
    `eval` without --config): each is checked as any override is, and one that would change the
    net (a model setting, or the dropout scale at test) is refused, naming the key."""
    source = f"config stored in {path}"
    try:
        cfg = config_from_dict(stored_config(ckpt), source)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    if overrides:
        cfg = config_from_dict(stored_config(ckpt), source, overrides)
        check_same_architecture(ckpt, cfg, path, source="override")
    return cfg


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
    stored_cfg = checkpoint_config(ckpt, path)
    stored = stored_cfg.to_dict()["model"]
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
    trained, asked = eval_dropout_scale(stored_cfg), eval_dropout_scale(cfg)
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


def load_model_state(net: torch.nn.Module, ckpt: dict, path: str | Path) -> None:
    """Load the weights, refusing (with the key named) a missing, extra, misshapen or
    non-finite one."""
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
    net.load_state_dict(saved)


def load_net(path: str | Path, placement, cfg: Config | None = None, overrides: list[str] = ()):
    """Build the net a checkpoint holds on `placement` and load its weights. With `cfg`, the
    checkpoint must have the same architecture; without, its own config is used, with
    `overrides` (`checkpoint_config`)."""
    ckpt = load_checkpoint(path)
    if cfg is None:
        cfg = checkpoint_config(ckpt, path, overrides)
    else:
        check_same_architecture(ckpt, cfg, path)
    net = build_model(cfg, placement)
    load_model_state(net, ckpt, path)
    return net, cfg, ckpt
