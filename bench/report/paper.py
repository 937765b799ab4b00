"""The report's section on the paper's comparisons (bench.paper's results): what the protocol is
and how its nets differ from the paper's, then the headline (two columns against one, top-1 and
top-5), how every net converged, the ensemble, each ablation and the dropout claim."""
from __future__ import annotations

from pathlib import Path

from bench.report.format import ci, env_line, reading, signed_ci, table, target
from twocol.ablations import ABLATIONS
from twocol.config import load_config
from twocol.monitor import duration

ROOT = Path(__file__).resolve().parents[2]
# The paper's own nets, against which a protocol's nets are listed key by key.
PAPER_CONFIGS = {"twocol": "configs/alexnet_paper.yaml", "onecol": "configs/alexnet_onecol.yaml"}
# Keys that say how a run is kept or logged, not what is trained.
NOT_THE_NET = ("name", "description", "train.log_every", "train.out_dir", "train.seed", "data.workers",
               "data.loader", "data.decoder", "data.prefetch", "data.verify_files", "data.hw_decoder_load",
               "data.max_bad_fraction", "data.synth_classes", "data.synth_per_class", "optim.foreach")


def label(name: str) -> str:
    """An ablation's name in the report (twocol/ablations.py); a name it no longer has, as it is."""
    return ABLATIONS[name].label if name in ABLATIONS else name


def directions(name: str) -> tuple[str, str]:
    return ABLATIONS[name].directions if name in ABLATIONS else ("error rises without it", "error falls without it")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and all(isinstance(x, str) for x in v) and k not in ("layer_std",):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differences(net: dict, paper_config: str) -> list[str]:
    """Every key in which a net (its resolved config) differs from the paper's, as 'key: paper -> net'."""
    paper = _flat(load_config(ROOT / paper_config).to_dict())
    mine = _flat(net)
    return [f"`{k}` {paper.get(k)!r} -> {mine.get(k)!r}" for k in sorted(set(paper) | set(mine))
            if paper.get(k) != mine.get(k) and not any(k == n or k.startswith(n + ".") for n in NOT_THE_NET)]


def seeds_above(runs: dict, tag: str, base: str, key: str = "top1") -> str:
    """'9 / 10': on how many seeds `tag`'s error is above `base`'s (ties count as not)."""
    if tag not in runs or base not in runs:
        return "-"
    by_seed = {r["seed"]: r[key] for r in runs[base]}
    pairs = [(r[key], by_seed[r["seed"]]) for r in runs[tag] if r["seed"] in by_seed]
    return f"{sum(a > b for a, b in pairs)} / {len(pairs)}"


def convergence_row(name: str, c: dict) -> list[str]:
    epochs = c["epochs"]
    plateau = sum(e == "plateau" for e in c["ended"])
    cuts = sorted({len(x) for x in c["cut_after"]})
    flag = (f"**{len(c['capped_while_improving'])} hit the cap still improving** (seeds "
            f"{', '.join(map(str, c['capped_while_improving']))})" if c["capped_while_improving"] else "none")
    return [name, f"{min(epochs)}-{max(epochs)} (mean {sum(epochs) / len(epochs):.1f})",
            f"{plateau} / {len(epochs)}", f"{c['epoch_cap']}", "/".join(map(str, cuts)),
            ci(c["train_eval_top1"]), ci(c["train_top1_last_epoch"]), flag]


CONVERGENCE_HEAD = ["net", "epochs (least-most)", "ended by the paper's rule", "epoch cap", "rate cuts",
                    "final training top-1, eval mode", "training top-1 during the last epoch",
                    "at the cap with its last epoch its best"]


