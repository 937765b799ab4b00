"""The latest benchmark results as one report: bench/results/latest.md and latest.png.

    python -m bench.report [--results bench/results]

Reads the newest file of each kind under --results (<date>-paper.json, <date>-throughput-*.json,
<date>-kernels-*.json, <date>-data-*.json; one per device for the last three) and puts each
next to the paper's figure or the issue's target it is meant to be read against.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})-(paper|throughput|kernels|data)(-[\w.]+)?\.json$")
ABLATION_LABELS = {"lrn_off": "LRN off", "pool_2x2": "pooling 2x2 (non-overlapping)", "tanh": "tanh instead of ReLU",
                   "lighting_off": "PCA lighting off"}
# What a positive / negative top-1 change (ablated minus baseline) means, in words.
ABLATION_DIRECTIONS = {"lrn_off": ("error rises without LRN", "error falls without LRN"),
                       "pool_2x2": ("2x2 pooling errs more", "2x2 pooling errs less"),
                       "tanh": ("tanh errs more", "tanh errs less"),
                       "lighting_off": ("error rises without lighting", "error falls without lighting")}
KERNEL_TARGET = 5.0  # CPU and GPU forward+backward speedup over torch, conv1 at N = 128 (issue 3)
DATA_TARGET = 1.5    # DALI over the torch + Pillow loader on the CPU (issue 4)


def latest(results: Path) -> dict[str, dict]:
    """'paper' / 'throughput-cpu' / ... -> the newest such file's JSON (with its path)."""
    newest: dict[str, tuple[str, float, Path]] = {}
    for path in results.glob("*.json"):
        m = NAME.match(path.name)
        if not m:
            continue
        key = m.group(2) + (m.group(3) or "")
        rank = (m.group(1), path.stat().st_mtime, path)
        if key not in newest or rank[:2] > newest[key][:2]:
            newest[key] = rank
    found = {}
    for key, (_, _, path) in sorted(newest.items()):
        found[key] = json.loads(path.read_text())
        found[key]["_file"] = path.name
    return found


def ci(pair, digits: int = 2) -> str:
    """'m +- h' for [mean, half-width]; the half-width is None with one seed."""
    m, h = pair
    return f"{m:.{digits}f}" if h is None else f"{m:.{digits}f} ± {h:.{digits}f}"


def signed_ci(pair) -> str:
    m, h = pair
    return f"{m:+.2f}" if h is None else f"{m:+.2f} ± {h:.2f}"


def reading(pair, paper: float | None, positive: str, negative: str) -> str:
    """Whether a paired interval resolves the difference and in which direction; `positive` and
    `negative` say what a difference above or below 0 means. `paper`: the paper's effect (> 0:
    its direction is `positive`), or None where it gives no size."""
    m, h = pair
    if h is None:
        return "one seed: no interval"
    if m - h <= 0 <= m + h:
        return "not resolved (the interval spans 0)"
    up = m - h > 0
    agree = "" if paper is None else (" (the paper's direction)" if up == (paper > 0) else " (opposite to the paper)")
    return f"resolved: {positive if up else negative}" + agree


def target(pair, limit: float | None) -> str:
    """'1.23 <= 2.0: met' for a half-width against its target."""
    h = pair[1]
    if limit is None:
        return "-"
    if h is None:
        return "no interval"
    return f"{h:.2f} {'<=' if h <= limit else '>'} {limit:.1f}: {'met' if h <= limit else 'NOT met'}"


def seeds_above(p: dict, tag: str, base: str = "twocol", key: str = "top1") -> str:
    """'9 / 10': on how many seeds `tag`'s error is above the baseline's (ties count as not)."""
    runs = p["runs"]
    if tag not in runs or base not in runs:
        return "-"
    by_seed = {r["seed"]: r[key] for r in runs[base]}
    pairs = [(r[key], by_seed[r["seed"]]) for r in runs[tag] if r["seed"] in by_seed]
    return f"{sum(a > b for a, b in pairs)} / {len(pairs)}"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def env_line(env: dict) -> str:
    where = env.get("gpu") or f"{env.get('cpu')}, torch threads: {env.get('threads')}"
    return (f"{where}; torch {env.get('torch')}, DALI {env.get('dali')}, commit {env.get('commit')}, "
            f"{env.get('date')}")


