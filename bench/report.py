"""The latest benchmark results as one report: bench/results/latest.md and latest.png.

    python -m bench.report [--results bench/results]

Reads the newest file of each kind under --results (<date>-paper.json, <date>-throughput-*.json,
<date>-kernels-*.json, <date>-data-*.json, <date>-e2e-*.json, <date>-profile-*.json; one per
device for all but the first) and the GPU runs' folders (<date>-gpu-<card>/: throughput.json, kernels.json,
e2e.json, profile-<amp>.json, as bench/gpu_check.sh writes them), and puts each next to the
paper's figure or the issue's target it is meant to be read against.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from bench.ratios import TARGETS, throughput_summary
from twocol.ablations import ABLATIONS
from twocol.atomic import atomic_write
from twocol.timeline import layer_table

NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})-(paper|throughput|kernels|data|e2e|profile)(-[\w.-]+)?\.json$")
GPU_RUN = re.compile(r"^(\d{4}-\d{2}-\d{2})-gpu-([\w.-]+)$")
GPU_FILES = re.compile(r"^(throughput|throughput-compile|kernels|e2e|e2e-dali|profile-[\w.-]+)\.json$")
# Fused ReLU+LRN (issue 15): on the CPU, forward+backward over torch at conv1, N = 128; on a GPU,
# forward and backward each over torch and as a share of the copy bandwidth, every shape.
KERNEL_CPU_TARGET, KERNEL_GPU_TARGET, KERNEL_GPU_COPY_FRACTION = 10.0, 5.0, 0.8
DATA_TARGET = 1.5    # DALI over the torch + Pillow loader on the CPU (issue 4)
TARGET_LABELS = {"twocol_over_grouped": ("two-column / grouped step time", "<="),
                 "twocol_over_torchvision_images_per_s": ("two-column / torchvision AlexNet images/s", ">="),
                 "bf16_over_fp32_step": ("bf16 / fp32 step time", "<="),
                 "twocol_over_grouped_graphed": ("two-column / grouped step time, CUDA graphs", "<="),
                 "twocol_over_torchvision_images_per_s_graphed":
                     ("two-column / torchvision AlexNet images/s, CUDA graphs", ">=")}


def latest(results: Path) -> dict[str, dict]:
    """'paper' / 'throughput-cpu' / ... -> the newest such file's JSON (with its path)."""
    newest: dict[str, tuple[str, float, Path]] = {}
    found_files = []
    for path in results.glob("*.json"):
        m = NAME.match(path.name)
        if m:
            found_files.append((m.group(1), m.group(2) + (m.group(3) or ""), path))
    for folder in results.iterdir():
        run = GPU_RUN.match(folder.name)
        if not (run and folder.is_dir()):
            continue
        for path in folder.glob("*.json"):
            m = GPU_FILES.match(path.name)
            if m:
                found_files.append((run.group(1), f"{m.group(1)}-gpu-{run.group(2)}", path))
    for date, key, path in found_files:
        rank = (date, path.stat().st_mtime, path)
        if key not in newest or rank[:2] > newest[key][:2]:
            newest[key] = rank
    found = {}
    for key, (_, _, path) in sorted(newest.items()):
        found[key] = json.loads(path.read_text())
        found[key]["_file"] = str(path.relative_to(results))
    return found


def label(name: str) -> str:
    """An ablation's name in the report (twocol/ablations.py); a name it no longer has, as it is."""
    return ABLATIONS[name].label if name in ABLATIONS else name


def directions(name: str) -> tuple[str, str]:
    return ABLATIONS[name].directions if name in ABLATIONS else ("error rises without it", "error falls without it")