def about(r: dict) -> list[str]:
    p = r["protocol"]
    sittings = r.get("sittings", [])
    nets = r.get("nets", {})
    lines = [f"## The paper's experiments: protocol `{p['name']}` version {p['version']} ({r['_file']})", "",
             r.get("about", "").strip(), ""]
    if r.get("scale"):
        lines += ["**How the scale was chosen.** " + r["scale"].strip(), ""]
    for key, d in r.get("data", {}).items():
        synthetic = d.get("params", {}).get("kind") == "synthetic"
        lines.append(f"- **Data `{key}`**: {'the synthetic set' if synthetic else 'the prepared set'} `{d['path']}`: "
                     f"{d['classes']} classes, {d['train']:,} training and {d['val']:,} validation images of "
                     f"{d['image_size']} px.")
    for tag, cfg in nets.items():
        diffs = differences(cfg, PAPER_CONFIGS[tag])
        lines.append(f"- **{'Two-column' if tag == 'twocol' else 'One-column'} net**, every way it differs from "
                     f"the paper's (`{PAPER_CONFIGS[tag]}`): " + ("; ".join(diffs) if diffs else "none") + ".")
    wall = sum(s["wall_s"] for s in sittings)
    lines += [f"- **Runs**: seeds 0..{p['seeds'] - 1}" + (" (a quick look: fewer seeds than the protocol's)"
                                                          if p.get("quick_look") else "")
              + f", {r['trainings'].get('done', 0)} of {r['trainings']['total']} trainings done, {r['jobs']} at a "
              f"time ({r['placement']}" + (f", {r['threads']} thread(s) each" if r.get("threads") else "")
              + f"); {duration(wall)} of wall time over {len(sittings)} sitting(s)"
              + "".join(f"; sitting {i + 1}: {s['started']}, commit {s['commit']}, {duration(s['wall_s'])}, "
                        f"{s['trainings']} trained, load average {s['load_average'][0]:.1f} -> "
                        f"{(s['load_average'][1] or 0):.1f}" for i, s in enumerate(sittings)) + ".",
              f"- **Machine**: {env_line(r['environment'])}. Training is bit-reproducible on one CPU model, not "
              "across them: the errors, not only the times, are this machine's.",
              f"- **Protocol file**: `{p['file']}` (sha256 {p['protocol_sha256'][:12]}...; configs "
              + ", ".join(f"`{c}` {h[:12]}..." for c, h in p["configs_sha256"].items()) + ").", ""]
    if r.get("not_reached"):
        lines += ["Not yet complete: " + ", ".join(r["not_reached"]) + " (the bench is still running, or was "
                  "stopped: the same command continues).", ""]
    return lines


def headline(r: dict) -> list[str]:
    c = r["comparisons"].get("two_vs_one")
    if c is None:
        return []
    runs, paper = r["runs"], c["paper"]
    lines = ["### Two columns against one (the paper's 1.7% top-1 / 1.2% top-5)", "",
             f"Error in %, 10-patch test on the validation split, mean ± 95% t half-width over "
             f"{len(runs['twocol'])} seeds; the difference is paired by seed. Paper: {paper['source']}.", ""]
    rows = []
    for k, name in (("top1", "top-1"), ("top5", "top-5")):
        x = c[k]
        rows.append([name, ci(x["twocol"]), ci(x["onecol"]), signed_ci(x["onecol_minus_twocol"]),
                     f"{paper['twocol'][k]:.2f} / {paper['onecol'][k]:.2f}", f"{x['paper_onecol_minus_twocol']:+.2f}",
                     reading(x["onecol_minus_twocol"], x["paper_onecol_minus_twocol"],
                             "the one-column net errs more", "the one-column net errs less"),
                     target(x["onecol_minus_twocol"], x["target_half_width"]), seeds_above(runs, "onecol", "twocol", k)])
    lines += table(["error", "two-column", "one-column", "one minus two", "2012 logs two / one", "paper diff",
                    "reading", "half-width vs target", "seeds one-column errs more"], rows)
    two, one = runs["twocol"][0], runs["onecol"][0]
    fewer = 100 * (1 - one["params"] / two["params"])
    lines += ["", f"Parameters: two-column {two['params']:,}, one-column {one['params']:,} ({abs(fewer):.1f}% "
                  f"{'fewer' if fewer >= 0 else 'more'}; the paper's nets: 59.80M vs 60.97M, 1.9% fewer).", "",
              "How each net converged (the paper's rule: the rate divided by 10 when the validation error stops "
              "improving, at most three times; the run ends where a fourth cut would come, or at the cap):", ""]
    lines += table(CONVERGENCE_HEAD, [convergence_row("two-column", c["convergence"]["twocol"]),
                                      convergence_row("one-column", c["convergence"]["onecol"])])
    t = c["ten_patch_minus_centre"]
    pt = c["paper_ten_patch"]
    lines += ["", f"The 10-patch test against the centre crop (two-column net, paired): top-1 {signed_ci(t['top1'])}, "
                  f"top-5 {signed_ci(t['top5'])} points (paper, ILSVRC-2010: "
                  f"{pt['ten_patch']['top1'] - pt['centre']['top1']:+.1f} / {pt['ten_patch']['top5'] - pt['centre']['top5']:+.1f}).", ""]
    return lines


