#!/usr/bin/env bash
# Everything that needs a GPU, for whoever has one (docs/design.md, section 8): a machine with a
# CUDA GPU, PyTorch, nvcc and ninja (torchvision and DALI optional). Needs no network: it builds
# twocol._C in place against that machine's torch and imports twocol from src/.
#
#   QUICK=1 bash bench/gpu_check.sh      # the headline, at most 4 minutes, build included
#   bash bench/gpu_check.sh --rest       # the other GPU sections, not DALI's (8.1 minutes at most)
#   bash bench/gpu_check.sh --dali       # the DALI sections, with DALI from .dali-all/ (2.6 minutes)
#   bash bench/gpu_check.sh              # all of it (10.3 minutes at most): a machine with DALI installed
#   bash bench/gpu_check.sh --dry-run    # every section's Python on the CPU at tiny sizes (CI runs it)
#
#   OUT=/tmp/gpu bash bench/gpu_check.sh                # results folder (default bench/results/gpu;
#                                                       # a dry run's: a new temporary folder)
#   SECTIONS="build:60 profile:50" bash bench/gpu_check.sh   # chosen sections, name:seconds
#   PACK=1 ...                                          # leave only summary.txt and results.tgz
#   TWOCOL_COMMIT=<commit> ...                          # where the tree has no .git: its commit
#
# The quick check: two-column vs grouped vs torchvision's AlexNet images/s at batch 128, fp32 and
# bf16, eager and CUDA graphs (throughput.json); the fused kernels against copy bandwidth on rows
# past the L2 (kernels.json); the end-to-end synthetic and torch + Pillow rows (e2e.json); the
# profile's timeline.png (profile-off/); report.md beside them. Read it first.
#
# Writes to $OUT: machine.txt (the commit, the GPU and its driver, torch, xz, the size of
# /dev/shm: printed first and again beside the summary), summary.txt (one line per section: ok,
# skipped with the reason, or FAILED, and seconds; a test section cut off by its limit also says
# what passed and failed before the cut), <section>.log, and what the sections write:
# kernels.json, throughput.json (fp32 with torch's TF32 defaults, fp32 with TF32 off, bf16;
# levers), throughput-compile.json, profile-off/, profile-bf16/, profile-off-one-stream/
# (trace.json.gz, timeline.png, profile.json; each profile.json also copied to
# profile-<name>.json; profile-not-reached.txt while some are not made), e2e.json, e2e-dali.json,
# report.md and report.png (bench/report.py over this run). Every JSON names the GPU and the
# commit (null, with commit_missing saying why, where neither .git nor TWOCOL_COMMIT gives it),
# and is written before its first row and after each, listing what it has not reached, so a
# section cut off by its time limit keeps its finished rows. Commit them as
# bench/results/<date>-gpu-<card>/ (bench/report.py reads it): figures from different cards are
# separate runs, never compared with each other.
#
# Each section is a function named section_<name>, run with a time limit; a failing section is
# recorded and the next one runs. A section that cannot run here prints "skipped: <why>" as its
# last line and returns 77. To add one: define section_<name> and add <name>:<seconds> to the
# lists below, its limit fitted to what it was measured to cost.
#
# A GPU machine without network that takes only small uploads (the working tree is about 2 MiB):
# make the DALI pieces where pip can download, into .dali-all/ (ignored by git):
#     bash bench/dali_pieces.sh .dali-all
# (equal pieces of at most 56 MiB, and SHA256SUMS), then send the parts one after the other,
# each with the tree and one piece: SHA256SUMS and the first piece with --quick, the next with
# --rest, the last with --dali (more pieces, more uploads before --dali). Each part does useful
# work on its own; --dali needs every piece in .dali-all/ (a machine that keeps the tree's
# ignored folders between uploads) and unpacks them once into .dali/site, and where one is
# missing its sections are skipped with one line saying which. The build is in place and
# ignored (build/, src/twocol/_C*.so), so a machine that keeps them rebuilds in seconds. Give
# each part TWOCOL_COMMIT=$(git rev-parse --short HEAD), as it stands where the tree was sent
# from, and unpack each part's results.tgz into a folder of its own,
# bench/results/<date>-gpu-<card>-quick/, -rest/ and -dali/ (bench/report.py reads each as a
# run). The quick part is the one that matters most: its report.md has the headline figures.
set -u
cd "$(dirname "$0")/.."

