"""Builds twocol._C, the fused ReLU+LRN ops of kernels/; everything else is in pyproject.toml.

The CPU build is always there; the CUDA sources join it only when this torch has CUDA and a
CUDA toolkit is found (CUDAExtension raises on a CPU-only torch). Built against the torch
already installed, hence `pip install --no-build-isolation`."""
import glob
import sys
import warnings

from setuptools import setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:
    sys.exit("twocol compiles its kernels against the torch it will run with, so torch must be importable "
             "while building: install torch first, then `pip install --no-build-isolation -e .` "
             "(`make install` does both)")

CPU_SOURCES = ["kernels/relu_lrn_bindings.cpp", "kernels/relu_lrn_cpu.cpp"]
CUDA_SOURCES = ["kernels/relu_lrn_cuda_op.cpp", "kernels/relu_lrn_cuda.cu"]
# -fno-math-errno and -fno-trapping-math let g++ vectorise the lane loops (sqrt, and selects
# over divisions); the kernels never read errno or FP exception flags. Results stay IEEE.
CXX_FLAGS = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
NVCC_FLAGS = ["-O3", "-lineinfo"]


def kernel_extension():
    common = dict(name="twocol._C", extra_link_args=["-fopenmp"], depends=glob.glob("kernels/*.h"))
    if torch.version.cuda and cpp_extension.CUDA_HOME:
        return cpp_extension.CUDAExtension(
            sources=CPU_SOURCES + CUDA_SOURCES,
            extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS}, **common)
    if torch.version.cuda:
        warnings.warn(f"torch {torch.__version__} has CUDA {torch.version.cuda} but no CUDA toolkit was found "
                      "(set CUDA_HOME or put nvcc on PATH): only the CPU kernels are built, and on a GPU "
                      "the model falls back to the reference ReLU+LRN")
    return cpp_extension.CppExtension(sources=CPU_SOURCES, extra_compile_args={"cxx": CXX_FLAGS}, **common)


setup(ext_modules=[kernel_extension()], cmdclass={"build_ext": cpp_extension.BuildExtension})