def schedule_text(p: dict) -> str:
    sch = p.get("schedule")
    if not sch:
        return f"{p['epochs']} epochs"
    if sch["kind"] == "fixed":
        cuts = [e for e in sch["milestones"] if e < p["epochs"]][:sch["max_drops"]]
        how = (f"the rate divided by {1 / sch['factor']:.0f} after epoch{'s' if len(cuts) > 1 else ''} "
               f"{', '.join(map(str, cuts))}" if cuts else "a constant rate")
    else:
        how = (f"the rate divided by {1 / sch['factor']:.0f} when the validation error stops improving "
               f"(patience {sch['patience']}, at most {sch['max_drops']} times)")
    return f"{p['epochs']} epochs, {how}"


def scale_section(p: dict) -> list[str]:
    d = p["data"]
    synthetic = d.get("params", {}).get("kind") == "synthetic"
    top5_note = (f" With {p['num_classes']} classes, top-5 (half or more of the classes) says little; "
                 "top-1 is the measure to read." if p["num_classes"] <= 10 else "")
    jobs = p.get("jobs", 1)
    timing = f"{p['wall_s'] / 60:.1f} min for all runs"
    if "run_cpu_s" in p:
        timing += (f" ({jobs} at a time; the runs took {p['run_cpu_s'] / 60:.1f} CPU-minutes in all, "
                   f"{p['run_s'] / 60:.1f} min of wall time summed over runs)")
    lines = [
        "## Scale: what these numbers are",
        "",
        f"- **Data**: `{d['path']}`, {'a synthetic set (shapes x textures, `twocol synth`)' if synthetic else 'a prepared dataset'}"
        f": {d['classes']} classes, {d['train']} training and {d['val']} validation images of "
        f"{d['image_size']}x{d['image_size']} px; crops of {p['input_size']} px.",
        f"- **Nets**: `{p['configs']['twocol']}` and `{p['configs']['onecol']}` ({p['preset']} preset), "
        f"overrides: two-column `{' '.join(p['overrides']['twocol']) or 'none'}`; one-column "
        f"`{' '.join(p['overrides']['onecol']) or 'none'}`"
        + (f"; dropout {p['dropout']:g}" if "dropout" in p else "") + ".",
        f"- **Protocol**: {schedule_text(p)}; seeds {p['seeds']} (every net and ablation trained on each), "
        f"10-patch test on the validation split; {p['placement']}, torch threads per run: {p['threads']}; "
        f"{timing}.",
        f"- **Machine**: {env_line(p['environment'])}."
        + (f" Load average {p['load_average'][0]:.1f} at the start and {p['load_average'][1]:.1f} at the end; "
           "on a shared machine the timings are noisy (the errors are not: a rerun gives the same ones)."
           if "load_average" in p else ""),
        "",
    ]
    if synthetic or p["num_classes"] < 1000:
        lines += [
            "This run does **not** reproduce the paper's ImageNet numbers and cannot: the nets are a tiny "
            "fraction of AlexNet's size and the data is not ImageNet. What it shows: the protocol runs end to "
            "end (the paper's update rule, augmentation and 10-patch test, with the deviations the configs "
            "state and the overrides above; paired seeds, 95% t intervals) and, where an interval excludes 0, "
            "the direction of each effect on this toy problem. An interval that spans 0 is no evidence "
            "either way, and none of these sizes is a prediction for ImageNet."
            f"{top5_note} The same harness runs at full scale with "
            "`make bench DATA=<prepared ImageNet> CONFIG=configs/alexnet_paper.yaml GPUS=0,1`.",
            "",
        ]
    return lines


def targets_line(p: dict) -> list[str]:
    t = p.get("targets")
    if not t:
        return []
    c = p["comparison"]["top1"]["onecol_minus_twocol"]
    abl = [a["top1_minus_baseline"][1] for a in p["ablations"].values()]
    met = target(c, t["twocol_vs_onecol"]).endswith(": met") and all(
        h is not None and h <= t["ablation"] for h in abl)
    return [f"Targets for the 95% half-widths (top-1 points): two-vs-one <= {t['twocol_vs_onecol']:.1f}, each "
            f"ablation <= {t['ablation']:.1f}: **{'all met' if met else 'not all met'}** (per row below).", ""]