MODE=full
case "${1:-}" in
  "") [ "${QUICK:-0}" = 1 ] && MODE=quick ;;
  --quick) MODE=quick ;;
  --rest) MODE=rest ;;
  --dali) MODE=dali ;;
  --dry-run) MODE=dry ;;
  *) echo "usage: bash bench/gpu_check.sh [--quick|--rest|--dali|--dry-run]" >&2; exit 2 ;;
esac

if [ "$MODE" = dry ]; then
  OUT="${OUT:-$(mktemp -d)}"
  case "$(realpath -m "$OUT")/" in
    "$(realpath "$PWD")/bench/results/"*)
      echo "bench/gpu_check.sh: a dry run writes to a temporary folder, not under bench/results/" >&2; exit 2 ;;
  esac
else
  OUT="${OUT:-bench/results/gpu}"
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
# The interpreter: $PY if set, else the project's .venv, else python3.
if [ -z "${PY:-}" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
# Compiled graphs in an ignored folder of the working tree: kept for the next run where the tree's
# ignored folders are.
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-$PWD/build/inductor}"
export OUT PY MODE PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"

# name:seconds, in order. full: 620 s together; quick: 240; rest: 485; dali: 155 (the DALI
# pieces' unpacking comes before the sections). Each limit is what the section was measured or
# estimated to cost, with a margin of about half as much again:
#   build         30-40 s on an H200 (2026-11-27, nvcc on every core): 60 s (quick: 65); seconds
#                 where build/ is kept from an earlier run.
#   kernel_tests  125 cases (98 of them took 13 s on an H200, 2026-11-27). The CPU half: 23 s in
#                 pytest, 37 s with its start, on 2 cores of an AMD EPYC at load average 5.6
#                 (2026-12-06), 10 s of it the nvcc build of the CUDA file and 10 s the CPU
#                 twins of the 60 CUDA cases; the CUDA cases about as much as their twins plus
#                 CUDA's start and a child process, ~20 s: ~57 s, 90 s.
#   model_tests   6 cases, 2 of them capturing a CUDA graph of the step after 3 eager warm-up
#                 steps; the other 4 took 21 s on an H200 (2026-11-27): ~40 s, 60 s.
#   compile       a cold inductor compile of the 9 stage graphs, forward and backward, for bf16
#                 and again for fp32. On the CPU (AMD EPYC, 2 cores at load average 7-8,
#                 2026-12-06; the paper net at batch 2) the fp32 compile took ~31 s of CPU time
#                 (bench.throughput --levers compile: 42 s of CPU; without the lever 7 s; the
#                 compiled net's own steps 4 s), bf16 and fp32 together 82 s of CPU in 224 s;
#                 on a GPU Triton's compile replaces the C++ one and a fresh machine first
#                 starts its compile workers: ~75 s, 120 s.
#   the others    sized to their own plans of rows and steps (a throughput section of fewer
#                 rows took 16-17 s on an H200, 2026-11-27).
case $MODE in
  quick) DEFAULT="build:65 kernel_bench:30 throughput:45 e2e:50 profile:35 report:15" ;;
  rest) DEFAULT="build:60 kernel_tests:90 model_tests:60 kernel_bench:35 throughput:80 compile:120 profile:35 report:5" ;;
  dali) DEFAULT="build:60 dali_tests:40 e2e_dali:50 report:5" ;;
  dry) DEFAULT="build:10 kernel_tests:10 model_tests:10 dali_tests:10 kernel_bench:120 throughput:240 compile:240 profile:120 e2e:180 e2e_dali:60 report:60" ;;
  *) DEFAULT="build:60 kernel_tests:90 kernel_bench:45 model_tests:60 throughput:100 compile:120 profile:40 e2e:55 dali_tests:45 report:5" ;;
esac
SECTIONS="${SECTIONS:-$DEFAULT}"

need_gpu() {
  # Without a visible GPU the CUDA cases would skip and a section would pass for nothing.
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'"
}

dry() { [ "$MODE" = dry ]; }
quick() { [ "$MODE" = quick ]; }

