"""The fused ReLU+LRN kernels (kernels/, twocol._C) against the float64 reference in twocol.ops.

CPU tests need the extension built (make install); they fail, not skip, without it, since the
model is meant to run on it. CUDA cases skip without a GPU: bench/gpu_check.sh runs this file
on a GPU machine. The nvcc test compiles the CUDA kernels here, on a machine without a GPU.
"""
import json
import os
import re
import shutil
import subprocess
import sys
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
# (the pow path), a window of one channel, and windows wider than the channels; 31 in float64
# is a window whose CUDA backward runs fewer than 256 threads per block (shared memory).
PARAMS = [(5, 2.0, 1e-4, 0.75), (3, 1.0, 0.3, 0.5), (7, 0.5, 0.05, 1.3), (1, 1.5, 0.2, 0.75),
          (9, 2.0, 0.02, 0.75), (31, 1.0, 0.01, 0.75)]


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


# Several CPU runs per image (kLanes pixels each, relu_lrn_cpu.cpp), the last one short, and
# over 64 channels with few columns (several CUDA channel chunks, the last one short).
BUFFER_SHAPE = (2, 100, 3, 701)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("order", ops.ORDERS)
def test_raw_kernels_write_every_element_of_poisoned_buffers(device, order):
    relu_first = order == "relu_lrn"
    x = inputs(BUFFER_SHAPE, device)
    out = torch.full_like(x, float("nan"))
    torch.ops.twocol.relu_lrn_forward_into(x, 5, 1.0, 0.3, 0.75, relu_first, out)
    xr = x.clone().requires_grad_()
    r = reference(xr, 5, 1.0, 0.3, 0.75, order)
    torch.testing.assert_close(out, r, rtol=1e-12, atol=1e-14)  # NaN anywhere fails
    g = torch.randn_like(x)
    grad_input = torch.full_like(x, float("nan"))
    torch.ops.twocol.relu_lrn_backward_into(g, x, 5, 1.0, 0.3, 0.75, relu_first, grad_input)
    torch.testing.assert_close(grad_input, torch.autograd.grad(r, xr, g)[0], rtol=1e-10,
                               atol=1e-13)


def forward_into(x, out, size=5, k=2.0):
    torch.ops.twocol.relu_lrn_forward_into(x, size, k, 0.1, 0.75, True, out)


def backward_into(grad, x, grad_input, size=5, k=2.0):
    torch.ops.twocol.relu_lrn_backward_into(grad, x, size, k, 0.1, 0.75, True, grad_input)


# (message, call with x and a buffer like x): each raw op, each tensor argument wrong in each
# way, and bad LRN arguments.
BAD_ARGUMENTS = [
    ("out has shape", lambda x, b: forward_into(x, b[:, :-1])),
    ("out is Float", lambda x, b: forward_into(x, b.float())),
    ("out must be contiguous", lambda x, b: forward_into(x, b.transpose(2, 3))),
    ("x must be contiguous", lambda x, b: forward_into(x.transpose(2, 3), b)),
    ("expected an (N, C, H, W) tensor", lambda x, b: forward_into(x[0], b[0])),
    ("size must be odd", lambda x, b: forward_into(x, b, size=4)),
    ("k > 0", lambda x, b: forward_into(x, b, k=-1.0)),
    ("grad has shape", lambda x, b: backward_into(x[:1], x, b)),
    ("grad_input is Float", lambda x, b: backward_into(x, x, b.float())),
    ("grad must be contiguous", lambda x, b: backward_into(x.transpose(2, 3), x, b)),
    ("grad_input has shape", lambda x, b: backward_into(x, x, b[..., :-1])),
    ("size must be odd", lambda x, b: backward_into(x, x, b, size=0)),
]


# Bad arguments only the CUDA ops see: another device, a dtype without kernels, windows too wide
# for the backward kernel's shared memory (x is float64 here: at most 127; float32: 255).
BAD_CUDA_ARGUMENTS = [
    ("out is on cpu", lambda x, b: forward_into(x, b.cpu())),
    ("grad is on cpu", lambda x, b: backward_into(x.cpu(), x, b)),
    ("supports float32, float64, float16 and bfloat16",
     lambda x, b: forward_into(x.to(torch.int32), b.to(torch.int32))),
    ("wider than the backward kernel's shared memory", lambda x, b: forward_into(x, b, size=129)),
    ("wider than the backward kernel's shared memory",
     lambda x, b: backward_into(x, x, b, size=129)),
    ("wider than the backward kernel's shared memory",
     lambda x, b: forward_into(x.float(), b.float(), size=257)),
]