def ensemble_section(r: dict) -> list[str]:
    e = r["comparisons"].get("ensemble")
    if e is None:
        return []
    pp = e["paper"]
    lines = [f"### The average of {e['size']} two-column nets (the paper's ensemble claim)", "",
             f"The 10-patch softmax of {e['size']} seeds' two-column nets averaged, for each of the {e['choices']} "
             f"choices of {e['size']} of the seeds {', '.join(map(str, e['seeds']))} (no training of its own). "
             f"Paper (ILSVRC-2012 validation): one CNN {pp['single']['top1']} / {pp['single']['top5']}, the average of "
             f"five {pp['ensemble']['top1']} / {pp['ensemble']['top5']}.", ""]
    rows = []
    for k, name in (("top1", "top-1"), ("top5", "top-5")):
        x = e[k]
        m, lo, hi = x["ensemble"]
        g, glo, ghi = x["ensemble_minus_members"]
        rows.append([name, ci(x["single"]), f"{m:.2f} ({lo:.2f}-{hi:.2f})", f"{g:+.2f} ({glo:+.2f} to {ghi:+.2f})",
                     f"{pp['ensemble'][k] - pp['single'][k]:+.1f}"])
    lines += table(["error", "one net (mean ± 95%)", f"average of {e['size']} (mean, least-most over the choices)",
                    "average minus its members' mean (mean, range)", "paper"], rows)
    return lines + [""]


def ablations_section(r: dict) -> list[str]:
    abl = r["comparisons"].get("ablations")
    if abl is None:
        return []
    runs = r["runs"]
    lines = ["### Ablations, each against the two-column net of the same seed", "",
             "Change in 10-patch error, ablated minus baseline (points; positive: what was removed helps). Each is "
             "`twocol train --ablation NAME` (twocol/ablations.py); the overrides it applies are listed below.", ""]
    rows = []
    for name, a in abl.items():
        effect = a.get("paper_minus_baseline", {})
        rows.append([label(name), signed_ci(a["top1_minus_baseline"]), signed_ci(a["top5_minus_baseline"]),
                     a["claim"], reading(a["top1_minus_baseline"], effect.get("top1"), *directions(name)),
                     target(a["top1_minus_baseline"], a["top1_target"]["target_half_width"]),
                     seeds_above(runs, name, a.get("baseline", "twocol"))])
    lines += table(["ablation", "top-1 change", "top-5 change", "paper's claim", "reading (top-1)",
                    "half-width vs target", "seeds with more top-1 error"], rows)
    lines += ["", "How the ablated nets converged:", ""]
    lines += table(CONVERGENCE_HEAD, [convergence_row(label(n), a["convergence"]) for n, a in abl.items()])
    lines.append("")
    for name, a in abl.items():
        lines.append(f"- `--ablation {name}`: `{' '.join(o for o in a['overrides'] if o not in r['common'])}`: "
                     f"{a['what']}")

    def fmt(v):
        return ", ".join("never" if e is None else str(e) for e in v)

    for name, a in abl.items():
        s = a.get("epochs_to_threshold")
        if s:
            base, mine = s["labels"]
            ratio = s["ablated_over_baseline"]
            lines += ["", f"{base} vs {mine}, epochs to {s['threshold']:.1f}% training top-1 error (as measured during "
                          f"training, per seed): {base} {fmt(s['baseline'])}; {mine} {fmt(s['ablated'])}; {mine} / {base} "
                          + (f"**{ratio:.2f}x**" if ratio is not None else "not measurable (a net never got there)")
                          + f" (paper: {s['paper_ablated_over_baseline']:g}x, {s['paper_where']}; the threshold here: "
                          f"{s['threshold_rule']})."]
    return lines + [""]