# DALI from the pieces sent with the parts (.dali-all/: dali.tar.xz.part-*, SHA256SUMS;
# bench/dali_pieces.sh), unpacked once into .dali/site; sets DALI_PROBLEM (one line) when it
# cannot be had. Run in this shell, before the sections, so that they inherit PYTHONPATH.
dali_from_pieces() {
  local dir=.dali-all site=.dali/site piece
  if "$PY" -c "import nvidia.dali" 2>/dev/null; then return; fi
  if [ ! -f "$dir/SHA256SUMS" ]; then
    DALI_PROBLEM="no $dir/SHA256SUMS (sent with the first part; not kept since?)"; return
  fi
  while read -r _ piece; do
    if [ ! -f "$dir/$piece" ]; then
      DALI_PROBLEM="DALI piece $piece is missing from $dir (not sent, or not kept since it was?)"; return
    fi
  done <"$dir/SHA256SUMS"
  if ! (cd "$dir" && sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1); then
    DALI_PROBLEM="a DALI piece in $dir does not match SHA256SUMS (a broken upload?): send it again"; return
  fi
  if ! cmp -s "$dir/SHA256SUMS" "$site.sums"; then
    # Through Python's lzma, which every machine that runs this has (xz may not be installed).
    rm -rf "$site" && mkdir -p "$site" &&
      cat "$dir"/dali.tar.xz.part-* | "$PY" -c 'import sys, tarfile
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|xz") as t:
    t.extractall(sys.argv[1], filter="data")' "$site" && cp "$dir/SHA256SUMS" "$site.sums" ||
      { DALI_PROBLEM="the DALI pieces did not unpack into $site"; return; }
  fi
  export PYTHONPATH="$PWD/$site:$PYTHONPATH"
  "$PY" -c "import nvidia.dali" 2>/dev/null || DALI_PROBLEM="DALI unpacked into $site but does not import"
}

machine() {
  # What ran this: printed first, and again beside the summary (machine.txt).
  echo "commit: $("$PY" -c 'from twocol.provenance import commit; c, why = commit(); print(c or f"unknown: {why}")')"
  echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null |
    paste -sd ';' - | grep . || echo "none seen by nvidia-smi")"
  "$PY" -c 'import platform, torch; print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), Python {platform.python_version()}")' \
    2>/dev/null || echo "torch: not importable by $PY"
  echo "cores: $(nproc)"
  echo "xz: $(command -v xz || echo "not found (the DALI pieces unpack without it)")"
  echo "/dev/shm: $(df -h --output=size,avail /dev/shm 2>/dev/null | tail -n 1 | awk '{print $1 " (" $2 " free)"}' | grep . || echo "none")"
}

# The test sections' pytest, as the section's own process: the limit's SIGTERM reaches it, and it
# still writes what passed and failed before the cut (bench/pytest_sigterm.py).
run_tests() {
  exec "$PY" -m pytest -q -p no:cacheprovider -p bench.pytest_sigterm -rs "$@"
}

section_build() {
  if dry; then
    "$PY" -c "from twocol import ops; assert ops.KERNELS_UNAVAILABLE is None, ops.KERNELS_UNAVAILABLE" || return 1
    echo "skipped: dry run: twocol._C as installed (the CPU kernels load); nvcc builds only on a GPU machine"
    return 77
  fi
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
p = torch.cuda.get_device_properties(0)
print(f"twocol._C has CUDA kernels: torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{p.name}, L2 {p.L2_cache_size / 2 ** 20:.0f} MiB")
EOF
}

section_kernel_tests() {
  if dry; then echo "skipped: dry run: CI runs tests/test_kernels.py (its CUDA cases skip without a GPU)"; return 77; fi
  need_gpu || return 1
  run_tests tests/test_kernels.py
}

section_model_tests() {
  # The two-column net on cuda:0 (column streams on and off) against the grouped reference
  # and the CPU simulation, and the captured (CUDA graph) step against eager steps.
  if dry; then echo "skipped: dry run: CI runs tests/test_gpu.py (it skips without a GPU)"; return 77; fi
  need_gpu || return 1
  run_tests tests/test_gpu.py
}

section_kernel_bench() {
  # The quick check: the rows past an H100's or H200's L2 (both columns at N = 128).
  if dry; then
    "$PY" -m bench.kernels --device cpu --layers conv2_column --batches 1 --dtypes float32 --repeats 1 \
      --pretend-l2-mib 1 --out "$OUT/kernels.json"
  elif quick; then
    "$PY" -m bench.kernels --device cuda --layers conv1,conv2 --batches 128 --out "$OUT/kernels.json"
  else
    "$PY" -m bench.kernels --device cuda --out "$OUT/kernels.json"
  fi
}