def speed_of(a: dict) -> dict | None:
    """An ablation's epochs-to-threshold comparison; results written before the comparison was
    generic (tanh only) name the nets relu and tanh."""
    s = a.get("epochs_to_threshold")
    if not s or "relu" not in s:
        return s
    return {"threshold": s["threshold"], "threshold_rule": s.get("threshold_rule", "halfway between chance and the "
                                                                 "ReLU nets' final training error"),
            "labels": ["ReLU", "tanh"], "baseline": s["relu"], "ablated": s["tanh"],
            "ablated_over_baseline": s["tanh_over_relu"], "paper_ablated_over_baseline": s["paper_tanh_over_relu"],
            "paper_where": "to 25% on CIFAR-10"}


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


def commit_text(record: dict) -> str:
    """'commit abc1234', or that the record does not know its commit, and why where it says."""
    if record.get("commit"):
        return f"commit {record['commit']}"
    return f"commit unknown ({record.get('commit_missing') or 'not recorded'})"


def env_line(env: dict) -> str:
    where = env.get("gpu") or f"{env.get('cpu')}, torch threads: {env.get('threads')}"
    return f"{where}; torch {env.get('torch')}, DALI {env.get('dali')}, {commit_text(env)}, {env.get('date')}"


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
        f"- **Nets**: `{p['configs']['twocol']}`"
        + (f" and `{p['configs']['onecol']}`" if p["configs"].get("onecol") else " (no one-column net in this run)")
        + f" ({p['preset']} preset), overrides: two-column `{' '.join(p['overrides']['twocol']) or 'none'}`"
        + (f"; one-column `{' '.join(p['overrides']['onecol']) or 'none'}`" if p["configs"].get("onecol") else "")
        + (f"; dropout {p['dropout']:g}" if "dropout" in p else "")
        + (f" ({p['dropout_convention']})" if p.get("dropout") and "dropout_convention" in p else "") + ".",
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
    abl = [a["top1_minus_baseline"][1] for a in p["ablations"].values()]
    met = all(h is not None and h <= t["ablation"] for h in abl) and (
        not p["comparison"] or target(p["comparison"]["top1"]["onecol_minus_twocol"], t["twocol_vs_onecol"]).endswith(": met"))
    return [f"Targets for the 95% half-widths (top-1 points): two-vs-one <= {t['twocol_vs_onecol']:.1f}, each "
            f"ablation <= {t['ablation']:.1f}: **{'all met' if met else 'not all met'}** (per row below).", ""]


def paper_section(p: dict) -> list[str]:
    if not p["comparison"]:
        return ["## The two-column net vs the one-GPU comparison net", "", "Not run (--no-onecol).", ""]
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
    lines = ["## Ablations (each against its baseline, the two-column net unless said below, of the same seed)", "",
             "Change in 10-patch error (ablated minus baseline, points; positive: the feature helps). "
             "Each ablation is `twocol train --ablation NAME` (twocol/ablations.py); the overrides it "
             "applied to this config are listed under the table.", ""]
    rows = []
    for name, a in p["ablations"].items():
        effect = a.get("paper_minus_baseline", {})
        rows.append([label(name), signed_ci(a["top1_minus_baseline"]),
                     signed_ci(a["top5_minus_baseline"]), a["claim"],
                     reading(a["top1_minus_baseline"], effect.get("top1"), *directions(name)),
                     target(a["top1_minus_baseline"], limit), seeds_above(p, name, a.get("baseline", "twocol"))])
    lines += table(["ablation", "top-1 change", "top-5 change", "paper's claim", "reading (top-1)",
                    "half-width vs target", "seeds with more top-1 error"], rows)
    lines.append("")
    for name, a in p["ablations"].items():
        line = f"- `--ablation {name}`: `{' '.join(a['overrides'])}`"
        if a.get("baseline", "twocol") != "twocol":
            line += (f"; the two-column config lacks what it takes away, so its baseline is that config with "
                     f"`{' '.join(a['baseline_overrides'])}`")
            if a.get("ran_as") == "twocol":
                line += ", and the ablated net is the two-column config itself (its runs are the two-column net's)"
        lines.append(line)

    def fmt(v):
        return ", ".join("never" if e is None else str(e) for e in v)

    for name, a in p["ablations"].items():
        speed = speed_of(a)
        if speed:
            base, mine = speed["labels"]
            ratio = speed["ablated_over_baseline"]
            lines += ["", f"{base} vs {mine}, epochs to {speed['threshold']:.1f}% training top-1 error (per seed): "
                          f"{base} {fmt(speed['baseline'])}; {mine} {fmt(speed['ablated'])}; {mine} / {base} "
                          + (f"**{ratio:.2f}x**" if ratio is not None else "not measurable (a net never got there)")
                          + f" (paper: {speed['paper_ablated_over_baseline']:g}x, {speed['paper_where']}; the threshold "
                          f"here: {speed['threshold_rule']})."]
        g = a.get("gap")
        if g:
            lines += ["", f"{label(name)}, overfitting: {g['measure']}: baseline {signed_ci(g['baseline'])}, "
                          f"ablated {signed_ci(g['ablated'])}; ablated minus baseline {signed_ci(g['ablated_minus_baseline'])}: "
                          f"{reading(g['ablated_minus_baseline'], None, 'the gap widens', 'the gap narrows')}."]
    return lines + [""]


