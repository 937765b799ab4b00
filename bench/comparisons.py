"""The paper's comparisons, computed from a protocol's finished trainings (bench/training.py's
results): the two-column net against the one-GPU net, the ensemble of several two-column nets,
each ablation against the two-column net, and the net with and without dropout. Every function
here reads results and returns what the report shows; none trains anything."""
from __future__ import annotations

import itertools
import statistics

import numpy as np

from bench.stats import mean_ci, paired, resolved

# The 2012 code's own logs on the ILSVRC-2010 test set, 10-patch ("multiview"): net 145 (two
# columns) 1.614660, 0.374727, 0.169987 (layer-params-145-2010.cfg:178) and net 145-half (one
# column) 1.702802, 0.391680, 0.182287 (layer-params-145-half.cfg:100). The paper gives the
# two-column net's 37.5 / 17.0 (Table 1) and the difference, 1.7 / 1.2 (section 3.2).
PAPER = {"twocol": {"top1": 37.47, "top5": 17.00}, "onecol": {"top1": 39.17, "top5": 18.23},
         "source": "the 2012 code's logs on the ILSVRC-2010 test set, 10-patch (nets 145 and 145-half); "
                   "the paper gives the difference, 1.7% / 1.2%"}
# Section 6 and Table 2, ILSVRC-2012 validation: one CNN 40.7 / 18.2, the average of five 38.1 / 16.4.
PAPER_ENSEMBLE = {"size": 5, "single": {"top1": 40.7, "top5": 18.2}, "ensemble": {"top1": 38.1, "top5": 16.4}}
# The 10-patch test against the centre crop (section 4.1; Table 1, ILSVRC-2010): 37.5 / 17.0 vs 39.0 / 18.3.
PAPER_TEN_PATCH = {"ten_patch": {"top1": 37.5, "top5": 17.0}, "centre": {"top1": 39.0, "top5": 18.3}}


def _target(ci: list, target: float | None) -> dict:
    return {"target_half_width": target,
            "target_met": None if target is None or ci[1] is None else ci[1] <= target}


def convergence(runs: list[dict]) -> dict:
    """How each seed's training ended: epochs, the epochs after which the rate was cut, whether
    the paper's rule ended it or the epoch cap did (and then whether it was still improving),
    and its final training error, in evaluation mode and as measured during the last epoch."""
    capped = [r["seed"] for r in runs if r["ended"] == "cap" and r["improving_at_end"]]
    return {"epochs": [r["epochs"] for r in runs], "cut_after": [r["cut_after"] for r in runs],
            "ended": [r["ended"] for r in runs], "epoch_cap": runs[0]["epoch_cap"],
            "train_eval_top1": mean_ci([r["train_eval_top1"] for r in runs]),
            "train_top1_last_epoch": mean_ci([r["train_top1_by_epoch"][-1] for r in runs]),
            "capped_while_improving": capped}


def two_vs_one(twocol: list[dict], onecol: list[dict], half_width) -> dict:
    out = {}
    for k in ("top1", "top5"):
        diff = paired(twocol, onecol, k)
        out[k] = {"twocol": mean_ci([r[k] for r in twocol]), "onecol": mean_ci([r[k] for r in onecol]),
                  "onecol_minus_twocol": diff, "resolved": resolved(diff),
                  "paper_onecol_minus_twocol": round(PAPER["onecol"][k] - PAPER["twocol"][k], 2),
                  **_target(diff, getattr(half_width, k))}
    out["ten_patch_minus_centre"] = {k: paired([dict(r, x=r[f"centre_{k}"]) for r in twocol],
                                               [dict(r, x=r[k]) for r in twocol], "x") for k in ("top1", "top5")}
    out["paper_ten_patch"] = PAPER_TEN_PATCH
    out["convergence"] = {"twocol": convergence(twocol), "onecol": convergence(onecol)}
    out["paper"] = PAPER
    return out


def ensemble(twocol: list[dict], predictions: dict[int, tuple[np.ndarray, np.ndarray]], size: int) -> dict:
    """The error of the average of `size` nets' 10-patch softmax, over every choice of `size` of
    the seeds, against the single nets' (section 6: "averaging the predictions of five similar
    CNNs"). predictions: seed -> (probs, labels) on the same validation images, in one order."""
    seeds = sorted(s for s in predictions if any(r["seed"] == s for r in twocol))
    labels = predictions[seeds[0]][1]
    errors: dict[str, list[float]] = {"top1": [], "top5": [], "members_top1": [], "members_top5": []}
    single = {r["seed"]: r for r in twocol}
    for combo in itertools.combinations(seeds, size):
        probs = sum(predictions[s][0].astype(np.float64) for s in combo) / size
        top = np.argsort(-probs, axis=1, kind="stable")[:, :5]  # ties: the lower class first
        errors["top1"].append(100 * float(np.mean(top[:, 0] != labels)))
        errors["top5"].append(100 * float(np.mean(~(top == labels[:, None]).any(1))))
        for k in ("top1", "top5"):
            errors[f"members_{k}"].append(statistics.mean(single[s][k] for s in combo))
    out = {"size": size, "seeds": seeds, "choices": len(errors["top1"]), "paper": PAPER_ENSEMBLE}
    for k in ("top1", "top5"):
        gains = [e - m for e, m in zip(errors[k], errors[f"members_{k}"])]
        out[k] = {"single": mean_ci([r[k] for r in twocol]),
                  "ensemble": [statistics.mean(errors[k]), min(errors[k]), max(errors[k])],
                  # The ensemble's error minus its own members' mean error, over the choices:
                  # [mean, least, most] (the choices share seeds, so no interval is claimed).
                  "ensemble_minus_members": [statistics.mean(gains), min(gains), max(gains)]}
    return out