section_throughput() {
  # Training steps of the paper's net on one GPU (twocol.step, as training takes them). Quick:
  # two-column, grouped, torchvision's AlexNet, eager and captured, fp32 and bf16. Otherwise also
  # one stream, the one-column net, fp32 with TF32 off, and the levers one at a time.
  if dry; then
    "$PY" -m bench.throughput --gpus cpu --config configs/tiny_twocol.yaml --batch 4 --steps 1 --warmup 1 \
      --amp off,off-tf32-off,bf16 --variants twocol,grouped --torchvision \
      --levers channels_last,cudnn_benchmark,foreach,cuda_graphs --out "$OUT/throughput.json"
    return
  fi
  need_gpu || return 1
  "$PY" -c "import torchvision" 2>/dev/null || echo "torchvision is not importable here: its rows are skipped"
  if quick; then
    "$PY" -m bench.throughput --gpus 0 --config configs/alexnet_paper.yaml --batch 128 --steps 20 --warmup 5 \
      --amp off,bf16 --variants twocol,grouped --torchvision --levers cuda_graphs --out "$OUT/throughput.json"
  else
    "$PY" -m bench.throughput --gpus 0 --config configs/alexnet_paper.yaml --batch 128 --steps 20 --warmup 5 \
      --amp off,off-tf32-off,bf16 --torchvision --levers channels_last,cudnn_benchmark,foreach,cuda_graphs \
      --out "$OUT/throughput.json"
  fi
}

section_compile() {
  # torch.compile over the column stages beside the plain net; bf16 first. Compiling takes most
  # of the time; the JSON is written after every round of steps, warm-up rounds included, so a
  # compile cut off by the limit still leaves the plain net's rows and says what it missed. The
  # fused ReLU+LRN op is compiled when it has a fake kernel, else the compiled variant runs
  # TWOCOL_KERNELS=reference (the row says which).
  if dry; then
    "$PY" -m bench.throughput --gpus cpu --config configs/tiny_twocol.yaml --batch 4 --steps 1 --warmup 1 \
      --amp off --variants twocol --levers compile --compile-backend aot_eager --out "$OUT/throughput-compile.json"
    return
  fi
  need_gpu || return 1
  "$PY" -m bench.throughput --gpus 0 --config configs/alexnet_paper.yaml --batch 128 --steps 10 --warmup 2 \
    --amp bf16,off --variants twocol --levers compile --out "$OUT/throughput-compile.json"
}

section_profile() {
  # twocol profile on the paper net: the timeline of both columns (column streams, as training
  # runs), in fp32 and bf16, and with one stream (no overlap: the cleanest layer times for the
  # cost model); each checked for work in both lanes. Quick: fp32 only.
  local name args names="off bf16 off-one-stream" run="-c configs/alexnet_paper.yaml --gpus 0 --steps 3 --warmup 2"
  if dry; then
    names=off run="-c configs/tiny_twocol.yaml --gpus cpu --steps 1 --warmup 0"
  else
    need_gpu || return 1
    quick && names=off
  fi
  # The profiles not yet made, one per line, rewritten as each one finishes (gone when all are).
  local left="$names"
  echo "$left" | tr ' ' '\n' >"$OUT/profile-not-reached.txt"
  for name in $names; do
    case $name in
      off) args="--amp off" ;;
      bf16) args="--amp bf16" ;;
      off-one-stream) args="--amp off --one-stream" ;;
    esac
    # shellcheck disable=SC2086
    "$PY" -m twocol profile $run $args -o "$OUT/profile-$name" || return 1
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
    [ -s "$OUT/profile-$name/timeline.png" ] || { echo "no timeline.png in $OUT/profile-$name"; return 1; }
    left=$(echo "$left" | tr ' ' '\n' | grep -vx "$name" | tr '\n' ' ')
    echo "$left" | tr ' ' '\n' | grep . >"$OUT/profile-not-reached.txt" || rm -f "$OUT/profile-not-reached.txt"
  done
}

e2e() {
  # bench/e2e.py with the feeds given; the paper net, batch 128, both columns on GPU 0, 10,000
  # JPEGs at 256 px made here with every core (in data/, ignored: reused by a later run on a
  # machine that keeps it). Dry run: the tiny net, 40 JPEGs in $OUT.
  if dry; then
    "$PY" -m bench.e2e --gpus cpu --preset tiny --images 40 --batch 8 --steps 2 --warmup 1 --workers 1 \
      --data-dir "$OUT/e2e-data" --feeds "$1" --out "$2"
  else
    need_gpu || return 1
    "$PY" -m bench.e2e --gpus 0 --feeds "$1" --out "$2"
  fi
}