def same_runs(a: dict, b: dict, tag: str = "twocol") -> tuple[int, int]:
    """(seeds on which `tag`'s runs in results a and b have the same top-1 and top-5, seeds both have)."""
    mine = {r["seed"]: (r["top1"], r["top5"]) for r in a["runs"].get(tag, [])}
    theirs = {r["seed"]: (r["top1"], r["top5"]) for r in b["runs"].get(tag, [])}
    both = sorted(set(mine) & set(theirs))
    return sum(mine[s] == theirs[s] for s in both), len(both)


def subset_section(sub: dict, full: dict | None) -> list[str]:
    """The comparisons a later `bench.paper --ablations ...` run added to the full protocol's. Its
    two-column runs are the full protocol's baseline retrained: the same errors on every seed
    show that the code changed nothing the full protocol's numbers rest on."""
    names = ",".join(sub["ablations"]) or "none"
    command = f"python -m bench.paper --ablations {names}" + (" --no-onecol" if not sub["comparison"] else "")
    # An ablated net that is another net of the run (dropout_off on a config without dropout) reuses its runs.
    reused = {n for n, a in sub["ablations"].items() if a.get("ran_as", n) != n}
    trained = sum(len(r) for tag, r in sub["runs"].items() if tag not in reused)
    lines = [f"## Comparisons run on their own ({sub['_file']})", "",
             f"`{command}`: {len(sub['seeds'])} seeds, {schedule_text(sub)}, the same data and configs as the protocol "
               f"above unless said here; {env_line(sub['environment'])}; {sub['wall_s'] / 60:.1f} min for its "
               f"{trained} trainings ({sub.get('jobs', 1)} at a time, load average "
               f"{sub['load_average'][0]:.1f} at the start and {sub['load_average'][1]:.1f} at the end)."]
    if full is not None:
        same, both = same_runs(sub, full)
        if both:
            verdict = ("the same top-1 and top-5 errors on every seed: the code these runs used changed nothing "
                       "the full protocol's results above rest on" if same == both else
                       f"the same errors on only {same} of {both} seeds: the full protocol's results above are "
                       "not those of this code")
            lines[-1] += (f" Its two-column runs retrain the full protocol's baseline ({full['_file']}): {verdict}.")
    return lines + [""] + targets_line(sub) + ablation_section(sub)


