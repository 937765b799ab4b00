"""Activation + local response normalisation (LRN) as one op.

The paper's LRN (section 3.3):
    b[c] = a[c] / (k + alpha * sum_{j=max(0,c-n/2)}^{min(C-1,c+n/2)} a[j]^2) ^ beta
`alpha_convention="sum"` uses alpha exactly as written there. `"mean"` divides alpha by n
first, as the 2012 code, Caffe and torch.nn.LocalResponseNorm do; so the paper's
alpha=1e-4 ("sum") equals torch.nn.LocalResponseNorm(size=5, alpha=5e-4, beta=0.75, k=2).

The *_reference functions are the pure-PyTorch reference: any dtype (float64 in tests), any
device. `relu_lrn` runs the fused kernels of kernels/ (torch.ops.twocol.relu_lrn, built into
twocol._C by setup.py) when they are built and support the input, and the reference
otherwise. TWOCOL_KERNELS=reference|fused (or backend=) forces one; "fused" raises where the
kernels cannot run. Importing this module also registers the ops' fake kernels, so that
torch.compile and FakeTensor tracing see through torch.ops.twocol.*.
"""
from __future__ import annotations

import importlib
import os
import warnings

import torch
import torch.nn.functional as F

ORDERS = ("relu_lrn", "lrn_relu")
CONVENTIONS = ("sum", "mean")
BACKENDS = ("auto", "fused", "reference")
BACKEND_ENV = "TWOCOL_KERNELS"

# dtypes each device's fused kernels take.
FUSED_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
}


def cuda_max_size(dtype: torch.dtype) -> int:
    """The widest window the CUDA backward kernel's shared memory holds (cuda_max_size in
    kernels/relu_lrn_launch.h; a test checks they agree): float64 accumulates in double, the
    other dtypes in float."""
    return 127 if dtype == torch.float64 else 255


def _load_kernels() -> str | None:
    """Import twocol._C, which registers torch.ops.twocol.*; None, or why it is unavailable."""
    try:
        # import_module, not `from . import _C`: a missing module must raise
        # ModuleNotFoundError naming twocol._C, not ImportError naming twocol.
        importlib.import_module(f"{__package__}._C")
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}._C":
            raise
        return "twocol._C is not built (make install, or pip install --no-build-isolation -e .)"
    except ImportError as e:
        # Built, but not loadable (e.g. against another torch): say so rather than run slowly.
        why = f"twocol._C is built but does not load ({e}); rebuild it with make install"
        warnings.warn(f"{why}; using the reference ReLU+LRN", RuntimeWarning, stacklevel=2)
        return why
    return None


def _register_fake_kernels() -> None:
    """Shapes and dtypes of the twocol ops' results, without computing them: what FakeTensor
    (torch.compile, torch.library.opcheck) runs in place of the C++ kernels."""

    @torch.library.register_fake("twocol::relu_lrn")
    def _relu_lrn(x, size, k, alpha, beta, relu_first):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake("twocol::relu_lrn_backward")
    def _relu_lrn_backward(grad, x, size, k, alpha, beta, relu_first):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    # The raw kernels return nothing; they write into buffers the caller allocated.
    @torch.library.register_fake("twocol::relu_lrn_forward_into")
    def _forward_into(x, size, k, alpha, beta, relu_first, out):
        return None

    @torch.library.register_fake("twocol::relu_lrn_backward_into")
    def _backward_into(grad, x, size, k, alpha, beta, relu_first, grad_input):
        return None


KERNELS_UNAVAILABLE = _load_kernels()
if KERNELS_UNAVAILABLE is None:
    _register_fake_kernels()
# Device types this build has kernels for, looked up once: a plain set keeps relu_lrn
# traceable by torch.compile (dynamo cannot trace the dispatcher query itself).
KERNEL_DEVICES = frozenset(
    device for device in FUSED_DTYPES if KERNELS_UNAVAILABLE is None
    and torch._C._dispatch_has_kernel_for_dispatch_key("twocol::relu_lrn_forward_into",
                                                       device.upper()))


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


def kernel_backend() -> str:
    """The backend TWOCOL_KERNELS asks for: auto (the default), fused or reference."""
    backend = os.environ.get(BACKEND_ENV, "auto") or "auto"
    if backend not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV} must be one of {BACKENDS}, got {backend!r}")
    return backend


def fused_unsupported(x: torch.Tensor, size: int, k: float, alpha_eff: float) -> str | None:
    """Why the fused kernels cannot compute this call, or None when they can."""
    if KERNELS_UNAVAILABLE:
        return KERNELS_UNAVAILABLE
    if x.dim() != 4:
        return f"they take (N, C, H, W) tensors, got shape {tuple(x.shape)}"
    if size < 1 or size % 2 == 0:
        return f"they take an odd window size, got {size}"
    if not (k > 0 and alpha_eff >= 0):
        return f"they need k > 0 and alpha >= 0, got k={k}, alpha={alpha_eff}"
    device = x.device.type
    if device not in KERNEL_DEVICES:
        return f"this build has no {device} kernels"
    if x.dtype not in FUSED_DTYPES[device]:
        return f"{device} kernels take {FUSED_DTYPES[device]}, got {x.dtype}"
    if device == "cuda" and size > cuda_max_size(x.dtype):
        return f"cuda kernels take windows up to {cuda_max_size(x.dtype)} for {x.dtype}, got {size}"
    return None


def resolve_backend(x, size=5, k=2.0, alpha=1e-4, alpha_convention="sum", backend=None) -> str:
    """What relu_lrn runs for these arguments, "fused" or "reference". backend=None reads
    TWOCOL_KERNELS; "fused" raises if the kernels cannot run this call."""
    backend = backend or kernel_backend()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return "reference"
    why_not = fused_unsupported(x, size, k, effective_alpha(alpha, size, alpha_convention))
    if why_not is None:
        return "fused"
    if backend == "fused":
        raise RuntimeError(f"fused ReLU+LRN requested but the kernels cannot run: {why_not}")
    return "reference"


def relu_lrn(x, size=5, k=2.0, alpha=1e-4, beta=0.75, order="relu_lrn", alpha_convention="sum",
             backend=None):
    """The model's entry point for ReLU+LRN: the fused kernels where they can run (contiguous
    NCHW output whatever the input layout), else the reference; see resolve_backend."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if resolve_backend(x, size, k, alpha, alpha_convention, backend) == "fused":
        alpha_eff = effective_alpha(alpha, size, alpha_convention)
        return torch.ops.twocol.relu_lrn(x, size, k, alpha_eff, beta, order == "relu_lrn")
    return relu_lrn_reference(x, size, k, alpha, beta, order, alpha_convention)


def spatial_norm(x: torch.Tensor, size: int = 5, scale: float = 1e-3, power: float = 0.75) -> torch.Tensor:
    """The 2012 code's "rnorm" layer: each channel divided by (1 + scale/size^2 * sum of x^2
    over a size x size spatial window, zero-padded)^power. cuda-convnet divides the scale by
    size^2, the spatial counterpart of LRN's alpha/n; an average pool gives exactly that."""
    mean_sq = F.avg_pool2d(x * x, size, stride=1, padding=size // 2, count_include_pad=True)
    return x / (1.0 + scale * mean_sq) ** power