section_e2e() {
  # End to end from JPEG files: synthetic tensors (the ceiling) and torch + Pillow; in a full
  # run also DALI's GPU and CPU decoding (skipped, one line each, where DALI is not importable).
  if [ "$MODE" = full ]; then e2e synthetic,dali-gpu,dali-cpu,torch "$OUT/e2e.json"; else e2e synthetic,torch "$OUT/e2e.json"; fi
}

section_e2e_dali() {
  # DALI's GPU and CPU decoding end to end, against the synthetic ceiling of the same run (a
  # dry run: DALI's CPU decoding where DALI imports, each feed that cannot run skipped in its row).
  if [ -n "${DALI_PROBLEM:-}" ]; then echo "skipped: $DALI_PROBLEM"; return 77; fi
  e2e synthetic,dali-gpu,dali-cpu "$OUT/e2e-dali.json"
}

section_dali_tests() {
  # DALI's mixed (GPU) decoder against its CPU decoder on the same epoch plan, each column's
  # device fed by the pipeline, pinned copies, bad and unusual JPEGs (tests/test_gpu_data.py).
  if dry; then echo "skipped: dry run: CI runs tests/test_gpu_data.py (it skips without a GPU)"; return 77; fi
  if [ -n "${DALI_PROBLEM:-}" ]; then echo "skipped: $DALI_PROBLEM"; return 77; fi
  need_gpu || return 1
  if ! "$PY" -c "import nvidia.dali" 2>/dev/null; then
    echo "skipped: nvidia.dali cannot be imported here (install nvidia-dali-cuda<CUDA major>, or send the pieces: see the top of bench/gpu_check.sh)"
    return 77
  fi
  # An importable DALI that cannot decode on the GPU is a failure, not a skip.
  "$PY" -c "from twocol.data.loader import dali_problem; p = dali_problem('cuda:0'); assert p is None, p" || return 1
  run_tests tests/test_gpu_data.py
}

section_report() {
  # bench/report.py over this run's JSON files, as it reads a committed run folder.
  local run
  run="$OUT/report-input/$(date +%F)-gpu-$(if dry; then echo dry-run; else echo this-run; fi)"
  rm -rf "$OUT/report-input" && mkdir -p "$run" || return 1
  cp "$OUT"/*.json "$run"/ 2>/dev/null
  "$PY" -m bench.report --results "$OUT/report-input" --out "$OUT/report.md" || return 1
  rm -rf "$OUT/report-input"
}

run_section() {
  local name=$1 limit=$2 start=$SECONDS rc status tests
  echo "== $name (limit ${limit}s)"
  timeout -k 10 "$limit" bash -c "section_$name" >"$OUT/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    77) status="skipped: $(tail -n 1 "$OUT/$name.log" | sed 's/^skipped: //')"; rc=0 ;;
    124 | 137)
      # A test section's count of what passed and failed before the cut: pytest's last line.
      tests=$(grep -E '[0-9]+ (passed|failed|errors?|skipped)' "$OUT/$name.log" | tail -n 1 | tr -d '=' |
        sed 's/^ *//; s/ in [0-9.]*s.*$//')
      status="FAILED (timed out${tests:+; before the cut: $tests})" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  printf '%-14s %5ds  %s\n' "$name" $((SECONDS - start)) "$status" >>"$OUT/summary.txt"
  tail -n 25 "$OUT/$name.log"
  return $rc
}

export -f need_gpu dry quick e2e run_tests $(compgen -A function section_)
machine >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
: >"$OUT/summary.txt"
DALI_PROBLEM=""
case " $SECTIONS" in
  *" dali_tests:"* | *" e2e_dali:"*) dry || dali_from_pieces ;;
esac
export DALI_PROBLEM
[ -n "$DALI_PROBLEM" ] && echo "DALI sections skipped: $DALI_PROBLEM"
failed=0
for entry in $SECTIONS; do
  run_section "${entry%%:*}" "${entry##*:}" || failed=1
done
echo "== summary ($OUT)"
cat "$OUT/machine.txt" "$OUT/summary.txt"
if [ "${PACK:-0}" = 1 ]; then
  (cd "$OUT" && find . -mindepth 1 -maxdepth 1 ! -name summary.txt ! -name results.tgz -printf '%P\n' |
    tar czf results.tgz -T - && find . -mindepth 1 -maxdepth 1 ! -name summary.txt ! -name results.tgz \
    -exec rm -rf {} +)
  ls -l "$OUT"
fi
exit $failed
