#!/usr/bin/env bash
# Everything that needs a GPU, in one go, for whoever has one (docs/design.md, section 8): a machine
# with a CUDA GPU, PyTorch, nvcc and ninja (torchvision and DALI optional). Needs no network: it builds twocol._C
# in place against that machine's torch and imports twocol from src/.
#
#   bash bench/gpu_check.sh                      # results in $OUT, default bench/results/gpu
#   OUT=/tmp/gpu SECTIONS="build:60 profile:50" bash bench/gpu_check.sh
#   PACK=1 bash bench/gpu_check.sh               # leave only summary.txt and results.tgz in $OUT
#
# Writes to $OUT: summary.txt (one line per section: ok, skipped or FAILED, seconds),
# <section>.log for each section, and what the sections write: kernels.json, throughput.json
# (torchvision's AlexNet and the levers, fp32 and bf16), throughput-compile.json, profile-off/,
# profile-bf16/ and profile-off-one-stream/ (trace.json.gz, timeline.png, profile.json; each
# profile.json also copied to profile-<name>.json) and e2e.json. Commit them as
# bench/results/<date>-gpu-<card>/ (bench/report.py reads that folder). PACK=1 tars everything
# but summary.txt into results.tgz, for machines that hand back only a few files.
#
# Each section is a function named section_<name>, run with a time limit; a failing section is
# recorded and the next one runs. A section that cannot run on this machine prints one line
# saying why and returns 77 (skipped). To add one: define section_<name>, add <name>:<seconds> to
# SECTIONS below. The limits together stay within the 8 minutes the whole check may take
# (measured sections took far less: build 30-40 s, model tests 21 s on an H200).
#
# DALI (for the dali_tests section and the e2e section's DALI feeds) on a GPU machine without
# network or DALI: DALI and its libraries are about 166 MiB packed, more than one transfer to
# such a machine carries (64 MiB). Make pieces where pip can download, in a folder git ignores:
#     bash bench/dali_pieces.sh .dali-all     # .dali-all/dali.tar.xz.part-aa, -ab, -ac, join.sh, SHA256SUMS
# then, back to back on the same GPU machine (it must stay up between them), one transfer per
# piece, each copying its piece into /tmp/dali/ there:
#     mkdir -p /tmp/dali && cp .dali-all/dali.tar.xz.part-aa /tmp/dali/      # carrying that piece
#     ...                                                                     # one call per further piece
# and with the last piece also join.sh and SHA256SUMS:
#     cp <last piece> .dali-all/join.sh .dali-all/SHA256SUMS /tmp/dali/ &&
#       bash /tmp/dali/join.sh /tmp/dali /tmp/dali-site &&
#       PYTHONPATH=/tmp/dali-site PACK=1 bash bench/gpu_check.sh
# Without DALI the e2e section still runs its synthetic and torch feeds and says in one line
# that the DALI feeds were skipped.
set -u
cd "$(dirname "$0")/.."

OUT="${OUT:-bench/results/gpu}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export OUT PY PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"

# name:seconds, in order; 480 s together.
SECTIONS="${SECTIONS:-build:75 kernel_tests:50 kernel_bench:30 model_tests:35 dali_tests:45 throughput:80 compile:50 profile:45 e2e:70}"

need_gpu() {
  # Without a visible GPU the CUDA cases would skip and a section would pass for nothing.
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'"
}

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
  need_gpu || return 1
  "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_kernels.py
}

section_kernel_bench() {
  "$PY" -m bench.kernels --device cuda --out "$OUT/kernels.json"
}

section_model_tests() {
  # The two-column net on cuda:0 (column streams on and off) against the grouped reference
  # and the CPU simulation, and the captured (CUDA graph) step against eager steps.
  need_gpu || return 1
  "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py
}

