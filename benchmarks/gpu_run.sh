#!/usr/bin/env bash
# One prepared command for a lent GPU: quick and the gpu profile on CUDA, the report, and the
# memory checks of issue 9 (foreign_bytes 0, peak >= params + grads + optimizer state).
# Usage: benchmarks/gpu_run.sh OUT_DIR [extra pytest args...]   (DEVICE=cpu to try it on a CPU)
set -uo pipefail
out=${1:?usage: benchmarks/gpu_run.sh OUT_DIR [pytest args]}; shift
device=${DEVICE:-cuda}
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:-.}
start=$(date +%s)
python -m pytest benchmarks/ -q -p no:cacheprovider --bench-profile quick --bench-device "$device" \
    --benchmark-json="$out/quick-$device.json" "$@" > "$out/quick-$device.log" 2>&1
echo "quick: rc=$? $(( $(date +%s) - start )) s"; tail -3 "$out/quick-$device.log"
mid=$(date +%s)
python -m pytest benchmarks/ -q -p no:cacheprovider --bench-profile gpu --bench-device "$device" \
    --benchmark-json="$out/gpu-$device.json" "$@" > "$out/gpu-$device.log" 2>&1
echo "gpu: rc=$? $(( $(date +%s) - mid )) s"; tail -3 "$out/gpu-$device.log"
python -m bench_lib report "$out/gpu-$device.json" -o "$out/report" > /dev/null \
    && echo "report: $out/report/report.md"
python - "$out" "$device" <<'PY'
import json, sys, pathlib
out, device = pathlib.Path(sys.argv[1]), sys.argv[2]
for name in ("quick", "gpu"):
    path = out / f"{name}-{device}.json"
    if not path.exists() or not path.stat().st_size:
        print(f"{name}: no JSON (see the journal beside it)"); continue
    recs = [b["extra_info"] for b in json.loads(path.read_text())["benchmarks"]]
    ok = [r for r in recs if r["status"] == "ok"]
    foreign = [r["case_id"] for r in ok if (r["foreign_bytes"] or 0) > (2 << 20)]
    low = [r["case_id"] for r in ok if r["peak_memory_bytes"]
           < r["param_bytes"] + r["grad_bytes"] + r["optimizer_state_bytes"]]
    ws = sorted({r["workspace_bytes"] for r in ok})
    print(f"{name}: {len(ok)} ok cases; foreign_bytes > 2 MiB: {len(foreign)} {foreign[:5]}; "
          f"peak below state: {len(low)} {low[:5]}; workspace_bytes {ws}")
PY
echo "total $(( $(date +%s) - start )) s"
