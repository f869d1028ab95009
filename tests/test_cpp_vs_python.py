"""benchmarks/cpp_vs_python.py on a tiny configuration: one preset, TorchScript, one round, a few iterations.

Checks the structure of the JSON and Markdown it writes and that every cell and ratio is computed from the
per-round numbers it measured; never a timing goal (speed goals live in the benchmark itself)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks/cpp_vs_python.py"
CPP_BENCH = ROOT / "build/cpp/cpp/vitedge-bench"

pytestmark = pytest.mark.skipif(not CPP_BENCH.exists(), reason="C++ runner not built (make cpp)")


def run(*args, timeout=1200):
    r = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cpp_vs_python")
    run("--presets", "deit_tiny", "--targets", "torchscript", "--rounds", "1", "--warmup", "1", "--iters", "3",
        "--threads", "1", "--work", tmp / "work", "--out", tmp / "res")
    return tmp, json.loads((tmp / "res.json").read_text()), (tmp / "res.md").read_text()


def test_json_structure(measured):
    _, res, _ = measured
    assert res["benchmark"] == "cpp_vs_python" and res["goal_ratio_max"] == 1.03
    s = res["settings"]
    assert (s["batch"], s["threads"], s["rounds"], s["warmup"], s["iters"]) == (1, 1, 1, 1, 3)
    m = res["machine"]
    assert m["cpu"] and m["cores"] >= 1 and isinstance(m["flags"], list)
    assert len(res["load_average_1_5_15min"]["before"]) == 3
    assert res["skipped"] == []
    (row,) = res["rows"]
    assert (row["preset"], row["target"], row["precision"]) == ("deit_tiny", "torchscript", "fp32")
    assert row["runtime"] == {"cpp": "libtorch-cpp", "bare": "libtorch-cpp-bare", "python": "libtorch"}
    assert {k: len(v) for k, v in row["rounds_p50_ms"].items()} == {"cpp": 1, "bare": 1, "python": 1}


def test_cells_and_ratios_come_from_the_measured_rounds(measured):
    _, res, md = measured
    (row,) = res["rows"]
    r = row["rounds_p50_ms"]
    for mode in ("cpp", "bare", "python"):
        assert row[f"{mode}_p50_ms"] == pytest.approx(float(np.median(r[mode])))
        assert row[f"{mode}_p50_ms"] > 0
    rounds = row["rounds_p50_ms"]
    assert row["ratio_cpp_python"] == pytest.approx(
        float(np.median([c / p for c, p in zip(rounds["cpp"], rounds["python"])])))
    assert row["ratio_bare_python"] == pytest.approx(
        float(np.median([b / p for b, p in zip(rounds["bare"], rounds["python"])])))
    assert row["goal_met"] == (row["ratio_cpp_python"] <= 1.03)
    line = next(ln for ln in md.splitlines() if ln.startswith("| deit_tiny | torchscript |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3:8] == [f"{row['cpp_p50_ms']:.2f}", f"{row['bare_p50_ms']:.2f}", f"{row['python_p50_ms']:.2f}",
                          f"{row['ratio_cpp_python']:.3f}", f"{row['ratio_bare_python']:.3f}"]
    assert cells[8] == ("met" if row["goal_met"] else "missed")


def test_a_target_the_cpp_runner_cannot_load_is_skipped_with_its_reason(measured):
    tmp, _, _ = measured
    fake = tmp / "fake-bench"  # a runner that has no backend for anything: every cell is skipped, nothing timed
    fake.write_text("#!/bin/sh\necho \"vitedge-bench: error: backend 'libtorch' is not built in\" >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    run("--presets", "deit_tiny", "--targets", "torchscript", "--rounds", "1", "--iters", "1", "--work", tmp / "work",
        "--reuse", "--bench", fake, "--out", tmp / "skip")
    res = json.loads((tmp / "skip.json").read_text())
    assert res["rows"] == []
    assert res["skipped"] == [{"preset": "deit_tiny", "target": "torchscript", "precision": "fp32",
                               "reason": "the C++ runner cannot run it here: vitedge-bench: error: backend "
                                         "'libtorch' is not built in"}]
    assert "- deit_tiny torchscript fp32: the C++ runner cannot run it here" in (tmp / "skip.md").read_text()
    assert os.path.isdir(tmp / "work" / "deit_tiny-torchscript")  # --work keeps the artifacts


def test_ratio_pairs_each_round():
    """A machine that shifts between a fast and a slow state between rounds: the paired ratio (median of per-round
    C++/Python) stays 1.0 where the ratio of the medians would not."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from cpp_vs_python import summarise
    s = summarise({"cpp": [14.0, 22.0, 22.0], "bare": [14.0, 14.0, 22.0], "python": [14.0, 22.0, 14.0]})
    assert s["cpp_p50_ms"] == 22.0 and s["python_p50_ms"] == 14.0   # medians: 22 / 14 would read 1.57
    assert s["ratio_cpp_python"] == pytest.approx(1.0)
    assert s["ratio_bare_python"] == pytest.approx(1.0)
