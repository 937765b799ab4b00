#!/usr/bin/env bash
# Everything that needs a GPU, in one go, for whoever has one (docs/design.md, section 8): a machine
# with a CUDA GPU, PyTorch, nvcc and ninja. Needs no network and no DALI: it builds twocol._C
# in place against that machine's torch and imports twocol from src/.
#
#   bash bench/gpu_check.sh                      # results in $OUT, default bench/results/gpu
#   OUT=/tmp/gpu SECTIONS="build kernel_tests" bash bench/gpu_check.sh
#
# Writes to $OUT: summary.txt (one line per section: ok, skipped or FAILED, seconds), <section>.log
# for each section, and what the sections write (kernels.json). Each section is a function named
# section_<name>, run with a time limit; a failing section is recorded and the next one runs. A
# section that cannot run on this machine prints one line saying why and returns 77 (skipped).
# To add one: define section_<name>, add <name> and its limit in seconds to SECTIONS below.
# All limits together stay under the 8 minutes the whole check may take.
set -u
cd "$(dirname "$0")/.."

OUT="${OUT:-bench/results/gpu}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export OUT PY PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

# name:seconds, in order.
SECTIONS="${SECTIONS:-build:180 kernel_tests:100 kernel_bench:90 model_tests:60 throughput:120 dali_tests:90}"

section_build() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  nvcc --version | tail -n 1
  # In place: src/twocol/_C*.so, with the CUDA sources since this torch has CUDA (setup.py).
  MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PY" setup.py build_ext --inplace || return 1
  "$PY" - <<'EOF'
import torch
from twocol import ops
assert ops.KERNELS_UNAVAILABLE is None, ops.KERNELS_UNAVAILABLE
assert torch.cuda.is_available(), "torch sees no CUDA device"
why_not = ops.fused_unsupported(torch.ones(1, 1, 1, 1, device="cuda"), 5, 2.0, 1e-4)
assert why_not is None, why_not
print(f"twocol._C has CUDA kernels: torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.cuda.get_device_name(0)}")
EOF
}

section_kernel_tests() {
  # Without a visible GPU the CUDA cases would skip and the section would pass for nothing.
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'" || return 1
  "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_kernels.py
}

section_kernel_bench() {
  "$PY" -m bench.kernels --device cuda --out "$OUT/kernels.json"
}

section_model_tests() {
  # The two-column net on cuda:0 (column streams on and off) against the grouped reference
  # and the CPU simulation; skips would mean no GPU, so refuse them.
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'" || return 1
  "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py
}

section_throughput() {
  # Training steps of the paper's net on one GPU: two columns on their own streams, on one
  # stream, the one-column net and the grouped-conv equivalent; float32 and bf16 autocast.
  "$PY" -m bench.throughput --gpus 0 --config configs/alexnet_paper.yaml --batch 128 \
    --steps 20 --warmup 5 --amp off,bf16 --out "$OUT/throughput.json"
}

section_dali_tests() {
  # DALI's mixed (GPU) decoder against its CPU decoder on the same epoch plan, each column's
  # device fed by the pipeline, pinned copies, bad and unusual JPEGs (tests/test_gpu_data.py).
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'" || return 1
  if ! "$PY" -c "import nvidia.dali" 2>/dev/null; then
    echo "skipped: nvidia.dali cannot be imported here (install nvidia-dali-cuda<CUDA major> to run it)"
    return 77
  fi
  # An importable DALI that cannot decode on the GPU is a failure, not a skip.
  "$PY" -c "from twocol.data.loader import dali_problem; p = dali_problem('cuda:0'); assert p is None, p" || return 1
  "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_gpu_data.py
}

run_section() {
  local name=$1 limit=$2 start=$SECONDS rc status
  echo "== $name (limit ${limit}s)"
  export -f "section_$name"
  timeout "$limit" bash -c "section_$name" >"$OUT/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    77) status=skipped; rc=0 ;;
    124) status="FAILED (timed out)" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  printf '%-14s %-20s %4ds\n' "$name" "$status" $((SECONDS - start)) >>"$OUT/summary.txt"
  tail -n 25 "$OUT/$name.log"
  return $rc
}

: >"$OUT/summary.txt"
failed=0
for entry in $SECTIONS; do
  run_section "${entry%%:*}" "${entry##*:}" || failed=1
done
echo "== summary ($OUT)"
cat "$OUT/summary.txt"
exit $failed
