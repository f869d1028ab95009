"""Longer Hypothesis fuzz run of the manifest reader and artifact loaders (issue 9); writes
``benchmarks/results/fuzz_python.json``.

The properties are those of ``tests/hardening/test_fuzz_manifest.py`` (allowed outcomes: success or a one-line
VitedgeError). Each property runs in its own child process for its share of the time budget, so a crash of a
native library (a signal) is recorded as a crash instead of ending the run. Inside a child, Hypothesis is run
again and again with fresh seeds (no example database) until the time is up; every executed example is counted,
and every falsifying example Hypothesis reports (after shrinking) is recorded with its error.

    .venv/bin/python benchmarks/fuzz_python.py [--seconds 60] [--out benchmarks/results/fuzz_python.json]

The manifest property opens artifacts of every target here (the suite's short run only the ONNX and TorchScript
ones).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "hardening"))  # test_fuzz_manifest: the properties
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from vitedge.files import write_json_atomic  # noqa: E402

PROPERTIES = ["manifest_json", "manifest_bytes", "zip", "onnx", "image", "safetensors"]


def _property(name: str, counter: dict):
    """A plain callable running one Hypothesis-driven batch of property ``name`` (counts executions)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    import test_fuzz_manifest as F
    from vitedge.targets import TARGETS

    def count(fn):
        def wrapped(*a, **k):
            counter["executions"] += 1
            return fn(*a, **k)
        return wrapped

    opts = dict(max_examples=200, deadline=None, database=None, derandomize=False,
                suppress_health_check=list(HealthCheck))
    if name == "manifest_json":
        @settings(**opts)
        @given(manifest=F.mutated_manifests(), verify=st.booleans())
        @count
        def prop(manifest, verify):
            F.check_manifest(json.dumps(manifest).encode(), verify, targets=tuple(TARGETS))
    elif name == "manifest_bytes":
        @settings(**opts)
        @given(data=F.mutated_json_text() | st.binary(max_size=512), verify=st.booleans())
        @count
        def prop(data, verify):
            F.check_manifest(data, verify, targets=tuple(TARGETS))
    else:
        @settings(**opts)
        @given(data=F.mutated_seed(name))
        @count
        def prop(data):
            F.CHECKS[name](data)
    return prop


def worker(name: str, seconds: float) -> dict:
    """Run property ``name`` repeatedly for ``seconds``; return executions and distinct failures."""
    import warnings
    warnings.simplefilter("ignore")
    counter = {"executions": 0}
    failures: dict[str, dict] = {}
    batches = 0
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        prop = _property(name, counter)
        batches += 1
        try:
            prop()
        except Exception as e:  # noqa: BLE001 - a falsifying example: record it, keep fuzzing
            key = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            entry = failures.setdefault(key, {"error": key, "count": 0,
                                              "where": traceback.format_exc().splitlines()[-3:]})
            entry["count"] += 1
    return {"property": name, "seconds": seconds, "executions": counter["executions"], "hypothesis_runs": batches,
            "failures": list(failures.values())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="total time budget, split over the properties")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fuzz_python.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.seconds)))
        return 0
    share = args.seconds / len(PROPERTIES)
    results = []
    for name in PROPERTIES:
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, __file__, "--worker", name, "--seconds", str(share)],
                           capture_output=True, text=True, cwd=ROOT, timeout=share * 4 + 300)
        if p.returncode == 0:
            r = json.loads(p.stdout.strip().splitlines()[-1])
            r["crashes"] = 0
        else:  # a signal (negative code) or an interpreter abort: a crash
            r = {"property": name, "seconds": share, "executions": None, "failures": [], "crashes": 1,
                 "crash": {"returncode": p.returncode, "stderr_tail": p.stderr[-2000:]}}
        r["wall_s"] = round(time.monotonic() - t0, 1)
        results.append(r)
        print(f"{name:15s} executions {r['executions']}, failures {len(r['failures'])}, crashes {r['crashes']}",
              flush=True)
    from vitedge.machine import machine_info
    summary = {"tool": f"hypothesis {__import__('hypothesis').__version__}", "seconds": args.seconds,
               "executions": sum(r["executions"] or 0 for r in results),
               "failures": sum(len(r["failures"]) for r in results),
               "crashes": sum(r["crashes"] for r in results),
               "properties": results, "python": platform.python_version(), "machine": machine_info(),
               "note": "machine shared with other jobs while this ran (loaded); executions depend on load",
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = write_json_atomic(args.out, summary)
    print(f"total: {summary['executions']} executions, {summary['failures']} failures, {summary['crashes']} crashes "
          f"-> {out}")
    return 0 if summary["failures"] == 0 and summary["crashes"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