section_throughput() {
  # Training steps of the paper's net on one GPU: two columns on their own streams and on one
  # stream, the one-column net, the grouped-conv equivalent, torchvision's AlexNet (skipped
  # with one line without torchvision), and the levers one at a time; fp32 and bf16 autocast.
  need_gpu || return 1
  "$PY" -c "import torchvision" 2>/dev/null || echo "torchvision is not importable here: its row is skipped"
  "$PY" -m bench.throughput --gpus 0 --config configs/alexnet_paper.yaml --batch 128 --steps 20 --warmup 5 \
    --amp off,bf16 --torchvision --levers channels_last,cudnn_benchmark,foreach,cuda_graphs \
    --out "$OUT/throughput.json"
}

section_compile() {
  # torch.compile over the column stages, beside the plain nets; its own section because
  # compiling takes most of its time (5 graphs per precision: the two columns share them, as
  # torch's dynamo counters showed on the CPU; results are written after each precision). The fused ReLU+LRN op is compiled when it has a fake
  # kernel, else the compiled variant runs TWOCOL_KERNELS=reference (the row says which).
  need_gpu || return 1
  "$PY" -m bench.throughput --gpus 0 --config configs/alexnet_paper.yaml --batch 128 --steps 10 --warmup 3 \
    --amp off,bf16 --levers compile --out "$OUT/throughput-compile.json"
}

section_profile() {
  # twocol profile on the paper net: the timeline of both columns (column streams, as training
  # runs), in fp32 and bf16, and with one stream (no overlap: the cleanest layer times for the
  # cost model); each checked for work in both lanes.
  need_gpu || return 1
  local name args
  for name in off bf16 off-one-stream; do
    case $name in
      off) args="--amp off" ;;
      bf16) args="--amp bf16" ;;
      off-one-stream) args="--amp off --one-stream" ;;
    esac
    # shellcheck disable=SC2086
    "$PY" -m twocol profile -c configs/alexnet_paper.yaml --gpus 0 --steps 3 --warmup 2 $args \
      -o "$OUT/profile-$name" || return 1
    cp "$OUT/profile-$name/profile.json" "$OUT/profile-$name.json"
    "$PY" - "$OUT/profile-$name.json" <<'EOF' || return 1
import json, sys
p = json.load(open(sys.argv[1]))
tl = p["timeline"]
for col in ("A", "B"):
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"):
        v = tl["layers"][col][layer]
        assert v["forward"] > 0 and v["backward"] > 0, (col, layer, v)
host = tl["busy_us"]["host"] / max(tl["any_busy_us"], 1e-9)
print(f"{sys.argv[1]}: kernels placed in both columns' lanes (CUDA streams {tl['streams']}); "
      f"host share of device work {100 * host:.1f}%; {tl['pieces_per_step']:.0f} kernels and copies per step")
EOF
  done
}

section_e2e() {
  # End to end from JPEG files (10,000 at 256 px, made here with every core): synthetic tensors,
  # DALI GPU and CPU decode, torch + Pillow; the paper net, batch 128, both columns on GPU 0.
  need_gpu || return 1
  "$PY" -c "import nvidia.dali" 2>/dev/null ||
    echo "nvidia.dali is not importable here: the DALI feeds are skipped (see the top of bench/gpu_check.sh)"
  "$PY" -m bench.e2e --gpus 0 --out "$OUT/e2e.json"
}

section_dali_tests() {
  # DALI's mixed (GPU) decoder against its CPU decoder on the same epoch plan, each column's
  # device fed by the pipeline, pinned copies, bad and unusual JPEGs (tests/test_gpu_data.py).
  need_gpu || return 1
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
  export -f "section_$name" need_gpu
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
if [ "${PACK:-0}" = 1 ]; then
  (cd "$OUT" && find . -mindepth 1 -maxdepth 1 ! -name summary.txt ! -name results.tgz -printf '%P\n' |
    tar czf results.tgz -T - && find . -mindepth 1 -maxdepth 1 ! -name summary.txt ! -name results.tgz \
    -exec rm -rf {} +)
  ls -l "$OUT"
fi
exit $failed