def epochs_to(errors: list[float], threshold: float) -> int | None:
    """First epoch whose error is at or below threshold (None: never)."""
    return next((i + 1 for i, e in enumerate(errors) if e <= threshold), None)


def speed(base_runs: list[dict], runs: list[dict], claim, classes: int) -> dict:
    """Epochs each net needs to reach a training-error threshold (as measured during training),
    paired by seed. The threshold is the paper's (the tanh claim's 25%, on CIFAR-10) when every
    baseline run gets there, else halfway between chance and the baseline nets' mean final
    training error."""
    if claim.paper_threshold is not None and all(min(r["train_top1_by_epoch"]) <= claim.paper_threshold
                                                 for r in base_runs):
        threshold, rule = claim.paper_threshold, "the paper's"
    else:
        chance = 100 * (1 - 1 / classes)
        threshold = (chance + statistics.mean(r["train_top1_by_epoch"][-1] for r in base_runs)) / 2
        rule = f"halfway between chance and the baseline ({claim.labels[0]}) nets' final training error"
    by_seed = {r["seed"]: r for r in base_runs}
    pairs = [(by_seed[r["seed"]], r) for r in runs if r["seed"] in by_seed]
    base = [epochs_to(b["train_top1_by_epoch"], threshold) for b, _ in pairs]
    ablated = [epochs_to(r["train_top1_by_epoch"], threshold) for _, r in pairs]
    reached = [(b, a) for b, a in zip(base, ablated) if b is not None and a is not None]
    return {"threshold": threshold, "threshold_rule": rule, "labels": list(claim.labels), "baseline": base,
            "ablated": ablated, "ablated_over_baseline": (statistics.mean(a for _, a in reached)
                                                          / statistics.mean(b for b, _ in reached) if reached else None),
            "paper_ablated_over_baseline": claim.paper_ratio, "paper_where": claim.paper_where}


def ablation(base: list[dict], runs: list[dict], entry, overrides: list[str], half_width, classes: int) -> dict:
    out = {"overrides": overrides, "what": entry.what, "claim": entry.claim,
           "paper_minus_baseline": entry.paper_effect, "convergence": convergence(runs)}
    for k in ("top1", "top5"):
        diff = paired(base, runs, k)
        out[f"{k}_minus_baseline"] = diff
        out[f"{k}_target"] = _target(diff, getattr(half_width, k))
    if entry.speed is not None:
        out["epochs_to_threshold"] = speed(base, runs, entry.speed, classes)
    return out


def converged_by(run: dict, margin: float) -> int:
    """The first epoch whose validation top-1 error is within `margin` points of the run's final one."""
    final = run["val_top1_by_epoch"][-1]
    return next(i + 1 for i, e in enumerate(run["val_top1_by_epoch"]) if e <= final + margin)


def dropout(with_: list[dict], without: list[dict], margin: float, half_width) -> dict:
    """The paper's dropout claim (section 4.2): without dropout the net overfits (its validation
    error minus its training split's, both in evaluation mode, grows), and dropout roughly
    doubles the iterations needed to converge."""
    def gap(r):
        return dict(r, gap=r["centre_top1"] - r["train_eval_top1"], converged=converged_by(r, margin))

    w, wo = [gap(r) for r in with_], [gap(r) for r in without]
    out = {"measure": "overfitting: the last epoch's validation top-1 (centre crop) minus the training split's "
                      "top-1 in evaluation mode (centre crop, no dropout masks), points",
           "convergence_margin": margin, "paper_without_over_with_epochs": 0.5,
           "gap": {"with": mean_ci([r["gap"] for r in w]), "without": mean_ci([r["gap"] for r in wo]),
                   "without_minus_with": paired(w, wo, "gap")},
           "epochs_to_converge": {"with": [r["converged"] for r in w], "without": [r["converged"] for r in wo],
                                  "without_over_with": statistics.mean(r["converged"] for r in wo)
                                  / statistics.mean(r["converged"] for r in w)},
           "convergence": {"with": convergence(with_), "without": convergence(without)}}
    for k in ("top1", "top5"):
        diff = paired(with_, without, k)
        out[f"{k}_without_minus_with"] = diff
        out[f"{k}_target"] = _target(diff, getattr(half_width, k))
        out[k] = {"with": mean_ci([r[k] for r in with_]), "without": mean_ci([r[k] for r in without])}
    return out
