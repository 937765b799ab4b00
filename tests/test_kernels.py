"""The fused ReLU+LRN kernels (kernels/, twocol._C) against the float64 reference in twocol.ops.

CPU tests need the extension built (make install); they fail, not skip, without it, since the
model is meant to run on it. CUDA cases skip without a GPU: bench/gpu_check.sh runs this file
on a GPU machine. The nvcc test compiles the CUDA kernels here, on a machine without a GPU.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch.utils import cpp_extension

from conftest import config
from twocol import ops, sim
from twocol.devices import Placement
from twocol.model import build_model

ROOT = Path(__file__).resolve().parents[1]

CUDA = pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device (bench/gpu_check.sh runs these on a GPU)"))
DEVICES = ["cpu", CUDA]

# (size, k, alpha, beta): the paper's, beta = 0.75 with other sizes (the sqrt path), other betas
# (the pow path), a window of one channel, and windows wider than the channels.
PARAMS = [(5, 2.0, 1e-4, 0.75), (3, 1.0, 0.3, 0.5), (7, 0.5, 0.05, 1.3), (1, 1.5, 0.2, 0.75),
          (9, 2.0, 0.02, 0.75)]


def fused(x, size, k, alpha, beta, order, convention="sum"):
    return ops.relu_lrn(x, size, k, alpha, beta, order, convention, backend="fused")


def reference(x, size, k, alpha, beta, order, convention="sum"):
    return ops.relu_lrn_reference(x.double(), size, k, alpha, beta, order, convention)


def inputs(shape, device, dtype=torch.float64, alpha=0.1):
    """Activations spread so that alpha * (sum of squares) is comparable to k: with a tiny
    window term the gradient's cross term would hide any error in it. The paper's alpha needs
    large activations, as conv1's are."""
    scale = 30.0 if alpha < 1e-3 else 3.0
    return (torch.randn(shape, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def is_fused(y):
    return y.grad_fn is not None and "ReluLrnFunction" in y.grad_fn.name()


def test_extension_is_built_and_the_default_backend_is_fused(monkeypatch):
    monkeypatch.delenv(ops.BACKEND_ENV, raising=False)
    assert ops.KERNELS_UNAVAILABLE is None, ops.KERNELS_UNAVAILABLE
    x = inputs((2, 6, 4, 4), "cpu", torch.float32).requires_grad_()
    assert ops.resolve_backend(x) == "fused"
    assert is_fused(ops.relu_lrn(x))


def test_the_environment_forces_a_backend(monkeypatch):
    x = inputs((2, 6, 4, 4), "cpu", torch.float32).requires_grad_()
    monkeypatch.setenv(ops.BACKEND_ENV, "reference")
    y = ops.relu_lrn(x)
    assert not is_fused(y)
    monkeypatch.setenv(ops.BACKEND_ENV, "fused")
    torch.testing.assert_close(ops.relu_lrn(x), y, rtol=1e-5, atol=0)
    assert is_fused(ops.relu_lrn(x))
    monkeypatch.setenv(ops.BACKEND_ENV, "fast")
    with pytest.raises(ValueError, match="TWOCOL_KERNELS"):
        ops.relu_lrn(x)


@pytest.mark.parametrize("why,shape,dtype,size,k", [
    ("odd window", (2, 6, 3, 3), torch.float32, 4, 2.0),
    ("k > 0", (2, 6, 3, 3), torch.float32, 5, 0.0),
    ("float16", (2, 6, 3, 3), torch.float16, 5, 2.0),
])
def test_auto_falls_back_where_the_kernels_cannot_run_and_fused_says_why(why, shape, dtype,
                                                                         size, k):
    x = torch.randn(shape).to(dtype)
    assert ops.resolve_backend(x, size, k) == "reference"
    torch.testing.assert_close(ops.relu_lrn(x, size, k), ops.relu_lrn_reference(x, size, k),
                               equal_nan=True)  # k = 0 gives 0/0 where a window is all zero
    with pytest.raises(RuntimeError, match=re.escape(why)):
        ops.relu_lrn(x, size, k, backend="fused")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("order", ops.ORDERS)
@pytest.mark.parametrize("size,k,alpha,beta", PARAMS)
def test_gradcheck_float64(device, order, size, k, alpha, beta):
    x = inputs((2, 7, 3, 2), device, alpha=alpha).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: fused(t, size, k, alpha, beta, order), (x,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("order", ops.ORDERS)
@pytest.mark.parametrize("convention", ops.CONVENTIONS)
@pytest.mark.parametrize("size,k,alpha,beta", PARAMS)
def test_float64_forward_and_backward_equal_the_reference_at_odd_sizes(
        device, order, convention, size, k, alpha, beta):
    x = inputs((3, 7, 13, 9), device, alpha=alpha).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    y, r = fused(x, size, k, alpha, beta, order, convention), reference(xr, size, k, alpha, beta,
                                                                        order, convention)
    torch.testing.assert_close(y, r, rtol=1e-12, atol=1e-14)
    g = torch.randn_like(r)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(r, xr, g)[0],
                               rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("device", DEVICES)
def test_edge_channels_by_hand(device):
    x = torch.arange(1.0, 5.0, dtype=torch.float64, device=device).view(1, 4, 1, 1)  # 1,2,3,4
    out = fused(x, 5, 2.0, 0.1, 1.0, "relu_lrn")
    # channel 0 sees channels 0..2 (1 + 4 + 9), channel 3 sees 1..3 (4 + 9 + 16)
    assert out[0, 0, 0, 0].item() == pytest.approx(1.0 / (2.0 + 0.1 * 14), rel=1e-14)
    assert out[0, 3, 0, 0].item() == pytest.approx(4.0 / (2.0 + 0.1 * 29), rel=1e-14)
    wide = fused(x, 9, 2.0, 0.1, 1.0, "relu_lrn")  # every window holds all four channels
    torch.testing.assert_close(wide, x / (2.0 + 0.1 * 30), rtol=1e-14, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("order", ops.ORDERS)
@pytest.mark.parametrize("convention", ops.CONVENTIONS)
def test_float32_is_within_1e_5_of_the_float64_reference(device, order, convention):
    alpha = 1e-4 if convention == "sum" else 5e-4  # the paper's, and the 2012 code's spelling
    x = inputs((4, 96, 13, 11), device, torch.float32, alpha=1e-4).requires_grad_()
    xr = x.detach().double().requires_grad_()
    y, r = fused(x, 5, 2.0, alpha, 0.75, order, convention), reference(xr, 5, 2.0, alpha, 0.75,
                                                                       order, convention)
    torch.testing.assert_close(y.double(), r, rtol=1e-5, atol=0)
    g = torch.randn_like(r)
    gy, gr = torch.autograd.grad(y, x, g.float())[0].double(), torch.autograd.grad(r, xr, g)[0]
    # Gradients cancel (direct - cross term), so relative to the gradient's scale.
    torch.testing.assert_close(gy, gr, rtol=1e-5, atol=1e-5 * gr.abs().max().item())


@pytest.mark.parametrize("device", [CUDA])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("order", ops.ORDERS)
def test_half_precision_on_cuda_is_close_to_the_float64_reference(device, dtype, order):
    x = inputs((4, 96, 13, 11), device, dtype, alpha=1e-4).requires_grad_()
    xr = x.detach().double().requires_grad_()
    y, r = fused(x, 5, 2.0, 1e-4, 0.75, order), reference(xr, 5, 2.0, 1e-4, 0.75, order)
    assert y.dtype == dtype
    # A few roundings of 2^-11 (float16) or 2^-8 (bfloat16); the atol covers subnormals.
    tol = 1e-2 if dtype == torch.float16 else 3e-2
    torch.testing.assert_close(y.double(), r, rtol=tol, atol=1e-4 * r.abs().max().item())
    g = torch.randn_like(r)
    gy, gr = torch.autograd.grad(y, x, g.to(dtype))[0].double(), torch.autograd.grad(r, xr, g)[0]
    torch.testing.assert_close(gy, gr, rtol=tol, atol=tol * gr.abs().max().item())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["channels_last", "sliced", "transposed"])
def test_non_contiguous_inputs_give_the_reference_result(device, layout):
    base = inputs((3, 14, 9, 7), device)
    x = {"channels_last": base.to(memory_format=torch.channels_last),
         "sliced": base[:, ::2],
         "transposed": base.transpose(2, 3)}[layout].requires_grad_()
    assert not x.is_contiguous()
    xr = x.detach().clone().requires_grad_()
    y, r = fused(x, 5, 1.0, 0.3, 0.75, "relu_lrn"), reference(xr, 5, 1.0, 0.3, 0.75, "relu_lrn")
    torch.testing.assert_close(y, r, rtol=1e-12, atol=1e-14)
    g = torch.randn_like(r).to(memory_format=torch.channels_last)  # a non-contiguous grad too
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(r, xr, g)[0],
                               rtol=1e-10, atol=1e-13)


# Over 1024 pixels (several CPU runs per image, the last one short) and over 64 channels with
# few columns (several CUDA channel chunks, the last one short).
BUFFER_SHAPE = (2, 100, 3, 701)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("order", ops.ORDERS)
def test_raw_kernels_write_every_element_of_poisoned_buffers(device, order):
    relu_first = order == "relu_lrn"
    x = inputs(BUFFER_SHAPE, device)
    out, inv = torch.full_like(x, float("nan")), torch.full_like(x, float("nan"))
    torch.ops.twocol.relu_lrn_forward_into(x, 5, 1.0, 0.3, 0.75, relu_first, out, inv)
    xr = x.clone().requires_grad_()
    r = reference(xr, 5, 1.0, 0.3, 0.75, order)
    torch.testing.assert_close(out, r, rtol=1e-12, atol=1e-14)  # NaN anywhere fails
    s = ops.lrn_scale_reference(torch.relu(x) if relu_first else x, 5, 1.0, 0.3, "sum")
    torch.testing.assert_close(inv, s ** -0.75, rtol=1e-12, atol=0)
    g = torch.randn_like(x)
    grad_input = torch.full_like(x, float("nan"))
    torch.ops.twocol.relu_lrn_backward_into(g, x, inv, 5, 1.0, 0.3, 0.75, relu_first, grad_input)
    torch.testing.assert_close(grad_input, torch.autograd.grad(r, xr, g)[0], rtol=1e-10,
                               atol=1e-13)


@pytest.mark.parametrize("bad,message", [
    (lambda x, out, inv: (x, out[:, :-1], inv, 5, 2.0), "out has shape"),
    (lambda x, out, inv: (x, out.float(), inv, 5, 2.0), "out is Float"),
    (lambda x, out, inv: (x, out, inv.transpose(2, 3), 5, 2.0), "inv must be contiguous"),
    (lambda x, out, inv: (x.transpose(2, 3), out, inv, 5, 2.0), "x must be contiguous"),
    (lambda x, out, inv: (x, out, inv, 4, 2.0), "size must be odd"),
    (lambda x, out, inv: (x, out, inv, 5, -1.0), "k > 0"),
])
def test_raw_kernels_reject_bad_arguments_clearly(bad, message):
    x = inputs((2, 6, 5, 5), "cpu")
    x_, out, inv, size, k = bad(x, torch.empty_like(x), torch.empty_like(x))
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.ops.twocol.relu_lrn_forward_into(x_, size, k, 0.1, 0.75, True, out, inv)


@pytest.mark.parametrize("device", DEVICES)
def test_a_non_finite_input_is_not_hidden(device):
    x = inputs((2, 9, 3, 3), device)
    x[1, 4, 2, 0] = float("inf")
    y = fused(x, 5, 1.0, 0.3, 0.75, "lrn_relu")
    assert not torch.isfinite(y[1, :, 2, 0]).all()  # (how far down it reaches: relu_lrn.h)
    y[1, :, 2, 0] = 0
    assert torch.isfinite(y).all()  # every other column untouched


def test_inference_mode_runs_without_autograd():
    x = inputs((2, 7, 5, 4), "cpu")
    with torch.inference_mode():
        y = fused(x, 5, 1.0, 0.3, 0.75, "lrn_relu")
    torch.testing.assert_close(y, reference(x, 5, 1.0, 0.3, 0.75, "lrn_relu"), rtol=1e-12,
                               atol=1e-14)


def test_double_backward_is_refused_clearly():
    x = inputs((2, 7, 5, 4), "cpu").requires_grad_()
    y = fused(x, 5, 1.0, 0.3, 0.75, "relu_lrn")
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(y.sum(), x, create_graph=True)


def test_the_op_is_checked_by_column_isolation():
    """conftest's ColumnIsolation (a TorchFunctionMode) is on: the fused op is seen by it."""
    a = sim.tag(inputs((2, 6, 4, 4), "cpu").requires_grad_(), "A")
    with sim.in_column("A"):
        y = fused(a, 5, 1.0, 0.3, 0.75, "relu_lrn")
    assert sim.column_of(y) == "A"
    y.sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()
    with sim.in_column("B"), pytest.raises(sim.IsolationError):
        fused(a, 5, 1.0, 0.3, 0.75, "relu_lrn")


@pytest.mark.parametrize("order,convention", [("relu_lrn", "sum"), ("lrn_relu", "mean")])
def test_the_model_computes_the_same_with_either_backend(monkeypatch, order, convention):
    """The small net as configured (the paper's layer 1), and with the 2012 code's layer 1."""
    cfg = config("small_twocol", f"model.lrn.layer1_order={order}",
                 f"model.lrn.alpha_convention={convention}")
    x = torch.randn(2, 3, 64, 64)
    results = {}
    for backend in ("reference", "fused"):
        monkeypatch.setenv(ops.BACKEND_ENV, backend)
        net = build_model(cfg, Placement.cpu(), seed=0).eval()  # eval: no dropout masks to match
        out = net(x)
        out.square().mean().backward()
        results[backend] = (out, net.col_a.conv1.weight.grad)
    (out_r, grad_r), (out_f, grad_f) = results["reference"], results["fused"]
    torch.testing.assert_close(out_f, out_r, rtol=1e-4, atol=1e-5 * out_r.abs().max().item())
    torch.testing.assert_close(grad_f, grad_r, rtol=1e-4, atol=1e-4 * grad_r.abs().max().item())


CHUNKS_PROGRAM = r"""
// Channel chunks, which only the CUDA kernels use, against whole columns, with g++: the math
// header needs no GPU. Prints the largest difference over every case.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>
#include "relu_lrn.h"
using namespace twocol;

int main() {
  std::mt19937 rng(0);
  std::normal_distribution<double> normal(0.0, 3.0);
  const int64_t lanes = 3;
  double worst = 0;
  for (int64_t channels : {1, 2, 7, 40, 100})
    for (int64_t size : {1, 3, 5, 9})
      for (bool relu_first : {true, false})
        for (int64_t chunk : {1, 3, 32}) {
          const int64_t n = channels * lanes;
          std::vector<double> x(n), g(n), y(n), inv(n), dx(n), y2(n), inv2(n), dx2(n), win(3 * lanes);
          for (auto* v : {&x, &g})
            for (double& e : *v) e = normal(rng);
          const LrnParams<double> p = lrn_params<double>(LrnArgs{size, 1.0, 0.3, 0.75, relu_first});
          const PowNegThreeQuarters<double> pw;
          relu_lrn_forward_columns<double>(x.data(), y.data(), inv.data(), win.data(), lanes,
                                           lanes, channels, 0, channels, p, pw);
          relu_lrn_backward_columns<double>(g.data(), x.data(), inv.data(), dx.data(), win.data(),
                                            lanes, lanes, channels, 0, channels, p);
          for (int64_t begin = 0; begin < channels; begin += chunk) {
            const int64_t end = begin + chunk < channels ? begin + chunk : channels;
            relu_lrn_forward_columns<double>(x.data(), y2.data(), inv2.data(), win.data(), lanes,
                                             lanes, channels, begin, end, p, pw);
            relu_lrn_backward_columns<double>(g.data(), x.data(), inv.data(), dx2.data(),
                                              win.data(), lanes, lanes, channels, begin, end, p);
          }
          for (int64_t i = 0; i < n; ++i)
            for (double d : {y[i] - y2[i], inv[i] - inv2[i], dx[i] - dx2[i]})
              worst = std::isnan(d) || std::fabs(d) > worst ? std::fabs(d) : worst;
        }
  std::printf("%.3g\n", worst);
  return 0;
}
"""


def test_channel_chunks_compute_what_whole_columns_do(tmp_path):
    """CUDA splits long columns into channel chunks; the chunk bounds are checked here, on the
    CPU, by compiling the shared header into a small program."""
    source = tmp_path / "chunks.cpp"
    source.write_text(CHUNKS_PROGRAM)
    subprocess.run(["g++", "-std=c++17", "-O1", f"-I{ROOT / 'kernels'}", str(source), "-o",
                    str(tmp_path / "chunks")], check=True, capture_output=True, timeout=120)
    out = subprocess.run([str(tmp_path / "chunks")], check=True, capture_output=True, text=True)
    assert float(out.stdout) < 1e-12


def test_nvcc_compiles_the_cuda_kernels_for_sm_90():
    """CI has nvcc but no GPU: a CUDA error must still fail it. Keeps ptxas's resource report
    (registers, stack, spills per kernel) in build/nvcc/."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed on this machine")
    out_dir = ROOT / "build" / "nvcc"
    out_dir.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    cmd = [nvcc, "-c", "-arch=sm_90", "-Xptxas", "-v", "-O3", "-std=c++17",
           *cpp_extension.COMMON_NVCC_FLAGS, *includes, str(ROOT / "kernels" / "relu_lrn_cuda.cu"),
           "-o", str(out_dir / "relu_lrn_cuda.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    report = proc.stdout + proc.stderr
    (out_dir / "relu_lrn_cuda.ptxas.txt").write_text(" ".join(cmd) + "\n\n" + report)
    assert proc.returncode == 0, report
    kernels = re.findall(r"Compiling entry function '(\w+)'", report)
    assert len(kernels) == 12, report  # forward: 4 dtypes x 2 pow variants; backward: 4 dtypes
    # Memory-bound kernels: a spill would add local-memory traffic to every element.
    assert report.count("0 bytes spill stores, 0 bytes spill loads") == report.count("spill stores")