def throughput_section(t: dict) -> list[str]:
    lines = [f"## Throughput ({t['_file']})", "",
             f"`{t['config']}`, batch {t['batch']}, {t['placement']}; {env_line(t['environment'])}. "
             "Median seconds per training step (forward, backward, update) on random tensors, the variants "
             "taking turns step by step; a lever's row is the two-column net with that one change.", ""]
    amps = list(dict.fromkeys(r["amp"] for r in t["results"]))
    summary = throughput_summary(t["results"], amps)
    rows = []
    for r in t["results"]:
        lever = summary.get(r["amp"], {}).get("levers_over_plain", {}).get(r["variant"])
        if "median_step_s" not in r:
            rows.append([r["variant"], r["amp"], "-", "-", "skipped: " + r["skipped"] if "skipped" in r
                         else "no step timed"])
            continue
        note = f"{lever:.3f}x the plain net's step" if lever is not None else ""
        if r.get("relu_lrn"):
            note += f" (ReLU+LRN: {r['relu_lrn']})"
        if r.get("process") == "own":
            note += " (own process)"
        if r.get("partial"):
            note += f" (cut short: {r['partial']})"
        if r["amp"].startswith("off") and "tf32" in r:
            note += f" (TF32: convolutions {r['tf32']['convolutions']}, matmuls {r['tf32']['matmuls']})"
        rows.append([r["variant"], r["amp"], f"{1000 * r['median_step_s']:.1f}", f"{r['images_per_s']:.0f}", note])
    lines += table(["variant", "precision", "ms/step", "images/s", "note"], rows)
    if t.get("not_reached"):
        lines += ["", "Not reached (the run was cut short): " + ", ".join(t["not_reached"]) + "."]
    lines += ["", "Targets (issue 15):"]
    for key, (label, sense) in TARGET_LABELS.items():
        for amp in amps:
            if key == "bf16_over_fp32_step" and amp != "bf16":
                continue
            v = summary.get(amp, {}).get(key)
            goal = TARGETS[key]
            if v is None:
                lines.append(f"- {amp}: {label}: not measured in this run (target {sense} {goal:.2f})")
                continue
            ok = v <= goal if sense == "<=" else v >= goal
            lines.append(f"- {amp}: {label} **{v:.3f}** (target {sense} {goal:.2f}: {'met' if ok else 'NOT met'})")
    for amp in amps:
        s = summary.get(amp, {})
        if "overlapped_over_serialised" in s:
            lines.append(f"- {amp}: column streams overlapped / serialised step time {s['overlapped_over_serialised']:.3f}")
    links = next((r["link_bytes_per_step"] for r in t["results"] if "link_bytes_per_step" in r), None)
    if links:
        lines += ["", "Bytes each link moved per step (forward + backward; both directions of the link): "
                  + ", ".join(f"{k} {(v['forward'] + v['backward']) / 2 ** 20:.2f} MiB" for k, v in links.items())
                  + "."]
    return lines + [""]


def e2e_section(e: dict) -> list[str]:
    where = e["machine"].get("gpu") or f"{e['machine']['cpu']}, {e['machine']['cores']} cores"
    images = e["data"]["train_images"]
    lines = [f"## End to end from JPEG files ({e['_file']})", "",
             f"{e['preset']} preset: `{e['config']}` with `{' '.join(e['overrides'])}`, batch {e['batch']}, "
             f"{e['steps']} timed steps per feed after {e['warmup']}; "
             + (f"{images} stored " if images is not None else "the set of stored ")
             + f"{e['data']['image_size']} px JPEGs (`{e['data']['path']}`"
             + ("" if images is not None else ", not made: the run was cut short before")
             + f"), {e['data']['crop']} px crops; {where}; "
             f"torch {e['environment'].get('torch')}, DALI {e['environment'].get('dali')}, "
             f"{commit_text(e['environment'])}, {e['environment'].get('date')}; load average "
             f"{e['load_average'][0]:.1f} at the start, {e['load_average'][1]:.1f} at the end.", ""]
    rows = []
    for r in e["rows"]:
        if "images_per_s" not in r:
            rows.append([r["feed"], "-", r["device"], "-", "-", "-", str(r["cpu_workers"]) + f" (skipped: {r['skipped']})"])
            continue
        rows.append([r["feed"], r.get("decode", ""), r["device"], f"{r['images_per_s']:.0f}",
                     f"{100 * r['over_synthetic']:.0f}%" if "over_synthetic" in r else "-",
                     f"{100 * r['data_wait_fraction']:.1f}%", str(r["cpu_workers"])])
    lines += table(["feed", "decode", "device", "images/s", "of the synthetic ceiling", "waiting for data",
                    "CPU workers"], rows)
    goal = e["target"]["dali_gpu_over_synthetic"]
    dali = next((r for r in e["rows"] if r["feed"] == "dali-gpu" and "over_synthetic" in r), None)
    lines += ["", f"Target (issue 14, GPU): DALI GPU decode at least {100 * goal:.0f}% of the synthetic rate: "
              + (f"**{100 * dali['over_synthetic']:.0f}%, {'met' if dali['over_synthetic'] >= goal else 'NOT met'}**"
                 if dali else "not measured in this run.")]
    return lines + [""]


