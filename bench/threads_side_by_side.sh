#!/usr/bin/env bash
# Two `twocol train` runs sharing the cores: images/s alone and side by side, with OpenMP's
# waiting threads sleeping (what the CLI sets) and spinning (libgomp's default, selected by an
# empty OMP_WAIT_POLICY), in interleaved rounds. Prints the median images/s of each run's logged
# steps (the first one left out). The Threads table of docs/guarantees.md comes from this script.
#
#   bash bench/threads_side_by_side.sh [ROUNDS]      # default 3; makes /tmp/set2000 once
set -u
cd "$(dirname "$0")/.."
T=.venv/bin/twocol
PY=.venv/bin/python
ROUNDS=${1:-3}
[ -d /tmp/set2000 ] || $T synth /tmp/set2000 --classes 10 --per-class 200 --val-per-class 10 >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run() {  # run LABEL POLICY: POLICY "sleep" (the CLI's default) or "spin"
  local dir
  dir=$(mktemp -d -p "$work")
  if [ "$2" = spin ]; then
    OMP_WAIT_POLICY= $T train --gpus cpu --data /tmp/set2000 --run-dir "$dir/run" train.epochs=1 train.log_every=1 >/dev/null 2>&1
  else
    $T train --gpus cpu --data /tmp/set2000 --run-dir "$dir/run" train.epochs=1 train.log_every=1 >/dev/null 2>&1
  fi
  "$PY" - "$dir/run/metrics.jsonl" "$1" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
ips = [r["images_per_s"] for r in rows if r.get("kind") == "step"][1:]
print(f"{sys.argv[2]:<12} median {statistics.median(ips):7.1f} img/s over {len(ips)} steps", flush=True)
PY
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$ROUNDS"); do
  run sleep-alone sleep
  run sleep-pair sleep & run sleep-pair sleep; wait
  run spin-alone spin
  run spin-pair spin & run spin-pair spin; wait
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
