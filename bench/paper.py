"""The paper's comparisons, rerun as a protocol file says: the two-column net against the
one-GPU comparison net (the 1.7% top-1 / 1.2% top-5 claim), the average of several two-column
nets (the ensemble claim), the ablations of twocol/ablations.py and the dropout claim, every
net trained with the same recipe and seeds and tested with the 10-patch test.

    python -m bench.paper                        # bench/protocols/cpu.yaml: the CPU scale model
    python -m bench.paper --seeds 2              # a quick look: the same protocol, fewer seeds
    python -m bench.paper --plan                 # the trainings it would run, and nothing else
    python -m bench.paper --protocol imagenet --data DST --gpus 0,1

Trainings run in parallel, one process each (--jobs; by default as many as the CPUs this
process may use allow at the protocol's threads per training, one at a time on a GPU). Each
finished training's result is written beside its run (runs/bench/<protocol>-v<version>/) at
once, and the results file (bench/results/<date>-paper-<protocol>-v<version>.json) and the report
(bench/results/latest.md) are rewritten as trainings and comparisons complete, the headline
first. Stopped (Ctrl-C, SIGTERM), the same command continues where it stopped: finished
trainings are reused, interrupted ones continue bit for bit from their checkpoints.
"""
from __future__ import annotations

import argparse
import datetime
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench import comparisons
from bench.protocol import DATA_ARGUMENT, DEFAULT, Protocol, file_hash, load_protocol, resolve
from bench.env import environment
from bench.record import Record, read
from bench.report import write_report
from bench.parallel import Stop, run
from bench.training import PREDICTIONS, Training, finished
from twocol.ablations import ABLATIONS, ablation_overrides
from twocol.config import load_config
from twocol.data.layout import open_dataset
from twocol.data.synth import GENERATOR, synthesize
from twocol.devices import Placement
from twocol.errors import ConfigError, TwocolError, one_line
from twocol.monitor import duration
from twocol.threads import available_cpus

ROOT = Path(__file__).resolve().parent.parent


def trainings(p: Protocol, seeds: list[int]) -> dict[str, list[Training]]:
    """Every training the protocol's comparisons need, by comparison, headline first. A net
    several comparisons share (the two-column net on the main set) is listed once, under the
    first."""
    c = p.comparisons
    twocol, onecol = p.nets["twocol"], p.nets.get("onecol")
    base_ov = (*p.common, *twocol.overrides)
    base_cfg = load_config(twocol.config, list(base_ov))
    out: dict[str, list[Training]] = {}

    def net(tag, data, config, overrides, keep=False, upto=None):
        return [Training(tag, data, config, tuple(overrides), s, keep) for s in seeds if upto is None or s < upto]

    if c.two_vs_one is not None:
        out["two_vs_one"] = (net("twocol", c.two_vs_one.data, twocol.config, base_ov, keep=c.ensemble is not None)
                             + net("onecol", c.two_vs_one.data, onecol.config, (*p.common, *onecol.overrides)))
    if c.ablations is not None:
        n = c.ablations.seeds
        # The baseline: the headline's two-column net where it is that net on the same data; else
        # a tag of its own (a run directory is named by tag and seed).
        runs = [] if c.two_vs_one is not None and c.two_vs_one.data == c.ablations.data else \
            net("ablations_twocol", c.ablations.data, twocol.config, base_ov, upto=n)
        for name in c.ablations.names:
            extra = ABLATIONS[name].baseline(base_cfg)
            if extra:  # the config lacks what the ablation removes: its baseline has it
                runs += net(f"{name}_baseline", c.ablations.data, twocol.config, (*base_ov, *extra), upto=n)
            cfg = load_config(twocol.config, [*base_ov, *extra])
            runs += net(name, c.ablations.data, twocol.config, (*base_ov, *extra, *ablation_overrides(cfg, [name])),
                        upto=n)
        out["ablations"] = runs
    if c.dropout is not None:
        extra = ABLATIONS["dropout_off"].baseline(base_cfg)  # the paper's dropout, where the net lacks it
        cfg = load_config(twocol.config, [*base_ov, *extra])
        n = c.dropout.seeds
        # With dropout: the two-column net of the headline where it is that net on the same data.
        same = not extra and c.two_vs_one is not None and c.two_vs_one.data == c.dropout.data
        out["dropout"] = ([] if same else net("dropout_on", c.dropout.data, twocol.config, (*base_ov, *extra), upto=n)) \
            + net("dropout_off", c.dropout.data, twocol.config,
                  (*base_ov, *extra, *ablation_overrides(cfg, ["dropout_off"])), upto=n)
    # Interleave by seed, so that a comparison's seeds finish together.
    return {k: sorted(v, key=lambda t: t.seed) for k, v in out.items()}