def profile_section(p: dict) -> list[str]:
    tl = p["timeline"]
    where = p.get("gpu") or p["placement"]
    lines = [f"## Timeline of the two columns ({p['_file']})", "",
             f"`twocol profile`: `{p['config']}`, batch {p['batch']}, amp {p['amp']}, {where}"
             + (", column streams" if p.get("column_streams") else "")
             + f"; torch {p.get('torch')}, {commit_text(p)}"
             + (f"; load average {p['load_average'][0]:.1f}" if "load_average" in p else "")
             + f". Step {1e3 * p['median_step_s']:.2f} ms without the profiler; both columns "
             f"at once {100 * tl['both_columns_share']:.1f}% of the step. Per step, ms (median of {tl['steps']}):", ""]
    rows = [[layer] + ["" if c is None else f"{c / 1e3:.3f}" for c in cells] for layer, cells in layer_table(tl)]
    lines += table(["layer", "A forward", "A backward", "B forward", "B backward"], rows)
    m = p.get("cost_model")
    if m:
        lines += ["", f"Cost model, each column on its own device: one device with the columns in series "
                      f"{1e3 * m['one_device_serial_s']:.2f} ms predicted, {1e3 * m['measured_step_s']:.2f} ms measured"
                      + (f" ({1e3 * m['profiled_step_s']:.2f} ms in the profiled steps)" if m.get("profiled_step_s") else "")
                      + ".", ""]
        lines += table(["interconnect", "GB/s per direction", "predicted step, ms", "speed-up over one device"],
                       [[r["interconnect"], "-" if r["gbps"] is None else f"{r['gbps']:g}", f"{1e3 * r['step_s']:.2f}",
                         f"{r['speedup_over_one_device']:.2f}x"] for r in m["two_devices"]])
        lines += ["", "Assumed: " + "; ".join(m["assumptions"]) + "."]
    return lines + [""]


