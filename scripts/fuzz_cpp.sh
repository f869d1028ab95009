#!/usr/bin/env bash
# Fuzz the C++ runner's untrusted-input parsers for a while: fuzz_manifest (parse_manifest) and fuzz_image
# (load_image_from_memory: stb_image decode + resize + crop + normalise), libFuzzer + ASan + UBSan (clang).
#
#   scripts/fuzz_cpp.sh [SECONDS_PER_TARGET]        (default 180)
#
# Builds cpp/fuzz into build/fuzz (needs clang: apt-get install clang), replays cpp/fuzz/regressions, then runs
# each target for SECONDS from cpp/fuzz/seeds in a fresh corpus under build/fuzz-long/. Writes executions,
# crashes (crash/leak/timeout/oom inputs found), coverage and corpus size per target to
# benchmarks/results/fuzz_cpp.json. Exit 1 if any target found a crash (its input is kept for triage).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-180}
command -v clang++ >/dev/null || { echo "clang++ not found (apt-get install clang)" >&2; exit 2; }
cmake -S cpp/fuzz -B build/fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/fuzz -j"${JOBS:-2}" >/dev/null
out=benchmarks/results/fuzz_cpp.json
status=0
records=()
for name in manifest image; do
  work=build/fuzz-long/$name
  rm -rf "$work" && mkdir -p "$work/corpus" "$work/crashes"
  exe=build/fuzz/fuzz_$name
  "$exe" -runs=0 cpp/fuzz/regressions/* >/dev/null 2>&1 || { echo "fuzz_$name: a regression input crashes" >&2; status=1; }
  echo "fuzz_$name: ${seconds} s ..." >&2
  set +e
  "$exe" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=25 -print_final_stats=1 \
    -artifact_prefix="$work/crashes/" "$work/corpus" "cpp/fuzz/seeds/$name" >"$work/log.txt" 2>&1
  rc=$?
  set -e
  [ $rc -eq 0 ] || status=1
  records+=("$name" "$rc" "$work")
done
python3 - "$out" "$seconds" "${records[@]}" <<'PY'
import json, os, platform, re, subprocess, sys
from pathlib import Path
out, seconds, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
clang = subprocess.run(["clang++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
targets = {}
for i in range(0, len(rest), 3):
    name, rc, work = rest[i], int(rest[i + 1]), Path(rest[i + 2])
    log = (work / "log.txt").read_text(errors="replace")
    stat = dict(re.findall(r"^stat::(\w+):\s+(\d+)", log, re.M))
    cov = re.findall(r"cov: (\d+) ft: (\d+)", log)
    crashes = sorted(p.name for p in (work / "crashes").iterdir())
    targets[f"fuzz_{name}"] = {
        "executions": int(stat.get("number_of_executed_units", 0)),
        "exec_per_s": int(stat.get("average_exec_per_sec", 0)),
        "seconds": seconds,
        "crashes": len(crashes),
        "crash_inputs": [str(work / "crashes" / c) for c in crashes],
        "exit_code": rc,
        "coverage_edges": int(cov[-1][0]) if cov else None,
        "features": int(cov[-1][1]) if cov else None,
        "corpus_files": len(os.listdir(work / "corpus")),
        "peak_rss_mb": int(stat.get("peak_rss_mb", 0)),
    }
result = {"tool": "libFuzzer + AddressSanitizer + UndefinedBehaviorSanitizer (-fno-sanitize-recover=all)",
          "compiler": clang, "seeds": "cpp/fuzz/seeds (bundled scikit-image photos, an exported manifest)",
          "regressions_replayed": sorted(os.listdir("cpp/fuzz/regressions")),
          "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                      "note": "2 shared cores, loaded by other jobs while this ran: executions/s are low"},
          "targets": targets}
Path(out).write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps({k: {x: v[x] for x in ("executions", "crashes", "coverage_edges")} for k, v in targets.items()}))
PY
exit $status
