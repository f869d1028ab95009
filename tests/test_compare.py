"""benchmarks/compare.py runs end to end on a tiny configuration and writes consistent results.

No timing is asserted (timings live in the committed benchmark results): only that every requested row was
measured, that the floor ratios are the script's own p50 / (FLOPs / GEMM peak), and that fp32 rows keep the
eager model's digits top-1.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _compare_module():
    spec = importlib.util.spec_from_file_location("vitedge_compare_script", ROOT / "benchmarks" / "compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_flops_counter_counts_a_linear_layer():
    import torch
    cmp = _compare_module()
    lin = torch.nn.Linear(16, 8, bias=False)
    assert cmp.count_flops(lin, torch.zeros(3, 16)) == 2 * 3 * 16 * 8


def test_interleaved_timing_calls_each_runner_in_turn_with_settle_calls():
    from vitedge.bench import time_interleaved
    log = []
    runners = {k: (lambda x, k=k: log.append((k, x))) for k in ("a", "b")}
    stats = time_interleaved(runners, {"a": 1, "b": 2}, rounds=2, iters={"a": 3, "b": 1}, warmup=1, settle=2)
    assert [k for k, _ in log] == ["a", "b"] + 2 * (["a"] * 5 + ["b"] * 3)  # warmup; per round: settle + timed
    assert all(x == {"a": 1, "b": 2}[k] for k, x in log)
    assert stats["a"]["p50"] >= 0 and stats["b"]["p50"] >= 0


def test_compare_runs_on_a_tiny_model(tmp_path):
    pytest.importorskip("onnxruntime")
    cmp = _compare_module()
    peers = ["eager", "ort", "ort_qdyn"]
    res = tmp_path / "results"
    rc = cmp.main(["--presets", "deit_tiny", "--image-size", "32", "32", "--accuracy-size", "32", "32",
                   "--epochs", "2", "--batches", "1", "--threads", "1", "--variants", "onnx:fp32", "onnx:int8",
                   "torchscript:fp32", "--peers", *peers, "--rounds", "1", "--iters", "2", "--warmup", "1",
                   "--cold-runs", "1", "--gemm-n", "512", "--out", str(tmp_path / "out"), "--results", str(res)])
    assert rc == 0
    data = json.loads((res / "compare.json").read_text())
    assert data["machine"]["flags"] is not None and data["gemm_peak_gflops"]["1"] > 0
    flops = data["meta"]["deit_tiny"]["flops"]["1"]
    assert flops > 0
    rows = {r["key"]: r for r in data["rows"] if r.get("key")}
    assert set(rows) == {"onnx:fp32", "onnx:int8", "torchscript:fp32", *peers}, rows.keys()
    floor_ms = flops / (data["gemm_peak_gflops"]["1"] * 1e9) * 1e3
    for key, r in rows.items():
        assert "error" not in r, (key, r.get("error"))
        assert r["p50_b1_t1"] > 0 and r["floor_b1_t1"] == pytest.approx(r["p50_b1_t1"] / floor_ms, rel=1e-6)
        assert 0 <= r["top1"] <= 100
    for key in ("onnx:fp32", "torchscript:fp32", "ort"):  # fp32 keeps the eager predictions
        assert abs(rows[key]["drop_points"]) <= 0.5, (key, rows[key]["drop_points"])
    for key in ("onnx:fp32", "ort"):  # a fresh process reached a first result
        assert rows[key]["cold_start"]["first_result_ms"] > 0 and rows[key]["cold_start"]["peak_rss_mb"] > 0
    assert rows["onnx:int8"]["precision"] == "int8" and rows["ort_qdyn"]["precision"] == "int8"
    md = (res / "compare.md").read_text()
    assert "deit_tiny" in md and "x floor" in md and "ONNX Runtime quantize_dynamic" in md
    assert (res / "compare.png").stat().st_size > 1000
    assert [(c["batch"], c["threads"]) for c in data["summary"]] == [(1, 1)]
    cell = data["summary"][0]
    assert cell["speedup_vs_fastest_peer"] == pytest.approx(cell["fastest_peer_ms"] / cell["best_ms"])
    assert "Must show: every (batch, threads) cell" in md


def test_summary_picks_the_fastest_accurate_artifact_and_flags_int8_slower_than_fp32():
    """The goal columns come from the rows: an artifact over the 0.5-point drop limit is not "best" however fast,
    the fastest peer is taken at any precision, and a default int8 slower than its fp32 is named."""
    cmp = _compare_module()

    def row(who, key, precision, ms, drop):
        return {"preset": "p", "who": who, "key": key, "name": key, "precision": precision, "drop_points": drop,
                "p50_b1_t2": ms, "floor_b1_t2": ms / 2.0}
    rows = [row("vitedge", "onnx:fp32", "fp32", 10.0, 0.0), row("vitedge", "onnx:int8", "int8", 12.0, 0.0),
            row("vitedge", "openvino:int8", "int8", 3.0, 0.4), row("vitedge", "openvino:bf16", "bf16", 1.0, 0.9),
            row("vitedge", "openvino:fp32", "fp32", 8.0, 0.0), row("peer", "ort", "fp32", 9.0, 0.0),
            row("peer", "openvino_default", "bf16", 4.5, 0.2)]
    s = cmp.summarize(rows, "p", 1, 2)
    assert s["best"] == "openvino:int8" and s["best_ms"] == 3.0  # bf16 at 1.0 ms lost 0.9 points
    assert s["fastest_peer_ms"] == 4.5 and s["speedup_vs_fastest_peer"] == pytest.approx(1.5) and s["meets_1_3x"]
    assert s["best_fp32"] == "openvino:fp32" and s["best_fp32_x_floor"] == 4.0 and not s["fp32_within_1_15x_floor"]
    assert s["int8_slower_than_fp32"] == "onnx (12.00 vs 10.00)"
