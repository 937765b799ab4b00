"""Activation + local response normalisation (LRN) as one op.

The paper's LRN (section 3.3):
    b[c] = a[c] / (k + alpha * sum_{j=max(0,c-n/2)}^{min(C-1,c+n/2)} a[j]^2) ^ beta
`alpha_convention="sum"` uses alpha exactly as written there. `"mean"` divides alpha by n
first, as the 2012 code, Caffe and torch.nn.LocalResponseNorm do; so the paper's
alpha=1e-4 ("sum") equals torch.nn.LocalResponseNorm(size=5, alpha=5e-4, beta=0.75, k=2).

The functions here are the pure-PyTorch reference: any dtype (float64 in tests), any device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ORDERS = ("relu_lrn", "lrn_relu")
CONVENTIONS = ("sum", "mean")


def effective_alpha(alpha: float, size: int, alpha_convention: str) -> float:
    """The coefficient that multiplies the plain windowed sum of squares."""
    if alpha_convention not in CONVENTIONS:
        raise ValueError(f"alpha_convention must be one of {CONVENTIONS}, got {alpha_convention!r}")
    return alpha / size if alpha_convention == "mean" else alpha


def lrn_scale_reference(x: torch.Tensor, size: int, k: float, alpha: float, alpha_convention: str) -> torch.Tensor:
    """k + alpha_eff * (sum of x^2 over a window of `size` channels centred on each channel)."""
    half = size // 2
    sq = F.pad(x * x, (0, 0, 0, 0, half, half))  # zero channels beyond both edges
    channels = x.shape[1]
    window = sum(sq[:, j : j + channels] for j in range(size))
    return k + effective_alpha(alpha, size, alpha_convention) * window


def lrn_reference(x, size=5, k=2.0, alpha=1e-4, beta=0.75, alpha_convention="sum"):
    if x.dim() != 4:
        raise ValueError(f"LRN expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    return x / lrn_scale_reference(x, size, k, alpha, alpha_convention) ** beta


def relu_lrn_reference(x, size=5, k=2.0, alpha=1e-4, beta=0.75, order="relu_lrn", alpha_convention="sum"):
    """ReLU then LRN (the paper) or LRN then ReLU (the 2012 code's layer 1)."""
    if order == "relu_lrn":
        return lrn_reference(torch.relu(x), size, k, alpha, beta, alpha_convention)
    if order == "lrn_relu":
        return torch.relu(lrn_reference(x, size, k, alpha, beta, alpha_convention))
    raise ValueError(f"order must be one of {ORDERS}, got {order!r}")


def relu_lrn(x, size=5, k=2.0, alpha=1e-4, beta=0.75, order="relu_lrn", alpha_convention="sum"):
    """The model's entry point for ReLU+LRN."""
    return relu_lrn_reference(x, size, k, alpha, beta, order, alpha_convention)


def spatial_norm(x: torch.Tensor, size: int = 5, scale: float = 1e-3, power: float = 0.75) -> torch.Tensor:
    """The 2012 code's "rnorm" layer: each channel divided by (1 + scale/size^2 * sum of x^2
    over a size x size spatial window, zero-padded)^power. cuda-convnet divides the scale by
    size^2, the spatial counterpart of LRN's alpha/n; an average pool gives exactly that."""
    mean_sq = F.avg_pool2d(x * x, size, stride=1, padding=size // 2, count_include_pad=True)
    return x / (1.0 + scale * mean_sq) ** power