def dropout_section(r: dict) -> list[str]:
    d = r["comparisons"].get("dropout")
    if d is None:
        return []
    data = r["data"][r["dropout_data"]] if r.get("dropout_data") else None
    where = (f" on the data set `{r['dropout_data']}` ({data['train']:,} training images)" if data else "")
    g, conv = d["gap"], d["epochs_to_converge"]
    lines = ["### Dropout (section 4.2)", "",
             f"The two-column net with its dropout (0.5 after fc6 and fc7) and without{where}, the same seeds. "
             "The paper: without dropout the net overfits substantially, and dropout roughly doubles the iterations "
             "needed to converge.", ""]
    rows = [[name, ci(d[k]["with"]), ci(d[k]["without"]), signed_ci(d[f"{k}_without_minus_with"]),
             reading(d[f"{k}_without_minus_with"], None, "error rises without dropout", "error falls without dropout"),
             target(d[f"{k}_without_minus_with"], d[f"{k}_target"]["target_half_width"])]
            for k, name in (("top1", "top-1"), ("top5", "top-5"))]
    lines += table(["10-patch error", "with dropout", "without", "without minus with", "reading",
                    "half-width vs target"], rows)
    ratio = conv["without_over_with"]
    lines += ["", f"- **Overfitting** ({d['measure']}): with dropout {signed_ci(g['with'])}, without "
                  f"{signed_ci(g['without'])}; without minus with {signed_ci(g['without_minus_with'])}: "
                  f"{reading(g['without_minus_with'], 1.0, 'the net overfits more without dropout', 'the net overfits less without dropout')}.",
              f"- **Epochs to converge** (to within {d['convergence_margin']:g} points of the net's own final validation "
              f"top-1, per seed): with dropout {', '.join(map(str, conv['with']))}; without "
              f"{', '.join(map(str, conv['without']))}; without / with **{ratio:.2f}x** (paper: about "
              f"{d['paper_without_over_with_epochs']:g}x).", ""]
    lines += table(CONVERGENCE_HEAD, [convergence_row("with dropout", d["convergence"]["with"]),
                                      convergence_row("without", d["convergence"]["without"])])
    return lines + [""]


def per_seed(r: dict) -> list[str]:
    runs = r.get("runs", {})
    tags = [t for t in runs if runs[t]]
    if not tags:
        return []
    seeds = sorted({x["seed"] for t in tags for x in runs[t]})
    by = {t: {x["seed"]: x for x in runs[t]} for t in tags}

    def cell(t, s):
        x = by[t].get(s)
        return "" if x is None else f"{x['top1']:.2f} / {x['top5']:.2f} ({x['epochs']})"

    lines = ["Every training, 10-patch top-1 / top-5 (epochs):", ""]
    lines += table(["net"] + [f"seed {s}" for s in seeds], [[label(t)] + [cell(t, s) for s in seeds] for t in tags])
    return lines + [""]


def section(r: dict) -> list[str]:
    if "protocol" not in r:
        return legacy_section(r)
    return (about(r) + headline(r) + ensemble_section(r) + ablations_section(r) + dropout_section(r)
            + per_seed(r))


def legacy_section(r: dict) -> list[str]:
    """Results from before protocol files (bench.paper's CPU preset, tiny nets without dropout):
    their headline and ablations, briefly."""
    c, abl = r.get("comparison") or {}, r.get("ablations") or {}
    lines = [f"## The paper's comparisons, before protocol files ({r['_file']})", "",
             f"{len(r.get('seeds', []))} seeds of `{(r.get('configs') or {}).get('twocol')}`, "
             f"{r.get('epochs')} epochs; {env_line(r.get('environment', {}))}.", ""]
    rows = [[name, signed_ci(c[k]["onecol_minus_twocol"])] for k, name in (("top1", "top-1"), ("top5", "top-5"))
            if k in c]
    rows += [[label(n), signed_ci(a["top1_minus_baseline"])] for n, a in abl.items()]
    return lines + table(["comparison", "difference, points (one minus two; ablated minus baseline)"], rows) + [""]