def kernels_section(k: dict) -> list[str]:
    gpu = k["device"].startswith("cuda")
    target = (f"Targets, over the rows past the L2 with no host-bound call: each pass at least "
              f"{KERNEL_GPU_TARGET:.0f}x torch, and each kernel at least {100 * KERNEL_GPU_COPY_FRACTION:.0f}% of "
              "the copy bandwidth (rows marked 'in L2' fit in it; a host-bound call's time is Python's "
              "dispatch, not the kernel's)." if gpu else
              f"Target: forward+backward at least {KERNEL_CPU_TARGET:.0f}x torch at conv1, N = 128, float32.")
    lines = [f"## Fused ReLU+LRN kernels ({k['_file']})", "",
             f"{k['device']}: {env_line(k['environment'])}; medians of {k['repeats']} interleaved repeats"
             + (f" ({k['timing']})" if "timing" in k else "") + ". " + target, ""]

    def pct(r, key):
        return f"{100 * r[key]:.0f}" if key in r else "-"

    def gbps(r, key):
        return f"{r[key]:.0f}" if key in r else "-"

    def moved(r):
        b = r.get("bytes_per_call")
        return f"{b['kernel_forward'] / 1e6:.1f} / {b['kernel_backward'] / 1e6:.1f}" if b else "-"

    def l2(r):
        return "-" if "fits_in_l2" not in r else ("in L2" if r["fits_in_l2"] else "past L2")

    def host(r):  # on a GPU only: on the CPU the host's time is the timing
        return ["not recorded" if "host_bound" not in r else (", ".join(r["host_bound"]) or "-")] if gpu else []

    lines += table(["layer", "dtype", "shape", "forward x", "backward x", "forward+backward x",
                    "MB moved fwd / bwd", "kernel fwd GB/s", "kernel fwd, % of copy", "kernel bwd GB/s",
                    "kernel bwd, % of copy", "L2"] + (["host-bound calls"] if gpu else []),
                   [[r["layer"], r.get("dtype", "float32"), "x".join(map(str, r["shape"])),
                     f"{r['speedup']['forward']:.1f}",
                     f"{r['speedup']['backward']:.1f}" if "backward" in r["speedup"] else "-",
                     f"{r['speedup']['forward_backward']:.1f}", moved(r), gbps(r, "kernel_forward_GBps"),
                     pct(r, "kernel_forward_fraction_of_copy"), gbps(r, "kernel_backward_GBps"),
                     pct(r, "kernel_backward_fraction_of_copy"), l2(r)] + host(r) for r in k["results"]])
    met = k.get("targets_met", {})
    lines += ["", "Targets: " + (", ".join(f"{n} **{'met' if v else 'NOT met'}**" for n, v in met.items())
                                 or "none checked in this run") + "."]
    if k.get("not_reached"):
        lines += ["", "Not reached (the run was cut short): " + ", ".join(k["not_reached"]) + "."]
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
    if "paper-subset" in found:
        lines += subset_section(found["paper-subset"], found.get("paper"))
    for kind, section in (("throughput", throughput_section), ("kernels", kernels_section), ("data", data_section),
                          ("e2e", e2e_section), ("profile", profile_section)):
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
    if p and p["comparison"]:
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
    sub = found.get("paper-subset")
    ablations = {**(sub["ablations"] if sub else {}), **(p["ablations"] if p else {})}
    if ablations:
        ax = axes[1]
        names = list(ablations)
        if names:
            ys = range(len(names))
            ms = [ablations[n]["top1_minus_baseline"] for n in names]
            ax.barh(list(ys), [m for m, _ in ms], xerr=[h or 0 for _, h in ms], capsize=4, color="tab:green",
                    label="this run")
            ax.plot([ablations[n]["paper_minus_baseline"].get("top1", float("nan")) for n in names], list(ys),
                    "rD", markersize=7, label="paper (ImageNet)")
            ax.axvline(0, color="grey", lw=0.8)
            ax.set_yticks(list(ys), [label(n) for n in names])
            ax.set_xlabel("top-1 error change, points (positive: the feature helps)")
            ax.set_title("ablations vs their baselines", fontsize=10)
            ax.legend(fontsize=8)
    ax = axes[2]
    bars = []
    for key, v in found.items():
        kind = key.split("-")[0]
        if kind == "throughput":
            amps = list(dict.fromkeys(r["amp"] for r in v["results"]))
            for amp, s in throughput_summary(v["results"], amps).items():
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
                bars.append((f"DALI GPU / synthetic\n{key}", dali["over_synthetic"], v["target"]["dali_gpu_over_synthetic"]))
        elif kind == "kernels":
            row = next((r for r in v["results"] if r["layer"] == "conv1" and r["shape"][0] == 128), None)
            if row:
                bars.append((f"kernel fwd+bwd\n{key}", row["speedup"]["forward_backward"],
                             KERNEL_GPU_TARGET if v["device"].startswith("cuda") else KERNEL_CPU_TARGET))
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
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
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
    atomic_write(md, markdown(found))
    chart(found, md.with_suffix(".png"))
    print(f"wrote {md} and {md.with_suffix('.png')} from {', '.join(v['_file'] for v in found.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
