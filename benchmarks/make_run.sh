#!/usr/bin/env bash
# The README's first command on a fresh clone: total wall time (setup included), then each stage's
# time from the run's manifest, and the same command again (everything skipped).
#
#   bash benchmarks/make_run.sh [extra make arguments, e.g. ARGS='--seed 1']
#   KEEP_RUN=DIR bash benchmarks/make_run.sh     also keeps the run directory in DIR
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "$(dirname "$repo")/make-run-bench.XXXX")  # beside the repo: ../shared stays reachable
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"
cd "$work/clone"
start=$(date +%s)
make run "$@" > "$work/first.log" 2>&1 || { tail -40 "$work/first.log"; exit 1; }
first=$(( $(date +%s) - start ))
start=$EPOCHREALTIME
make run "$@" > "$work/second.log" 2>&1 || { tail -40 "$work/second.log"; exit 1; }
second=$(python3 -c "print(round($EPOCHREALTIME - $start, 1))")
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(date +%F)"
echo "make run on a fresh clone: ${first} s (setup + every stage); again: ${second} s"
.venv/bin/python - <<'PY'
import json
stages = json.load(open("runs/default/manifest.json"))["stages"]
print("| stage | seconds |\n|---|---:|")
for name, record in sorted(stages.items(), key=lambda item: item[1]["started"]):
    print(f"| {name} | {record['seconds']:.0f} |")
PY
grep -E "^report:" "$work/first.log"
.venv/bin/python - <<'PY'
import json
print("| direction | kind | success | median L0 | median L1 | median L∞ | targets with ≤ 10 cells |\n|---|---|---:|---:|---:|---:|---:|")
for r in json.load(open("runs/default/tables/summary.json")):
    print(f"| {r['direction'].replace('to', '→')} | {r['kind']} | {100 * r['success_rate']:.1f}% ({r['successes']} of {r['targets']}) | "
          f"{r['median_l0']:.0f} | {r['median_l1']:.2f} | {r['median_linf']:.2f} | {100 * r['share_l0_le_10']:.0f}% |")
PY
if [[ -n "${KEEP_RUN:-}" ]]; then rm -rf "$KEEP_RUN"; cp -r runs/default "$KEEP_RUN"; fi
