#!/usr/bin/env bash
# DALI for a GPU machine without network (bench/gpu_check.sh's DALI sections), cut into pieces
# small enough for one upload each. Run here, where pip can download; the GPU machine's
# interpreter is CPython 3.12 on x86-64 Linux, its driver CUDA 13.0 or newer.
#
#   bash bench/dali_pieces.sh OUTDIR [MIB_PER_PIECE]
#
# OUTDIR gets dali.tar.xz.part-aa, -ab, ...: the fewest equal pieces of at most MIB_PER_PIECE
# MiB each (default 56: a piece and the working tree, about 2 MiB, in an upload of 64 MiB with
# 6 MiB to spare), and SHA256SUMS. bench/gpu_check.sh takes them from .dali-all/ on the GPU
# machine, checks them and unpacks them into .dali/site (PYTHONPATH=.dali/site imports DALI
# there). Measured 2026-12-06 on 2 cores of an AMD EPYC at load average 8.5: 532 MB unpacked,
# 171 MB packed (3 pieces of 57.0 MB, 54.4 MiB), 12.7 minutes to pack, 15 s to unpack; DALI
# imported from the unpacked folder under CPython 3.12 and decoded a JPEG on the CPU.
set -euo pipefail
out=${1:?usage: bench/dali_pieces.sh OUTDIR [MIB_PER_PIECE]}
mib=${2:-56}
py=${PYTHON:-python3}
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT

# DALI and what it needs that a CUDA PyTorch image lacks (numpy, packaging, six, pyyaml,
# typing-extensions and wheel are there), each pinned: what nvidia-dali-cuda130 2.4.0's metadata asks for (nvcomp exactly,
# nvimgcodec >=0.9,<0.10 with its codec libraries), with the CUDA libraries at the newest builds
# made with CUDA 13.0 itself, for a CUDA 13.0 driver: nvjpeg 13.0.1.86 (13.0.2 and later were
# built with CUDA 13.1 to 13.4) and nvjpeg2k 0.9.1.47 (0.10: 13.1, 0.11: 13.3). nvcomp 5.3.0.16,
# nvimgcodec 0.9.0.20 and nvtiff 0.8.0.82 (the oldest nvimgcodec 0.9 takes) have no 13.0 build;
# they were built with CUDA 13.3 and carry sm_90 machine code, which a 13.0 driver runs as it is.
"$py" -m pip install --quiet --no-deps --only-binary=:all: --target "$site" \
  --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  nvidia-dali-cuda130==2.4.0 nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-libnvcomp-cu13==5.3.0.16 \
  nvidia-nvjpeg==13.0.1.86 nvidia-nvjpeg2k-cu13==0.9.1.47 nvidia-nvtiff-cu13==0.8.0.82 \
  astunparse==1.6.3 gast==0.7.0 optree==0.20.0 nvtx==0.2.17 makefun==1.16.0 libcst==1.9.0
# The bindings (and pip's bytecode) for other interpreters, and what nothing loads at run time:
# headers, command-line tools.
find "$site" -name '*cpython-3*' ! -name '*cpython-312-*' -delete
rm -rf "$site"/bin "$site"/nvidia/dali/include "$site"/nvidia/libnvcomp/bin "$site"/nvidia/libnvcomp/include

mkdir -p "$out"
rm -f "$out"/dali.tar.xz "$out"/dali.tar.xz.part-* "$out/SHA256SUMS"
tar -C "$site" -cf - . | xz -9 -T0 >"$out/dali.tar.xz"
size=$(stat -c %s "$out/dali.tar.xz")
limit=$((mib * 1024 * 1024))
pieces=$(((size + limit - 1) / limit))
split -n "$pieces" "$out/dali.tar.xz" "$out/dali.tar.xz.part-"
rm "$out/dali.tar.xz"
(cd "$out" && sha256sum dali.tar.xz.part-* >SHA256SUMS)
echo "$size bytes in $pieces pieces of at most $mib MiB:"
ls -l "$out"