def bad_argument_cases(device):
    return BAD_ARGUMENTS + (BAD_CUDA_ARGUMENTS if device == "cuda" else [])


# Runs every bad-argument case of one device in a child process and prints one JSON line per
# case. On the GPU machine (torch 2.11+cu130) the first such case once killed the whole pytest
# process with SIGSEGV (bench/results/2026-11-27-gpu-h200/kernel_tests-run1.log); in a child, a
# crash fails this test alone, names the case, and the other kernel tests still run.
BAD_ARGUMENTS_CHILD = r"""
import contextlib, json, sys
sys.path[:0] = [sys.argv[3], sys.argv[4]]
import torch
import test_kernels as tk
from twocol import sim
device, isolation = sys.argv[1], sys.argv[2] == "1"
torch.manual_seed(0)
with (sim.ColumnIsolation() if isolation else contextlib.nullcontext()):
    for i, (message, call) in enumerate(tk.bad_argument_cases(device)):
        print(json.dumps({"case": i, "starting": message}), flush=True)
        x = tk.inputs((2, 6, 5, 5), device)
        buffer = torch.full_like(x, 7.0)
        raised = None
        try:
            call(x, buffer)
        except Exception as e:
            raised = [type(e).__name__, str(e).splitlines()[0] if str(e) else ""]
        if device == "cuda":
            torch.cuda.synchronize()
        print(json.dumps({"case": i, "raised": raised, "untouched": bool((buffer == 7.0).all())}),
              flush=True)
"""

# A SIGSEGV handler that prints the native stack (glibc backtrace_symbols_fd), preloaded into
# a child that crashed, to say where.
SEGV_BACKTRACE_C = r"""
#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
static void on_fault(int sig) {
  void* frames[128];
  const char head[] = "native stack at the fault:\n";
  write(2, head, sizeof(head) - 1);
  backtrace_symbols_fd(frames, backtrace(frames, 128), 2);
  signal(sig, SIG_DFL);
  raise(sig);
}
__attribute__((constructor)) static void install(void) {
  signal(SIGSEGV, on_fault);
  signal(SIGBUS, on_fault);
  signal(SIGABRT, on_fault);
}
"""


