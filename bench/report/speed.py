"""The report's sections on speed: training throughput, the fused kernels, the data loaders,
training end to end from JPEG files, and the profiler's timeline of the two columns."""
from __future__ import annotations

from bench.ratios import throughput_met, throughput_summary
from bench.targets import DATA_CPU, KERNELS_CPU, KERNELS_GPU, THROUGHPUT as TARGETS, THROUGHPUT_UPPER
from bench.report.format import commit_text, env_line, table
from twocol.timeline import layer_table

KERNEL_CPU_TARGET = KERNELS_CPU["forward_backward_speedup_at_least_10x"]
KERNEL_GPU_TARGET = KERNELS_GPU["every_pass_at_least_5x_torch"]
KERNEL_GPU_COPY_FRACTION = KERNELS_GPU["kernels_at_least_80pct_of_copy_bandwidth_past_l2"]
DATA_TARGET = DATA_CPU["dali_over_torch"]
TARGET_LABELS = {"twocol_over_grouped": "two-column / grouped step time",
                 "twocol_over_torchvision_images_per_s": "two-column / torchvision AlexNet images/s",
                 "bf16_over_fp32_step": "bf16 / fp32 step time",
                 "twocol_over_grouped_graphed": "two-column / grouped step time, CUDA graphs",
                 "twocol_over_torchvision_images_per_s_graphed": "two-column / torchvision AlexNet images/s, CUDA graphs"}


def throughput_section(t: dict) -> list[str]:
    lines = [f"## Throughput ({t['_file']})", "",
             f"`{t['config']}`, batch {t['batch']}, {t['placement']}; {env_line(t['environment'])}. "
             "Median seconds per training step (forward, backward, update) on random tensors, the variants "
             "taking turns step by step; a lever's row is the two-column net with that one change.", ""]
    amps = list(dict.fromkeys(r["amp"] for r in t["rows"]))
    summary = throughput_summary(t["rows"], amps)
    met = throughput_met(summary)
    rows = []
    for r in t["rows"]:
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
    lines += ["", "Targets:"]
    for key, label in TARGET_LABELS.items():
        sense = "<=" if key in THROUGHPUT_UPPER else ">="
        for amp in amps:
            if key == "bf16_over_fp32_step" and amp != "bf16":
                continue
            v = summary.get(amp, {}).get(key)
            goal = TARGETS[key]
            if v is None:
                lines.append(f"- {amp}: {label}: not measured in this run (target {sense} {goal:.2f})")
                continue
            ok = met[f"{amp}: {key}"]
            lines.append(f"- {amp}: {label} **{v:.3f}** (target {sense} {goal:.2f}: {'met' if ok else 'NOT met'})")
    for amp in amps:
        s = summary.get(amp, {})
        if "overlapped_over_serialised" in s:
            lines.append(f"- {amp}: column streams overlapped / serialised step time {s['overlapped_over_serialised']:.3f}")
    links = next((r["link_bytes_per_step"] for r in t["rows"] if "link_bytes_per_step" in r), None)
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
    goal = e["targets"]["dali_gpu_over_synthetic"]
    dali = next((r for r in e["rows"] if r["feed"] == "dali-gpu" and "over_synthetic" in r), None)
    lines += ["", f"Target (GPU): DALI GPU decode at least {100 * goal:.0f}% of the synthetic rate: "
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
                     pct(r, "kernel_backward_fraction_of_copy"), l2(r)] + host(r) for r in k["rows"]])
    met = k.get("met", {})
    lines += ["", "Targets: " + (", ".join(f"{n} **{'met' if v else 'NOT met'}**" for n, v in met.items())
                                 or "none checked in this run") + "."]
    if k.get("not_reached"):
        lines += ["", "Not reached (the run was cut short): " + ", ".join(k["not_reached"]) + "."]
    return lines + [""]


def data_section(d: dict) -> list[str]:
    lines = [f"## Data loaders ({d['_file']})", "",
             f"{d['device']}, {d['workers']} workers, batch {d['batch']}: {env_line(d['environment'])}; "
             f"medians of {d['repeats']} epochs ({d['what']}). Target on the CPU: DALI at least "
             f"{DATA_TARGET}x the torch + Pillow loader.", ""]
    lines += table(["stored -> crop", "DALI images/s", "torch images/s", "DALI / torch", "target"],
                   [[f"{r['stored']} -> {r['crop']}", f"{r['median']['dali']:.0f}", f"{r['median']['torch']:.0f}",
                     f"{r['dali_over_torch']:.2f}",
                     ("met" if r["dali_over_torch"] >= DATA_TARGET else "NOT met") if d["device"] == "cpu" else "-"]
                    for r in d["rows"]])
    return lines + [""]
