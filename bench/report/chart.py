"""The report's chart (latest.png): the headline comparison and the ablations against the
paper's figures, and the speed ratios against their targets."""
from __future__ import annotations

from pathlib import Path

from bench.ratios import throughput_summary
from bench.targets import THROUGHPUT as TARGETS
from bench.report.paper import label
from bench.report.speed import DATA_TARGET, KERNEL_CPU_TARGET, KERNEL_GPU_TARGET
from twocol.atomic import atomic_write


def _headline(ax, r: dict) -> None:
    c = r["comparisons"]["two_vs_one"]
    keys = (("top1", "top-1"), ("top5", "top-5"))
    diffs = [c[k]["onecol_minus_twocol"] for k, _ in keys]
    ax.barh([0, 1], [m for m, _ in diffs], xerr=[h or 0 for _, h in diffs], capsize=4, color="tab:blue",
            label="this run (95% CI)")
    ax.plot([c[k]["paper_onecol_minus_twocol"] for k, _ in keys], [0, 1], "rD", markersize=7,
            label="2012 code logs (ILSVRC-2010 test)")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks([0, 1], [name for _, name in keys])
    ax.set_xlabel("one-column minus two-column error, points")
    ax.set_title(f"two vs one column, {len(r['runs']['twocol'])} paired seeds", fontsize=10)
    ax.legend(fontsize=8)


def _ablations(ax, ablations: dict) -> None:
    names = list(ablations)
    ys = list(range(len(names)))
    ms = [ablations[n]["top1_minus_baseline"] for n in names]
    ax.barh(ys, [m for m, _ in ms], xerr=[h or 0 for _, h in ms], capsize=4, color="tab:green", label="this run")
    ax.plot([ablations[n]["paper_minus_baseline"].get("top1", float("nan")) for n in names], ys,
            "rD", markersize=7, label="paper (ImageNet)")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(ys, [label(n) for n in names])
    ax.set_xlabel("top-1 error change, points (positive: the feature helps)")
    ax.set_title("ablations vs the two-column net", fontsize=10)
    ax.legend(fontsize=8)


def _speed_bars(found: dict) -> list[tuple[str, float, float]]:
    bars = []
    for key, v in found.items():
        kind = key.split("-")[0]
        if kind == "throughput":
            amps = list(dict.fromkeys(r["amp"] for r in v["rows"]))
            for amp, s in throughput_summary(v["rows"], amps).items():
                if "twocol_over_grouped" in s:
                    bars.append((f"grouped / two-col step\n{key}, {amp}", 1 / s["twocol_over_grouped"],
                                 1 / TARGETS["twocol_over_grouped"]))
                if "twocol_over_torchvision_images_per_s" in s:
                    bars.append((f"two-col / torchvision img/s\n{key}, {amp}", s["twocol_over_torchvision_images_per_s"],
                                 TARGETS["twocol_over_torchvision_images_per_s"]))
                if "bf16_over_fp32_step" in s:
                    bars.append((f"fp32 / bf16 step\n{key}", 1 / s["bf16_over_fp32_step"], 1 / TARGETS["bf16_over_fp32_step"]))
        elif kind == "e2e":
            dali = next((r for r in v["rows"] if r["feed"] == "dali-gpu" and "over_synthetic" in r), None)
            if dali:
                bars.append((f"DALI GPU / synthetic\n{key}", dali["over_synthetic"], v["targets"]["dali_gpu_over_synthetic"]))
        elif kind == "kernels":
            row = next((r for r in v["rows"] if r["layer"] == "conv1" and r["shape"][0] == 128), None)
            if row:
                bars.append((f"kernel fwd+bwd\n{key}", row["speedup"]["forward_backward"],
                             KERNEL_GPU_TARGET if v["device"].startswith("cuda") else KERNEL_CPU_TARGET))
        elif kind == "data":
            for r in v["rows"]:
                bars.append((f"DALI / torch {r['stored']}px\n{key}", r["dali_over_torch"],
                             DATA_TARGET if v["device"] == "cpu" else float("nan")))
    return bars


def chart(found: dict, papers: list[dict], path: Path) -> None:
    import matplotlib  # optional and heavy: only the chart needs it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    r = next((x for x in papers if "comparisons" in x), None)
    if r is not None and "two_vs_one" in r["comparisons"]:
        _headline(axes[0], r)
    if r is not None and r["comparisons"].get("ablations"):
        _ablations(axes[1], r["comparisons"]["ablations"])
    bars = _speed_bars(found)
    if bars:
        ax = axes[2]
        xs = list(range(len(bars)))
        ax.bar(xs, [b[1] for b in bars], color="tab:purple", label="measured")
        ax.plot(xs, [b[2] for b in bars], "r_", markersize=26, mew=2, label="target")
        ax.set_xticks(xs, [b[0] for b in bars], fontsize=7, rotation=30, ha="right")
        ax.set_ylabel("speed ratio (higher is better)")
        ax.set_title("speed against the targets", fontsize=10)
        ax.legend(fontsize=8)
    for ax in axes:
        if not ax.has_data():
            ax.set_axis_off()
    if r is not None:
        d = next(iter(r["data"].values()))
        fig.suptitle(f"protocol {r['protocol']['name']} v{r['protocol']['version']}: {d['classes']} classes, "
                     f"{d['train']:,} training images of {d['image_size']} px; the red markers are the paper's "
                     "ImageNet figures", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