def run_bad_argument_child(device, isolation=True, faulthandler=True, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    cmd = [sys.executable, *(["-X", "faulthandler"] if faulthandler else []), "-c",
           BAD_ARGUMENTS_CHILD, device, "1" if isolation else "0", str(ROOT / "tests"),
           str(ROOT / "src")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def crash_report(device, first, tmp_path):
    """What a crashed child printed, then the same cases again: with a native backtrace, and
    without the column isolation mode (is the TorchFunctionMode part of it?)."""
    parts = [f"child exited with {first.returncode}:\n{first.stdout}\n{first.stderr[-6000:]}"]
    lib = tmp_path / "segv_backtrace.so"
    source = tmp_path / "segv_backtrace.c"
    source.write_text(SEGV_BACKTRACE_C)
    built = subprocess.run(["gcc", "-shared", "-fPIC", "-O1", str(source), "-o", str(lib)],
                           capture_output=True, text=True)
    if built.returncode == 0:
        again = run_bad_argument_child(device, faulthandler=False,
                                       env_extra={"LD_PRELOAD": str(lib)})
        parts.append(f"again with a native backtrace, exit {again.returncode}:\n"
                     f"{again.stdout[-3000:]}\n{again.stderr[-8000:]}")
    else:
        parts.append(f"(no native backtrace: gcc failed: {built.stderr[-500:]})")
    plain = run_bad_argument_child(device, isolation=False)
    parts.append(f"again without sim.ColumnIsolation, exit {plain.returncode}:\n"
                 f"{plain.stdout[-3000:]}\n{plain.stderr[-3000:]}")
    return "\n\n".join(parts)


@pytest.mark.parametrize("device", DEVICES)
def test_raw_kernels_reject_bad_arguments_clearly(device, tmp_path):
    """Raised before any kernel runs, on every device with kernels; the buffer stays untouched.
    Each raw op, each tensor argument wrong in each way, and bad LRN arguments, in a child
    process (see BAD_ARGUMENTS_CHILD)."""
    cases = bad_argument_cases(device)
    child = run_bad_argument_child(device)
    if child.returncode != 0:
        report = crash_report(device, child, tmp_path)
        if os.environ.get("OUT"):  # bench/gpu_check.sh's results folder: kept if pytest is cut off
            Path(os.environ["OUT"], f"kernel_tests-crash-{device}.txt").write_text(report)
        pytest.fail(f"a bad-argument case crashed the process on {device}:\n{report}",
                    pytrace=False)
    results = {}
    for line in child.stdout.splitlines():
        r = json.loads(line)
        if "raised" in r:
            results[r["case"]] = r
    assert sorted(results) == list(range(len(cases))), child.stdout + child.stderr
    for i, (message, _) in enumerate(cases):
        r = results[i]
        assert r["raised"] is not None, f"case {i} ({message}) raised nothing"
        kind, text = r["raised"]
        assert kind == "RuntimeError" and message in text, (i, message, r)
        assert r["untouched"], f"case {i} ({message}) wrote into the buffer"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("order", ops.ORDERS)
def test_empty_tensors_give_empty_results(device, order):
    for shape in [(0, 6, 5, 5), (2, 0, 5, 5), (2, 6, 0, 5)]:
        x = torch.empty(shape, dtype=torch.float64, device=device).requires_grad_()
        y = fused(x, 5, 1.0, 0.3, 0.75, order)
        assert y.shape == x.shape
        (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
        assert g.shape == x.shape


@pytest.mark.parametrize("device", [CUDA])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_takes_windows_up_to_its_shared_memory_and_refuses_wider_ones(device, dtype):
    x = inputs((2, 5, 3, 2), device, dtype).requires_grad_()
    widest = ops.cuda_max_size(dtype)
    xr = x.detach().clone().requires_grad_()
    y, r = fused(x, widest, 1.0, 0.1, 0.75, "relu_lrn"), reference(xr, widest, 1.0, 0.1, 0.75,
                                                                   "relu_lrn")
    torch.testing.assert_close(y.double(), r, rtol=1e-5, atol=0)
    g = torch.randn_like(r)
    gr = torch.autograd.grad(r, xr, g)[0]
    torch.testing.assert_close(torch.autograd.grad(y, x, g.to(dtype))[0].double(), gr,
                               rtol=1e-5, atol=1e-5 * gr.abs().max().item())
    # (The raw ops' refusal of wider windows: BAD_CUDA_ARGUMENTS.)
    assert ops.resolve_backend(x, widest + 2, 1.0, 0.1) == "reference"


@pytest.mark.parametrize("device", [CUDA])
def test_cuda_kernels_run_on_the_callers_current_stream(device):
    """Each column runs on its own CUDA stream (the model's column streams): the kernels must be
    queued on the caller's current stream, after the work that wrote their inputs there. The
    inputs are written on a side stream behind a sleep; a kernel on any other stream would read
    the zeros there before them."""
    src = inputs((4, 96, 27, 27), device, torch.float32, alpha=1e-4)
    g = torch.randn_like(src)
    xr = src.clone().requires_grad_()
    ref = fused(xr, 5, 2.0, 1e-4, 0.75, "lrn_relu")
    (gref,) = torch.autograd.grad(ref, xr, g)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        x = torch.zeros_like(src)
        torch.cuda._sleep(50_000_000)  # tens of milliseconds of one thread spinning
        x.copy_(src)
        x.requires_grad_()
        y = fused(x, 5, 2.0, 1e-4, 0.75, "lrn_relu")
        g_side = torch.zeros_like(g)
        torch.cuda._sleep(50_000_000)
        g_side.copy_(g)
        (gx,) = torch.autograd.grad(y, x, g_side)
    side.synchronize()
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    torch.testing.assert_close(gx, gref, rtol=0, atol=0)


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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_op_passes_opcheck(device, dtype):
    """Schemas (what each op mutates), autograd registration, the fake kernels of twocol.ops
    against the real ones, and tracing forward and backward through AOT autograd."""
    x = inputs((2, 7, 5, 4), device, dtype).requires_grad_()
    g = torch.randn_like(x)
    lrn = (5, 1.0, 0.3, 0.75, True)
    cases = {
        torch.ops.twocol.relu_lrn.default: (x, *lrn),
        torch.ops.twocol.relu_lrn_backward.default: (g, x.detach(), *lrn),
        torch.ops.twocol.relu_lrn_forward_into.default: (x.detach(), *lrn, torch.empty_like(g)),
        torch.ops.twocol.relu_lrn_backward_into.default: (g, x.detach(), *lrn,
                                                          torch.empty_like(g)),
    }
    for op, args in cases.items():
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_traces_the_fused_op_forward_and_backward(device):
    """A whole graph (fullgraph: no break at ops.relu_lrn's backend choice), whose forward
    holds twocol.relu_lrn and whose backward holds twocol.relu_lrn_backward, computing what
    eager mode does."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def keep(gm, example_inputs):
        graphs.append({str(n.target) for n in gm.graph.nodes if n.op == "call_function"})
        return make_boxed_func(gm.forward)

    def f(x):
        return fused(x * 2, 5, 1.0, 0.3, 0.75, "relu_lrn").square().sum()

    torch._dynamo.reset()
    compiled = torch.compile(f, backend=aot_autograd(fw_compiler=keep, bw_compiler=keep),
                             fullgraph=True)
    x = inputs((2, 7, 5, 4), device).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    y = compiled(x)
    y.backward()
    f(xr).backward()
    torch.testing.assert_close(y, f(xr.detach()), rtol=1e-12, atol=0)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-12, atol=0)
    assert len(graphs) == 2
    assert "twocol.relu_lrn.default" in graphs[0]
    assert "twocol.relu_lrn_backward.default" in graphs[1]


CUDA_LAYOUT_PROGRAM = r"""
// What only the CUDA kernels do, with g++, since the math header needs no GPU: one column per
// thread (lanes = 1) with the backward rings interleaved across threads as in shared memory
// (row stride = threads), split into channel chunks, against the CPU's whole runs. Then the
// launch arithmetic. Prints the largest difference, then the widest float and double windows.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>
#include "relu_lrn_launch.h"
using namespace twocol;

int main() {
  std::mt19937 rng(0);
  std::normal_distribution<double> normal(0.0, 3.0);
  const int64_t threads = 3;  // pixels, one CUDA thread each
  double worst = 0;
  for (int64_t channels : {1, 2, 7, 40, 100})
    for (int64_t size : {1, 3, 5, 9})
      for (bool relu_first : {true, false})
        for (double beta : {0.75, 1.3})
          for (int64_t chunk : {1, 3, 32}) {
            const int64_t n = channels * threads, h = size / 2;
            std::vector<double> x(n), g(n), y(n), dx(n), y2(n), dx2(n);
            for (auto* v : {&x, &g})
              for (double& e : *v) e = normal(rng);
            const LrnParams<double> p = lrn_params<double>(LrnArgs{size, 1.0, 0.3, beta, relu_first});
            with_pow<double>(beta, [&](auto pw) {
              std::vector<double> win(2 * threads), rings(backward_ring_rows(h) * threads);
              relu_lrn_forward_columns<double>(x.data(), y.data(), win.data(), threads, threads,
                                               channels, 0, channels, p, pw);
              relu_lrn_backward_columns<double>(g.data(), x.data(), dx.data(), win.data(),
                                                rings.data(), threads, threads, threads,
                                                channels, 0, channels, p, pw);
              for (int64_t begin = 0; begin < channels; begin += chunk) {
                const int64_t end = begin + chunk < channels ? begin + chunk : channels;
                for (int64_t t = 0; t < threads; ++t) {
                  double sums[2];
                  relu_lrn_forward_columns<double>(x.data() + t, y2.data() + t, sums, 1, threads,
                                                   channels, begin, end, p, pw);
                  relu_lrn_backward_columns<double>(g.data() + t, x.data() + t, dx2.data() + t,
                                                    sums, rings.data() + t, threads, 1, threads,
                                                    channels, begin, end, p, pw);
                }
              }
            });
            for (int64_t i = 0; i < n; ++i)
              for (double d : {y[i] - y2[i], dx[i] - dx2[i]})
                worst = std::isnan(d) || std::fabs(d) > worst ? std::fabs(d) : worst;
          }
  // Threads per block: a power of two in [32, 256] whose rings fit a block's shared memory,
  // the most that do; every channel covered by at most 65535 chunks.
  bool launch_ok = true;
  for (int64_t bytes : {4, 8})
    for (int64_t half = 0; half < 200; ++half) {
      const int t = cuda_backward_threads(half, bytes);
      const int64_t per_thread = backward_ring_rows(half) * bytes;
      if (t != 0)
        launch_ok &= (t & (t - 1)) == 0 && t >= kCudaMinThreads && t <= kCudaMaxThreads &&
                     per_thread * t <= kCudaSharedBytesPerBlock &&
                     (t == kCudaMaxThreads || per_thread * 2 * t > kCudaSharedBytesPerBlock);
      else
        launch_ok &= per_thread * kCudaMinThreads > kCudaSharedBytesPerBlock;
    }
  for (int64_t channels : {1, 31, 48, 96, 128, 256, 5000000})
    for (int64_t columns : {1, 729, 96800, 387200})
      for (int64_t sms : {1, 132}) {
        const int64_t chunk = cuda_channel_chunk(ColumnShape{1, channels, columns}, sms);
        const int64_t chunks = (channels + chunk - 1) / chunk;
        launch_ok &= chunk >= 1 && chunks <= kCudaMaxChunks &&
                     (chunks == 1 || chunk >= kCudaMinChunk);
      }
  std::printf("%.3g %d %lld %lld\n", worst, int(launch_ok), (long long)cuda_max_size(4),
              (long long)cuda_max_size(8));
  return 0;
}
"""


def test_cuda_thread_layout_and_launch_arithmetic_on_the_cpu(tmp_path):
    """The CUDA kernels' column-per-thread layout, shared-memory rings and channel chunks give
    what the CPU's runs give; their launch arithmetic keeps its promises and agrees with
    ops.cuda_max_size. Compiled with the address and undefined-behaviour sanitizers: an
    out-of-bounds access in the shared math fails here."""
    source = tmp_path / "cuda_layout.cpp"
    source.write_text(CUDA_LAYOUT_PROGRAM)
    subprocess.run(["g++", "-std=c++17", "-O1", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all", f"-I{ROOT / 'kernels'}", str(source), "-o",
                    str(tmp_path / "cuda_layout")], check=True, capture_output=True, timeout=120)
    out = subprocess.run([str(tmp_path / "cuda_layout")], check=True, capture_output=True,
                         text=True)
    worst, launch_ok, float_max, double_max = out.stdout.split()
    assert float(worst) < 1e-12
    assert launch_ok == "1"
    assert int(float_max) == ops.cuda_max_size(torch.float32)
    assert int(double_max) == ops.cuda_max_size(torch.float64)


@pytest.mark.slow
def test_nvcc_compiles_the_cuda_kernels_for_sm_90(tmp_path):
    """CI has nvcc but no GPU: a CUDA error must still fail it. ptxas's resource report
    (registers, stack, spills per kernel) is in the message of a failure; the object and the
    report go to the test's temporary folder, never into the repository."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed on this machine")
    out_dir = tmp_path
    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    cmd = [nvcc, "-c", "-arch=sm_90", "-Xptxas", "-v", "-O3", "-std=c++17",
           *cpp_extension.COMMON_NVCC_FLAGS, *includes, str(ROOT / "kernels" / "relu_lrn_cuda.cu"),
           "-o", str(out_dir / "relu_lrn_cuda.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    report = proc.stdout + proc.stderr
    (out_dir / "relu_lrn_cuda.ptxas.txt").write_text(" ".join(cmd) + "\n\n" + report)
    assert proc.returncode == 0, report
    kernels = re.findall(r"Compiling entry function '(\w+)'", report)
    assert len(kernels) == 16, report  # forward and backward: 4 dtypes x 2 pow variants
    # Memory-bound kernels: a spill would add local-memory traffic to every element.
    assert report.count("0 bytes spill stores, 0 bytes spill loads") == report.count("spill stores")