def paper_section(p: dict) -> list[str]:
    c, paper = p["comparison"], p["paper"]
    limit = p.get("targets", {}).get("twocol_vs_onecol")
    lines = ["## The two-column net vs the one-GPU comparison net (the paper's 1.7% / 1.2%)", "",
             f"Error in %, 10-patch test, mean ± 95% t half-width over {len(p['seeds'])} seed(s); the "
             "difference is paired by seed. Paper: " + paper["source"] + ".", ""]
    rows = []
    for k, label in (("top1", "top-1"), ("top5", "top-5")):
        rows.append([label, ci(c[k]["twocol"]), ci(c[k]["onecol"]), signed_ci(c[k]["onecol_minus_twocol"]),
                     f"{paper['twocol'][k]:.2f}", f"{paper['onecol'][k]:.2f}",
                     f"{c[k]['paper_onecol_minus_twocol']:+.2f}",
                     reading(c[k]["onecol_minus_twocol"], c[k]["paper_onecol_minus_twocol"],
                             "the one-column net errs more", "the one-column net errs less"),
                     target(c[k]["onecol_minus_twocol"], limit if k == "top1" else None),
                     seeds_above(p, "onecol", key=k)])
    lines += table(["error", "two-column", "one-column", "one minus two", "2012 log two-col", "2012 log one-col",
                    "paper diff", "reading", "half-width vs target", "seeds one-column errs more"], rows)
    two, one = p["runs"]["twocol"], p["runs"]["onecol"]
    lines += ["", "Per seed (10-patch top-1 / top-5, and the centre crop's top-1 from the last epoch):", ""]
    lines += table(["seed", "two-column", "one-column"],
                   [[str(t["seed"]), f"{t['top1']:.2f} / {t['top5']:.2f} (centre {t['centre_top1']:.2f})",
                     f"{o['top1']:.2f} / {o['top5']:.2f} (centre {o['centre_top1']:.2f})"] for t, o in zip(two, one)])
    fewer = 100 * (1 - one[0]["params"] / two[0]["params"])
    lines += ["", f"Parameters: two-column {two[0]['params']:,}, one-column {one[0]['params']:,} "
                  f"({abs(fewer):.1f}% {'fewer' if fewer >= 0 else 'more'}; the paper's: 59.80M vs 60.97M, "
                  "1.9% fewer).", ""]
    return lines


def ablation_section(p: dict) -> list[str]:
    if not p["ablations"]:
        return ["## Ablations", "", "Not run (--no-ablations).", ""]
    limit = p.get("targets", {}).get("ablation")
    lines = ["## Ablations (each against the two-column baseline of the same seed)", "",
             "Change in 10-patch error (ablated minus baseline, points; positive: the feature helps). "
             "Each ablation is `twocol train --ablation NAME` (twocol/ablations.py); the overrides it "
             "applied to this config are listed under the table.", ""]
    rows = []
    for name, a in p["ablations"].items():
        effect = a.get("paper_minus_baseline", {})
        rows.append([ABLATION_LABELS.get(name, name), signed_ci(a["top1_minus_baseline"]),
                     signed_ci(a["top5_minus_baseline"]), a["claim"],
                     reading(a["top1_minus_baseline"], effect.get("top1"),
                             *ABLATION_DIRECTIONS.get(name, ("error rises without it", "error falls without it"))),
                     target(a["top1_minus_baseline"], limit), seeds_above(p, name)])
    lines += table(["ablation", "top-1 change", "top-5 change", "paper's claim", "reading (top-1)",
                    "half-width vs target", "seeds with more top-1 error"], rows)
    lines += [""] + [f"- `--ablation {name}`: `{' '.join(a['overrides'])}`" for name, a in p["ablations"].items()]
    speed = p["ablations"].get("tanh", {}).get("epochs_to_threshold")
    if speed:
        def fmt(v):
            return ", ".join("never" if e is None else str(e) for e in v)
        ratio = speed["tanh_over_relu"]
        lines += ["", f"ReLU vs tanh, epochs to {speed['threshold']:.1f}% training top-1 error (per seed): "
                      f"ReLU {fmt(speed['relu'])}; tanh {fmt(speed['tanh'])}; tanh / ReLU "
                      + (f"**{ratio:.2f}x**" if ratio is not None else "not measurable (a net never got there)")
                      + f" (paper: {speed['paper_tanh_over_relu']:.0f}x to 25% on CIFAR-10; the threshold here: "
                      + speed.get("threshold_rule", "halfway between chance and the ReLU nets' final training error")
                      + ")."]
    return lines + [""]