def data_dirs(p: Protocol, data_arg: str | None, data_dir: Path) -> dict[str, Path]:
    """Each data set's folder: a synthetic set made (or finished) under data_dir, named by what
    it holds; a prepared set's path, DATA standing for --data."""
    out = {}
    for key, d in p.data.items():
        if d.prepared is not None:
            if d.prepared == DATA_ARGUMENT and data_arg is None:
                raise ConfigError(f"protocol {p.name}: data set {key} is the --data argument: give --data DIR")
            out[key] = Path(data_arg if d.prepared == DATA_ARGUMENT else d.prepared)
        else:
            s = d.synthetic
            root = data_dir / (f"synthetic-v{GENERATOR}-{s.classes}x{s.per_class}+{s.val_per_class}-"
                               f"{s.image_size}px-seed{s.seed}")
            out[key] = synthesize(root, s.classes, s.per_class, seed=s.seed, image_size=s.image_size,
                                  val_per_class=s.val_per_class)
    return out


def results_path(out_dir: Path, p: Protocol, seeds: int) -> Path:
    """The protocol version's results file: the one an earlier sitting started, else today's."""
    tail = f"-paper-{p.name}-v{p.version}" + ("" if seeds == p.seeds else f"-seeds{seeds}") + ".json"
    earlier = sorted(out_dir.glob(f"????-??-??{tail}"))
    return earlier[0] if earlier else out_dir / f"{datetime.date.today().isoformat()}{tail}"


