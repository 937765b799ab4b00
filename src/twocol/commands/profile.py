"""`twocol profile`: a timeline of the two columns over a few training steps, and the
two-device cost model fed with it."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..atomic import atomic_write
from ..costmodel import PRESETS
from ..devices import Placement
from ..errors import TwocolError
from ..profile import analyse, profile_training
from ..timeline import layer_table
from ..viz.timeline import plot_profile
from .common import add_config_arguments, add_gpus_argument, config_of

HELP = "profile training steps: a trace, a chart of the two columns per step, a two-device cost model"


def add_arguments(p) -> None:
    add_config_arguments(p, gpus=False)
    add_gpus_argument(p)
    p.add_argument("--steps", type=int, default=3, help="steps timed, then as many profiled (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="steps run first and not measured (default: %(default)s)")
    p.add_argument("--amp", choices=("off", "bf16"), default=None, help="autocast (default: the config's train.amp)")
    p.add_argument("--one-stream", action="store_true",
                   help="on a GPU, run both columns on one stream (default: each on its own, as training does)")
    p.add_argument("--link-gbps", type=float, action="append", metavar="GB/S",
                   help="interconnect for the cost model, gigabytes (1e9 bytes) per second per direction; "
                        "repeatable (default: PCIe 2.0 x16 = 8, PCIe 4.0 x16 = 31.5, NVLink 4 = 450)")
    p.add_argument("-o", "--out", required=True, metavar="DIR",
                   help="where trace.json.gz, timeline.png and profile.json go")


def interconnects(values: list[float] | None) -> list[tuple[str, float]]:
    if not values:
        return list(PRESETS) + [("copies free (compute only)", math.inf)]
    bad = [v for v in values if not v > 0 or math.isinf(v)]
    if bad:
        raise TwocolError(f"--link-gbps must be a positive number of GB/s, got {bad[0]}")
    return [(f"{v:g} GB/s", v) for v in values]


def report(r: dict) -> str:
    tl = r["timeline"]
    ms = lambda us: f"{us / 1e3:.2f}"
    where = r["gpu"] or r["placement"]
    lines = [f"profiled {r['config']} (batch {r['batch']}, amp {r['amp']}) on {where}"
             + (", column streams" if r["column_streams"] else "")
             + f": {r['steps']} steps after {r['warmup']} warm-up; load average {r['load_average'][0]:.1f}",
             f"step: {1e3 * r['median_step_s']:.2f} ms without the profiler (median of {r['steps']}), "
             f"{ms(tl['wall_us'])} ms under it; work in it: " + ", ".join(
                 f"{lane} {ms(tl['busy_us'][lane])} ms" for lane in ("A", "B", "link", "host"))
             + f"; both columns at once {100 * tl['both_columns_share']:.1f}% of the step", ""]
    head = ["layer", "A forward", "A backward", "B forward", "B backward"]
    lines.append(f"{head[0]:<8}" + "".join(f"{h:>12}" for h in head[1:]) + "   (ms per step, median)")
    for layer, cells in layer_table(tl):
        lines.append(f"{layer:<8}" + "".join(f"{'' if c is None else ms(c):>12}" for c in cells))
    if r["link_bytes_per_step"]:
        lines += ["", "links, forward bytes per step (each gradient moves as many back): " + "; ".join(
            f"{link} " + " ".join(f"{route} {b:,}" for route, b in routes.items())
            for link, routes in r["link_bytes_per_step"].items())]
    model = r.get("cost_model")
    if model:
        lines += ["", "cost model, each column on its own device (assumptions below):",
                  f"  one device, columns in series: {1e3 * model['one_device_serial_s']:.2f} ms predicted; measured "
                  f"{1e3 * model['measured_step_s']:.2f} ms without the profiler (predicted / measured "
                  f"{model['serial_over_measured']:.3f}), {1e3 * model['profiled_step_s']:.2f} ms in the profiled "
                  f"steps the layer times come from ({model['serial_over_profiled']:.3f})",
                  f"  {'interconnect':<50}{'GB/s':>7}{'step ms':>10}{'speed-up':>10}{'idle A / B ms':>16}"
                  f"{'batch copied A>B':>18}"]
        for row in model["two_devices"]:
            idle = row["idle_s"]
            gbps = "-" if row["gbps"] is None else f"{row['gbps']:g}"
            lines.append(f"  {row['interconnect']:<50}{gbps:>7}{1e3 * row['step_s']:>10.2f}"
                         f"{row['speedup_over_one_device']:>9.2f}x"
                         f"{1e3 * idle.get('A', 0):>8.2f} / {1e3 * idle.get('B', 0):<6.2f}"
                         f"{1e3 * row.get('step_s_if_batch_copied_a_to_b', row['step_s']):>17.2f}")
        lines.append("  speed-up: one device in series / two devices. Assumed: " + "; ".join(
            f"({i}) {a}" for i, a in enumerate(model["assumptions"], 1)) + ".")
    return "\n".join(lines)


def run(args) -> int:
    cfg = config_of(args)
    if args.amp is not None:
        cfg.train.amp = args.amp
    if args.steps < 1 or args.warmup < 0:
        raise TwocolError(f"--steps must be at least 1 and --warmup at least 0 (got {args.steps}, {args.warmup})")
    gbps = interconnects(args.link_gbps)
    out = Path(args.out)
    run_ = profile_training(cfg, Placement.parse(args.gpus), out, steps=args.steps, warmup=args.warmup,
                            streams=not args.one_stream)
    result, steps = analyse(run_, out, gbps)
    step = steps[result["timeline"]["median_step"]]
    plot_profile(step, result, out / "timeline.png")
    atomic_write(out / "profile.json", json.dumps(result, indent=2) + "\n")
    print(report(result))
    print(f"\nwrote {out / 'trace.json.gz'} (open in ui.perfetto.dev or chrome://tracing), {out / 'timeline.png'}, "
          f"{out / 'profile.json'}")
    return 0