def throughput_section(t: dict) -> list[str]:
    lines = [f"## Throughput ({t['_file']})", "",
             f"`{t['config']}`, batch {t['batch']}, {t['placement']}; {env_line(t['environment'])}. "
             "Median seconds per training step (forward, backward, update) on random tensors, the variants "
             "taking turns step by step.", ""]
    lines += table(["variant", "precision", "ms/step", "images/s"],
                   [[r["variant"], r["amp"], f"{1000 * r['median_step_s']:.1f}", f"{r['images_per_s']:.0f}"]
                    for r in t["results"]])
    lines.append("")
    for amp, s in t["summary"].items():
        ok = s["twocol_over_grouped"] <= s["target_twocol_over_grouped"]
        lines.append(f"- {amp}: two-column / grouped step time **{s['twocol_over_grouped']:.3f}** "
                     f"(target <= {s['target_twocol_over_grouped']:.2f}: {'met' if ok else 'NOT met'})"
                     + (f"; column streams overlapped / serialised {s['overlapped_over_serialised']:.3f}"
                        if "overlapped_over_serialised" in s else ""))
    links = next((r["link_bytes_per_step"] for r in t["results"] if "link_bytes_per_step" in r), None)
    if links:
        lines += ["", "Bytes each link moved per step (forward + backward; both directions of the link): "
                  + ", ".join(f"{k} {(v['forward'] + v['backward']) / 2 ** 20:.2f} MiB" for k, v in links.items())
                  + "."]
    return lines + [""]


def kernels_section(k: dict) -> list[str]:
    lines = [f"## Fused ReLU+LRN kernels ({k['_file']})", "",
             f"{k['device']}: {env_line(k['environment'])}; medians of {k['repeats']} interleaved repeats. "
             f"Target: forward+backward at least {KERNEL_TARGET:.0f}x torch at conv1, N = 128.", ""]
    lines += table(["layer", "shape", "forward x", "forward+backward x", "kernel fwd, % of copy bandwidth"],
                   [[r["layer"], "x".join(map(str, r["shape"])), f"{r['speedup']['forward']:.1f}",
                     f"{r['speedup']['forward_backward']:.1f}", f"{100 * r['kernel_forward_fraction_of_copy']:.0f}"]
                    for r in k["results"]])
    met = k.get("targets_met", {})
    lines += ["", "Targets: " + (", ".join(f"{n} **{'met' if v else 'NOT met'}**" for n, v in met.items())
                                 or "conv1 N = 128 not run") + "."]
    return lines + [""]


def data_section(d: dict) -> list[str]:
    lines = [f"## Data loaders ({d['_file']})", "",
             f"{d['device']}, {d['workers']} workers, batch {d['batch']}: {env_line(d['env'])}; "
             f"medians of {d['repeats']} epochs ({d['what']}). Target on the CPU: DALI at least "
             f"{DATA_TARGET}x the torch + Pillow loader.", ""]
    lines += table(["stored -> crop", "DALI images/s", "torch images/s", "DALI / torch", "target"],
                   [[f"{r['stored']} -> {r['crop']}", f"{r['median']['dali']:.0f}", f"{r['median']['torch']:.0f}",
                     f"{r['dali_over_torch']:.2f}",
                     ("met" if r["dali_over_torch"] >= DATA_TARGET else "NOT met") if d["device"] == "cpu" else "-"]
                    for r in d["results"]])
    return lines + [""]


def markdown(found: dict) -> str:
    lines = ["# Benchmarks: latest results", "",
             "Written by `bench/report.py` from " + ", ".join(f"`{v['_file']}`" for v in found.values())
             + " (`make bench` reruns everything).", ""]
    if "paper" in found:
        p = found["paper"]
        lines += scale_section(p) + targets_line(p) + paper_section(p) + ablation_section(p)
    else:
        lines += ["## The paper's comparisons", "", "No results yet: run `make bench`.", ""]
    for kind, section in (("throughput", throughput_section), ("kernels", kernels_section), ("data", data_section)):
        lines += [line for key, v in found.items() if key.split("-")[0] == kind for line in section(v)]
    lines += ["Chart: [latest.png](latest.png).", ""]
    return "\n".join(lines)