def summarize(p: Protocol, plan: dict[str, list[Training]], done: dict[str, dict], runs: Path,
              classes: dict[str, int]) -> tuple[dict, list[str]]:
    """The comparisons whose trainings have all finished, and the names of those still open."""
    by_tag: dict[str, list[dict]] = {}
    for t in (t for ts in plan.values() for t in ts):
        if t.name in done:
            by_tag.setdefault(t.tag, []).append(done[t.name])
    complete = {k: all(t.name in done for t in ts) for k, ts in plan.items()}
    c, out = p.comparisons, {}
    if c.two_vs_one is not None and complete["two_vs_one"]:
        out["two_vs_one"] = comparisons.two_vs_one(by_tag["twocol"], by_tag["onecol"], c.two_vs_one.half_width)
        if c.ensemble is not None:
            preds = {}
            for r in by_tag["twocol"]:
                with np.load(runs / f"twocol-seed{r['seed']}" / PREDICTIONS) as f:
                    preds[r["seed"]] = (f["probs"], f["labels"])
            if len(preds) >= c.ensemble.size:
                out["ensemble"] = comparisons.ensemble(by_tag["twocol"], preds, c.ensemble.size)
    if c.ablations is not None and complete["ablations"] and (c.two_vs_one is None or complete["two_vs_one"]):
        out["ablations"] = {}
        for name in c.ablations.names:
            mine = by_tag[name]
            seeds = {r["seed"] for r in mine}
            tag = next(t for t in (f"{name}_baseline", "ablations_twocol", "twocol") if t in by_tag)
            base = [r for r in by_tag[tag] if r["seed"] in seeds]
            out["ablations"][name] = comparisons.ablation(base, mine, ABLATIONS[name], list(mine[0]["overrides"]),
                                                          c.ablations.half_width, classes[c.ablations.data])
            out["ablations"][name]["baseline"] = tag
    if c.dropout is not None and complete["dropout"] and (c.two_vs_one is None or complete["two_vs_one"]):
        off = by_tag["dropout_off"]
        seeds = {r["seed"] for r in off}
        on = [r for r in by_tag.get("dropout_on") or by_tag["twocol"] if r["seed"] in seeds]
        out["dropout"] = comparisons.dropout(on, off, p.convergence_margin, c.dropout.half_width)
    named = [k for k in ("two_vs_one", "ensemble", "ablations", "dropout") if getattr(c, k) is not None]
    return out, [k for k in named if k not in out]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default=str(DEFAULT.relative_to(ROOT)),
                    help="a protocol file, or a name under bench/protocols/ (default: %(default)s)")
    ap.add_argument("--data", help="the prepared dataset a protocol's DATA set stands for")
    ap.add_argument("--gpus", default=None, help="placement of every net: cpu, 0 or 0,1 (default: this machine's)")
    ap.add_argument("--seeds", type=int, default=None,
                    help="seeds 0..N-1 only (default: the protocol's): a quick look, in a results file of its own")
    ap.add_argument("--jobs", type=int, default=None,
                    help="trainings at once (default: the CPUs this process may use over the protocol's threads "
                         "per training; 1 on a GPU)")
    ap.add_argument("--plan", action="store_true", help="list the trainings and where they would run; run nothing")
    ap.add_argument("--runs", type=Path, default=None,
                    help="run directories, kept for the next sitting (default: runs/bench/<protocol>-v<version>)")
    ap.add_argument("--data-dir", type=Path, default=Path("data"), help="where synthetic sets are made")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results", help="where results are written")
    ap.add_argument("--no-report", action="store_true", help="do not rewrite the report (latest.md) as results come")
    a = ap.parse_args(argv)
    path = resolve(a.protocol)
    p = load_protocol(path)
    nseeds = p.seeds if a.seeds is None else a.seeds
    if not 1 <= nseeds <= p.seeds:
        ap.error(f"--seeds must be in 1..{p.seeds} (the protocol's)")
    if c := p.comparisons.ensemble:
        if nseeds < c.size:
            print(f"bench: the ensemble of {c.size} needs {c.size} seeds; with {nseeds} it is left out", flush=True)
    placement = Placement.parse(a.gpus)
    cpus = available_cpus()[0]
    jobs = a.jobs if a.jobs is not None else (max(1, cpus // p.threads) if placement.a.type == "cpu" else 1)
    if jobs < 1:
        ap.error("--jobs must be at least 1")
    threads = p.threads if placement.a.type == "cpu" else None
    plan = trainings(p, list(range(nseeds)))
    todo = list(dict.fromkeys(t for ts in plan.values() for t in ts))
    runs = a.runs or Path("runs") / "bench" / f"{p.name}-v{p.version}"
    configs = sorted({t.config for t in todo})
    stamp = {"protocol": p.name, "version": p.version, "protocol_sha256": file_hash(path),
             "configs_sha256": {c: file_hash(c) for c in configs}}
    if a.plan:
        for k, ts in plan.items():
            print(f"{k}: {len(ts)} trainings")
            for t in ts:
                print(f"  {t.name:<28} data {t.data:<6} {t.config} {' '.join(t.overrides)}")
        print(f"{len(todo)} trainings, {jobs} at a time, run directories under {runs}")
        return 0
    _refuse_changed_protocol(runs, stamp, path)
    dirs = data_dirs(p, a.data, a.data_dir)
    # Each set opened here, once: a missing or unprepared one is one line now, not in a worker.
    metas = {k: open_dataset(d).meta for k, d in dirs.items()}
    done = {t.name: r for t in todo if (r := finished(runs / t.name, stamp)) is not None}
    out = results_path(a.out_dir, p, nseeds)
    earlier = _read(out)
    env = environment()
    sitting = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "commit": env["commit"],
               "wall_s": 0.0, "trainings": 0, "reused": len(done), "load_average": [os.getloadavg()[0], None]}
    record = Record(out, "paper", protocol={"file": str(path.relative_to(ROOT) if path.is_absolute() and
                                                        path.is_relative_to(ROOT) else path),
                                            "name": p.name, "version": p.version, "seeds": nseeds,
                                            "quick_look": nseeds < p.seeds, **stamp},
                    about=p.about, scale=p.scale, common=list(p.common),
                    nets={tag: load_config(n.config, [*p.common, *n.overrides]).to_dict() for tag, n in p.nets.items()},
                    dropout_data=p.comparisons.dropout.data if p.comparisons.dropout else None,
                    placement=str(placement), jobs=jobs, threads=threads,
                    data={k: {"path": str(d), **{f: metas[k].get(f) for f in ("classes", "train", "val", "image_size")},
                              "params": metas[k].get("params", {})} for k, d in dirs.items()},
                    sittings=(earlier or {}).get("sittings", []) + [sitting], trainings={"total": len(todo)},
                    planned=[k for k in ("two_vs_one", "ensemble", "ablations", "dropout")
                             if getattr(p.comparisons, k) is not None], env=env)
    classes = {k: m["classes"] for k, m in metas.items()}
    start = time.perf_counter()

    def publish() -> None:
        comps, open_ = summarize(p, plan, done, runs, classes)
        sitting["wall_s"] = time.perf_counter() - start
        sitting["load_average"][1] = os.getloadavg()[0]
        by_tag: dict[str, list[dict]] = {}
        for t in todo:
            if t.name in done:
                by_tag.setdefault(t.tag, []).append({k: v for k, v in done[t.name].items()
                                                     if k not in ("config_values", "stamp")})
        newly = [k for k in comps if k not in record.data.get("comparisons", {})]
        record.update(comparisons=comps, not_reached=open_, runs=by_tag,
                      trainings={"total": len(todo), "done": len(done)},
                      wall_s=sum(s["wall_s"] for s in record["sittings"]),
                      run_s=sum(r["train_s"] + r["test_s"] for r in done.values()))
        if newly and not a.no_report:
            write_report(a.out_dir)

    def on_result(t: Training, result: dict, seconds: float) -> None:
        done[t.name] = result
        sitting["trainings"] += 1
        left = len(todo) - len(done)
        eta = f", about {duration(time_left(list(done.values()), left, jobs))} left" if left else ""
        print(f"bench: {len(done)}/{len(todo)} trainings done{eta} ({duration(time.perf_counter() - start)} in "
              f"this sitting); {t.name}: 10-patch top-1 {result['top1']:.2f}% top-5 {result['top5']:.2f}%, "
              f"{result['epochs']} epochs ({result['ended']}), {duration(seconds)}", flush=True)
        publish()

    print(f"bench: protocol {p.name} v{p.version} ({path}), seeds 0..{nseeds - 1}, {len(todo)} trainings "
          f"({len(done)} finished in an earlier sitting), {jobs} at a time on {placement}"
          + (f" with {threads} thread(s) each" if threads else "") + f"; results {out}", flush=True)
    publish()
    with Stop() as stop:
        try:
            run([t for t in todo if t.name not in done], jobs, threads, a.gpus, runs, dirs, stamp, on_result, stop)
        finally:
            publish()
    if stop.signal is not None:
        print(f"bench: stopped by {signal.Signals(stop.signal).name} with {len(done)}/{len(todo)} trainings done; "
              "the same command continues", file=sys.stderr, flush=True)
        return 128 + stop.signal
    if not a.no_report:
        write_report(a.out_dir)
    print(f"bench: all {len(todo)} trainings done; {duration(record['wall_s'])} over "
          f"{len(record['sittings'])} sitting(s); wrote {out}", flush=True)
    return 0


def time_left(done: list[dict], left: int, jobs: int) -> float:
    """Seconds the `left` trainings should take, `jobs` at a time, from what a finished training
    cost over every sitting it took (a training resumed in this sitting costs only its rest here,
    and would make the time left look short)."""
    return statistics.mean(r["train_s"] + r["test_s"] for r in done) * left / jobs


def _read(path: Path) -> dict | None:
    try:
        return read(path) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _refuse_changed_protocol(runs: Path, stamp: dict, path: Path) -> None:
    """A protocol version's trainings all come from one file: refuse to mix in another."""
    for result_file in sorted(runs.glob("*/result.json"))[:1000]:
        other = _read(result_file)
        s = (other or {}).get("stamp")
        if isinstance(s, dict) and s != stamp:
            what = "the protocol file" if s.get("protocol_sha256") != stamp["protocol_sha256"] else "a config it names"
            raise ConfigError(f"{runs} holds trainings of {s.get('protocol')} v{s.get('version')} made before "
                              f"{what} changed ({path}): a protocol changed after its results were made is a new "
                              "version (raise its `version`), or move the old run directories away")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TwocolError as e:  # bad input, as the twocol CLI reports it: one line, no traceback
        print(f"bench/paper.py: {one_line(str(e))}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("bench/paper.py: stopped at once (second signal); the same command continues", file=sys.stderr)
        sys.exit(130)
