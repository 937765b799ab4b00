import glob
import subprocess
import sys

import torch
from setuptools import find_packages, setup
from setuptools.command.develop import develop
from torch.utils import cpp_extension

# twocol._C: the fused ReLU+LRN ops (kernels/). The CPU build is always there; the CUDA
# sources join it only when this torch has CUDA, since CUDAExtension raises on a CPU-only
# torch. Built against the torch already installed, hence `pip install --no-build-isolation`.
CPU_SOURCES = ["kernels/relu_lrn_bindings.cpp", "kernels/relu_lrn_cpu.cpp"]
CUDA_SOURCES = ["kernels/relu_lrn_cuda_op.cpp", "kernels/relu_lrn_cuda.cu"]
# -fno-math-errno and -fno-trapping-math let g++ vectorise the lane loops (sqrt, and selects
# over divisions); the kernels never read errno or FP exception flags. Results stay IEEE.
CXX_FLAGS = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
NVCC_FLAGS = ["-O3", "-lineinfo"]


def kernel_extension():
    common = dict(name="twocol._C", extra_link_args=["-fopenmp"],
                  depends=glob.glob("kernels/*.h"))
    if torch.version.cuda and cpp_extension.CUDA_HOME:
        return cpp_extension.CUDAExtension(
            sources=CPU_SOURCES + CUDA_SOURCES,
            extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS}, **common)
    return cpp_extension.CppExtension(sources=CPU_SOURCES, extra_compile_args={"cxx": CXX_FLAGS},
                                      **common)


class DevelopHere(develop):
    """`pip install --no-build-isolation -e .` on a project without pyproject.toml runs
    `setup.py develop`, which setuptools now implements as a second `pip install -e .` in an
    isolated build environment: one without torch, where twocol._C cannot build. This runs
    that second pip in the current environment instead."""

    def run(self):
        cmd = [sys.executable, "-m", "pip", "install", "--use-pep517", "--no-build-isolation",
               "-e", "."]
        subprocess.check_call(cmd + ["--no-deps"] * bool(self.no_deps))


setup(
    name="twocol",
    version="0.1.0",
    description="The two-GPU model-parallel AlexNet of Krizhevsky, Sutskever and Hinton (2012)",
    package_dir={"": "src"},
    packages=find_packages("src"),
    ext_modules=[kernel_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension, "develop": DevelopHere},
    python_requires=">=3.10",
    install_requires=["torch", "numpy", "pillow", "pyyaml", "matplotlib"],
    extras_require={"dali": ["nvidia-dali-cuda130"], "test": ["pytest"]},
    entry_points={"console_scripts": ["twocol=twocol.cli:main"]},
)