def chart(found: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    p = found.get("paper")
    ax = axes[0]
    if p:
        c = p["comparison"]
        keys = (("top1", "top-1"), ("top5", "top-5"))
        diffs = [c[k]["onecol_minus_twocol"] for k, _ in keys]
        ax.barh([0, 1], [m for m, _ in diffs], xerr=[h or 0 for _, h in diffs], capsize=4, color="tab:blue",
                label="this run (95% CI)")
        ax.plot([c[k]["paper_onecol_minus_twocol"] for k, _ in keys], [0, 1], "rD", markersize=7,
                label="2012 code logs (ILSVRC-2010 test)")
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks([0, 1], [label for _, label in keys])
        ax.set_xlabel("one-column minus two-column error, points")
        ax.set_title(f"two vs one column, {len(p['seeds'])} paired seeds", fontsize=10)
        ax.legend(fontsize=8)
        ax = axes[1]
        names = list(p["ablations"])
        if names:
            ys = range(len(names))
            ms = [p["ablations"][n]["top1_minus_baseline"] for n in names]
            ax.barh(list(ys), [m for m, _ in ms], xerr=[h or 0 for _, h in ms], capsize=4, color="tab:green",
                    label="this run")
            ax.plot([p["ablations"][n]["paper_minus_baseline"].get("top1", float("nan")) for n in names], list(ys),
                    "rD", markersize=7, label="paper (ImageNet)")
            ax.axvline(0, color="grey", lw=0.8)
            ax.set_yticks(list(ys), [ABLATION_LABELS.get(n, n) for n in names])
            ax.set_xlabel("top-1 error change, points (positive: the feature helps)")
            ax.set_title("ablations vs the two-column baseline", fontsize=10)
            ax.legend(fontsize=8)
    ax = axes[2]
    bars = []
    for key, v in found.items():
        kind = key.split("-")[0]
        if kind == "throughput":
            for amp, s in v["summary"].items():
                bars.append((f"grouped / two-col step\n{key}, {amp}", 1 / s["twocol_over_grouped"], 1 / s["target_twocol_over_grouped"]))
        elif kind == "kernels":
            row = next((r for r in v["results"] if r["layer"] == "conv1" and r["shape"][0] == 128), None)
            if row:
                bars.append((f"kernel fwd+bwd\n{key}", row["speedup"]["forward_backward"], KERNEL_TARGET))
        elif kind == "data":
            for r in v["results"]:
                bars.append((f"DALI / torch {r['stored']}px\n{key}", r["dali_over_torch"],
                             DATA_TARGET if v["device"] == "cpu" else float("nan")))
    if bars:
        xs = range(len(bars))
        ax.bar(list(xs), [b[1] for b in bars], color="tab:purple", label="measured")
        ax.plot(list(xs), [b[2] for b in bars], "r_", markersize=26, mew=2, label="target")
        ax.set_xticks(list(xs), [b[0] for b in bars], fontsize=7, rotation=30, ha="right")
        ax.set_ylabel("speed ratio (higher is better)")
        ax.set_title("speed against the targets", fontsize=10)
        ax.legend(fontsize=8)
    for ax in axes:
        if not ax.has_data():
            ax.set_axis_off()
    if p:
        d = p["data"]
        fig.suptitle(f"{d['classes']} classes, {d['train']} training images of {d['image_size']} px "
                     f"({'synthetic' if d.get('params', {}).get('kind') == 'synthetic' else d['path']}), "
                     f"{p['epochs']} epochs, {p['preset']} preset: the red markers are ImageNet-scale figures, "
                     "not what this scale should reach", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("bench/results"))
    p.add_argument("--out", type=Path, default=None, help="markdown file (default: RESULTS/latest.md; the chart "
                                                          "goes next to it as .png)")
    a = p.parse_args(argv)
    found = latest(a.results)
    if not found:
        print(f"bench/report.py: no results in {a.results}; run make bench", file=sys.stderr)
        return 1
    md = a.out or a.results / "latest.md"
    md.write_text(markdown(found))
    chart(found, md.with_suffix(".png"))
    print(f"wrote {md} and {md.with_suffix('.png')} from {', '.join(v['_file'] for v in found.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
