"""The chart of `twocol profile`: one step as lanes (column A, the links, column B, the host),
each piece of work coloured by its layer, backward work hatched, link copies drawn as arrows
from the sending column to the receiving one; below it, each layer's forward and backward
time per column (medians over the profiled steps)."""
from __future__ import annotations

from pathlib import Path

from ..costmodel import FORWARD_ORDER
from ..timeline import Step
from .plot import pyplot, save

LANE_Y = {"A": 3.0, "link": 2.0, "B": 1.0, "host": 0.0}


def plot_profile(step: Step, result: dict, out: Path) -> Path:
    plt = pyplot()
    tl = result["timeline"]
    layers = [l for l in FORWARD_ORDER if any(l in tl["layers"].get(c, {}) for c in ("A", "B"))] + ["update"]
    colours = {l: plt.get_cmap("tab10")(i % 10) for i, l in enumerate(layers)}
    fig, (ax, bars) = plt.subplots(2, 1, figsize=(13, 8.5), gridspec_kw={"height_ratios": [1.1, 1]})

    groups: dict[tuple, list] = {}
    for x in step.slices:
        groups.setdefault((x.lane, x.layer, x.phase), []).append(((x.start - step.start) / 1e3, x.duration / 1e3))
    for (lane, layer, phase), spans in groups.items():
        if lane == "link":
            continue
        ax.broken_barh(spans, (LANE_Y[lane] - 0.35, 0.7), facecolors=colours.get(layer, "lightgrey"),
                       edgecolor="none", hatch="///" if phase == "backward" else None,
                       alpha=0.75 if phase == "backward" else 1.0)
    for x in step.slices:
        if x.lane != "link" or ">" not in x.route:
            continue
        src, dst = x.route.split(">")
        t = (x.start - step.start) / 1e3
        ax.broken_barh([(t, max(x.duration / 1e3, 1e-6))], (LANE_Y["link"] - 0.35, 0.7), facecolors="black")
        ax.annotate("", xy=(t, LANE_Y[dst]), xytext=(t, LANE_Y[src]),
                    arrowprops=dict(arrowstyle="->", color="black", lw=0.6, alpha=0.6))
    bytes_note = ", ".join(f"{link} {sum(r.values()) / 2 ** 20:.2f} MiB"
                           for link, r in result["link_bytes_per_step"].items())
    ax.set_yticks([LANE_Y[l] for l in LANE_Y],
                  ["column A", "links" + (f"\n({bytes_note} fwd)" if bytes_note else ""), "column B", "host"],
                  fontsize=8)
    ax.set_xlabel("ms since the step began (hatched: backward; arrows: link copies, sender to receiver)")
    ax.set_xlim(0, step.wall / 1e3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[l]) for l in layers]
    ax.legend(handles, layers, ncol=len(layers), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    where = result.get("gpu") or result["placement"]
    lanes = "each column's CUDA stream" if result.get("column_streams") else \
        "by column (one device runs both in turn)" if result["device"] == "cpu" else "by column (one stream)"
    ax.set_title(f"{result['config']}, batch {result['batch']}, amp {result['amp']} on {where}: one step, lanes {lanes}\n"
                 f"step {step.wall / 1e3:.2f} ms; both columns at once {100 * tl['both_columns_share']:.1f}% "
                 f"of the step (median of {tl['steps']} profiled steps)", fontsize=9)

    width = 0.2
    for k, (column, phase) in enumerate([("A", "forward"), ("A", "backward"), ("B", "forward"), ("B", "backward")]):
        per = tl["layers"].get(column, {})
        # The update has no backward: its time stands in the forward bar.
        values = [per.get(l, {}).get(("update" if phase == "forward" else "none") if l == "update" else phase, 0.0) / 1e3
                  for l in layers]
        if any(values):
            bars.bar([i + (k - 1.5) * width for i in range(len(layers))], values, width, label=f"column {column} {phase}",
                     color="tab:blue" if column == "A" else "tab:orange", alpha=1.0 if phase == "forward" else 0.55,
                     hatch=None if phase == "forward" else "///")
    bars.set_xticks(range(len(layers)), layers)
    bars.set_ylabel("ms per step (median)")
    bars.set_xlabel("layer (conv1: conv, ReLU+LRN, pool; ...; update: the column's weight update)")
    bars.legend(fontsize=8)
    model = result.get("cost_model")
    if model:
        parts = [f"{r['interconnect'].split(':')[0].split(' (')[0]} {1e3 * r['step_s']:.2f} ms "
                 f"(x{r['speedup_over_one_device']:.2f})" for r in model["two_devices"]]
        bars.set_title(f"cost model: one device, columns in series {1e3 * model['one_device_serial_s']:.2f} ms "
                       f"(measured {1e3 * model['measured_step_s']:.2f} ms; profiled steps "
                       f"{1e3 * model['profiled_step_s']:.2f} ms); two devices:\n" + "; ".join(parts),
                       fontsize=8)
    fig.tight_layout()
    return save(fig, out)
