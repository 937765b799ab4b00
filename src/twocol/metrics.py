"""What a run measures besides its loss: top-1/top-5 mistakes and how colour-specific each
column's conv1 kernels are (the paper's section 6.1 and Figure 3: one column's kernels came out
largely colour-agnostic, the other's largely colour-specific). The trainer logs both; the
figures of viz/ draw them."""
from __future__ import annotations

import torch

# Key under which a training log record carries column_scores(net) (read by `viz curve`).
COLOUR_KEY = "colour"


def topk_errors(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Numbers of top-1 and top-5 mistakes in a batch, as tensors on the scores' device (so a
    training step need not wait for the GPU to read them)."""
    k = min(5, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    labels = labels.to(top.device).view(-1, 1)
    return (top[:, :1] != labels).all(1).sum(), (top != labels).all(1).sum()


def colour_specialisation(weight: torch.Tensor) -> torch.Tensor:
    """Per kernel, the share of its energy that is not grey.

    weight: (K, 3, h, w), a conv1 weight. For kernel k, its grey part g_k has, at every
    pixel, the mean of the kernel's three channel values there, copied to all three
    channels; the rest, c_k = w_k - g_k, is orthogonal to g_k, so
    ||w_k||^2 = ||g_k||^2 + ||c_k||^2 and the score is

        s_k = ||c_k||^2 / ||w_k||^2 = 1 - ||g_k||^2 / ||w_k||^2,   in [0, 1].

    s = 0 for a grey kernel (equal channels everywhere); s = 2/3 for a kernel that lives in
    one channel only (grey part is a third of it, carrying 1/3 of its energy); s = 1 for an
    opponent-colour kernel whose channels sum to zero at every pixel (e.g. red minus green).
    An all-zero kernel scores 0. A kernel of independent random weights scores about 2/3
    (two of the three directions of RGB space are colour), so at initialisation both columns
    sit near 2/3; specialisation shows as one column moving towards 0 and the other staying
    high. Returns K float32 values on the CPU."""
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected a (K, 3, h, w) conv1 weight, got shape {tuple(weight.shape)}")
    w = weight.detach().to("cpu", torch.float64)
    grey = w.mean(1, keepdim=True)
    total = w.pow(2).sum((1, 2, 3))
    colour = (w - grey).pow(2).sum((1, 2, 3))
    score = torch.where(total > 0, colour / total.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    return score.float()


def column_scores(net) -> dict[str, dict[str, float]]:
    """{"A": {"mean", "std", "kernels"}, "B": {...}}: colour_specialisation of each column's
    conv1 kernels, summarised. std is the spread over the column's kernels (population std,
    not an estimate of anything). Reads the weights only: no forward pass, no state change."""
    out = {}
    for name, col in net.columns():
        s = colour_specialisation(col.conv1.weight)
        out[name] = {"mean": s.mean().item(), "std": s.std(correction=0).item(), "kernels": s.numel()}
    return out
