"""benchmarks/quantization.py: the per-preset verdict (the goal of its table) and the cache key of a preset's
record. No model is built or timed here (the script's run is the benchmark); the records are written out by hand
with the fields ``measure_preset`` produces.
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("vitedge_quantization_script",
                                                  ROOT / "benchmarks" / "quantization.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(variant: str, p50_b1: float, p50_b8: float, drop: float = 0.0, min_b1: float | None = None) -> dict:
    runtime, precision = variant.split()[:2]
    return {"variant": variant, "runtime": runtime, "precision": precision, "recipe": "static",
            "drop_points": drop, "top1": 90.0 - drop, "p50_b1": p50_b1, "p50_b8": p50_b8,
            "latency_b1": {"p50": p50_b1, "min": min_b1 if min_b1 is not None else p50_b1},
            "latency_b8": {"p50": p50_b8, "min": p50_b8}}


def _record(rows: list[dict]) -> dict:
    base = {r["runtime"]: r for r in rows if r["precision"] == "fp32"}
    for r in rows:
        r["speed_b1"] = r["p50_b1"] / base[r["runtime"]]["p50_b1"]
        r["speed_b8"] = r["p50_b8"] / base[r["runtime"]]["p50_b8"]
    return {"preset": "p", "family": "f", "size": 32, "training": {"steps": 10}, "rows": rows}


def test_verdict_is_yes_only_when_every_runtime_is_no_slower_and_within_one_point():
    q = _script()
    good = _record([_row("onnx fp32", 2.0, 10.0), _row("onnx int8", 1.0, 6.0, drop=0.4),
                    _row("openvino fp32", 2.0, 10.0), _row("openvino int8", 1.5, 9.0, drop=-0.2)])
    s = q.summary_row(good)
    assert s["verdict"] == "yes"
    assert (s["onnx_b1"], s["openvino_b8"]) == (0.5, 0.9)

    slow_ov = _record([_row("onnx fp32", 2.0, 10.0), _row("onnx int8", 1.0, 6.0),
                       _row("openvino fp32", 2.0, 10.0), _row("openvino int8", 1.5, 12.0)])
    assert q.summary_row(slow_ov)["verdict"] == "no: openvino b8 1.20x"

    lossy = _record([_row("onnx fp32", 2.0, 10.0), _row("onnx int8", 1.0, 6.0, drop=1.5)])
    assert q.summary_row(lossy)["verdict"] == "no: onnx drop 1.50"

    # within TIE above fp32 at p50 while the fastest int8 call beat fp32's: a tie, not a pass
    tie = _record([_row("onnx fp32", 2.0, 10.0), _row("onnx int8", 2.06, 6.0, min_b1=1.5)])
    assert q.summary_row(tie)["verdict"] == "tie: onnx b1 p50 1.03x, min 0.75x"


def test_a_failed_int8_export_is_a_miss():
    q = _script()
    rec = _record([_row("onnx fp32", 2.0, 10.0)])
    rec["rows"].append({"variant": "onnx int8", "recipe": "static", "error": "parity refused"})
    assert q.summary_row(rec)["verdict"] == "no: onnx int8 failed"


def test_cached_records_are_keyed_by_the_runtimes_measured():
    q = _script()
    common = dict(image_size=None, train_budget=60.0, max_epochs=8, threads=2, rounds=5, round_ms=150.0)
    onnx_only = q.run_settings(argparse.Namespace(runtimes=["onnx"], **common))
    both = q.run_settings(argparse.Namespace(runtimes=["openvino", "onnx"], **common))
    assert onnx_only != both
    assert both == q.run_settings(argparse.Namespace(runtimes=["onnx", "openvino"], **common))
