"""`vitedge sweep` (vitedge/sweep.py) on a toy family (tests/sweep_toy.py, imported by every sweep process through
--plugin) trained on the real digits for three epochs at 16x16: the leaderboard's rows, parity and pick, the cells
that cannot run recorded with their reason, resumability (a second run does no cell; a changed option redoes only
the cells it affects), --pick, the --on path with vitedge.remote replaced, and the Ray executor on a local
2-CPU Ray instance."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

import vitedge.remote
from vitedge.cli import main
from vitedge.data import digits_batch, digits_split
from vitedge.manifest import read_manifest
from vitedge.runtime import open_artifact
from vitedge.sweep import SweepConfig, sweep
from vitedge.targets import get_target

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PRESET = "sweeptoy_16"
BASE = ["sweep", "--presets", PRESET, "--plugin", "sweep_toy", "--image-size", "16", "16", "--epochs", "3",
        "--warmup", "2", "--iters", "10"]


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*.json"))}


def test_sweep_leaderboard_resume_and_pick(tmp_path, capsys):
    out, pick = tmp_path / "sweep", tmp_path / "picked"
    args = BASE + ["--targets", "onnx", "torchscript", "trt", "--jobs", "2", "-o", str(out), "--pick", str(pick)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    board = json.loads((out / "local" / "leaderboard.json").read_text())

    # one row per artifact that ran: onnx and torchscript, fp32 and int8
    rows = {(r["target"], r["precision"]): r for r in board["rows"]}
    assert set(rows) == {("onnx", "fp32"), ("onnx", "int8"), ("torchscript", "fp32"), ("torchscript", "int8")}
    for r in rows.values():
        assert 0 <= r["top1"] <= 100 and r["drop_points"] == pytest.approx(r["eager_top1"] - r["top1"])
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["throughput_ips"] > 0 and r["size_mb"] > 0
        assert r["batch"] == 1 and r["threads"] == board["settings"]["threads"]
    eager = {r["eager_top1"] for r in rows.values()}
    assert len(eager) == 1 and eager.pop() > 50  # one fp32 eager reference; 3 epochs learn the digits (chance: 10 %)
    for t in ("onnx", "torchscript"):  # fp32 parity at export: within the fp32 tolerance, top-1 unchanged
        assert rows[(t, "fp32")]["parity_max_abs"] <= 1e-4 and rows[(t, "fp32")]["drop_points"] == 0
        assert rows[(t, "int8")]["parity_cosine"] >= 0.99

    # trt cannot run here: recorded with the target's own reason, not a crash
    reason = get_target("trt").unavailable()
    assert reason is not None
    assert {(r["target"], r["precision"]): r["reason"] for r in board["not_run"]} == {
        ("trt", "fp32"): f"trt does not run here: {reason}", ("trt", "int8"): f"trt does not run here: {reason}"}

    # the pick: the lowest p50 among the artifacts within --max-drop (default 0.5 points)
    within = [r for r in rows.values() if r["drop_points"] <= 0.5]
    best = min(within, key=lambda r: r["p50_ms"])
    assert board["picked"] == {PRESET: best["artifact"]} and [r["picked"] for r in board["rows"]].count(True) == 1
    md = (out / "local" / "leaderboard.md").read_text()
    assert md.count("**picked**") == 1 and "## Not run" in md and md.count(f"| {PRESET} ") == 6
    assert (out / "local" / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"picked for {PRESET} on local: {best['target']} {best['precision']}" in printed

    # --pick: a verified copy of the picked artifact that loads and classifies a held-out digit
    copy = read_manifest(pick / PRESET)  # every SHA-256 checked
    assert copy.manifest == read_manifest(out / "artifacts" / best["artifact"]).manifest
    art, runner = open_artifact(pick / PRESET, trust_code=True)
    x, y = digits_batch(digits_split(0)[1][:8], art.manifest["preprocessing"])
    logits = runner.run(x.numpy())[0]
    assert logits.shape == (8, 10) and np.isfinite(logits).all()

    # a second run does no cell; the cells' files are untouched
    before = _mtimes(out / "cells")
    assert len(before) == 8  # 4 export + 4 timing cells (trt's are recorded in the leaderboard, not as cells)
    assert main(args) == 0
    again = capsys.readouterr().out
    assert "skipped 9 cells already done" in again and "exported" not in again and "timed" not in again
    assert _mtimes(out / "cells") == before
    assert json.loads((out / "local" / "leaderboard.json").read_text())["rows"] == board["rows"]

    # a changed option redoes only the cells it affects: the calibration count is read by static int8 only
    # (the toy's onnx int8 recipe; torchscript int8 is dynamic), then by that artifact's timing cell
    cfg = SweepConfig(presets=[PRESET], out=out, targets=["onnx", "torchscript"], image_size=(16, 16), epochs=3,
                      warmup=2, iters=10, plugins=("sweep_toy",), jobs=1, calib_count=64)
    res = sweep(cfg, log=None)
    assert res["ran"] == 2 and res["skipped"] == 7  # the checkpoint, 3 exports, 3 timings
    changed = {k for k, v in _mtimes(out / "cells").items() if before[k] != v}
    assert changed == {"export/sweeptoy_16.onnx.int8.json", "local/sweeptoy_16.onnx.int8.json"}
    cell = json.loads((out / "cells" / "export" / "sweeptoy_16.onnx.int8.json").read_text())
    assert cell["result"]["quantization"]["calibration"]["count"] == 64

    # a timing option redoes the timing cells only
    res = sweep(SweepConfig(**{**cfg.__dict__, "threads": 1}), log=None)
    assert res["ran"] == 4 and res["skipped"] == 5
    assert {r["threads"] for r in res["leaderboards"]["local"]["rows"]} == {1}


def test_sweep_on_ssh_devices_times_each_device_one_cell_at_a_time(tmp_path, monkeypatch):
    """--on: the timing cells go to vitedge.remote.bench_remote (replaced here: no ssh host in the tests), one at
    a time per device, and each device gets its own leaderboard and pick."""
    calls, active, peak = [], {}, {}
    lock = threading.Lock()

    def bench_remote(artifact, url, *, batch=1, threads=None, warmup=10, iters=50, ssh_options=()):
        with lock:
            active[url] = active.get(url, 0) + 1
            peak[url] = max(peak.get(url, 0), active[url])
        try:
            manifest = read_manifest(artifact).manifest
            # a board where int8 is twice as fast as fp32, so the pick is known
            p50 = 2.0 if manifest["precision"] == "fp32" else 1.0
            calls.append((url, manifest["target"], manifest["precision"], batch, threads, warmup, iters))
            return {"artifact": artifact, "runtime": f"{manifest['backend']} on {url}", "device": "cpu",
                    "batch": batch, "threads": threads, "warmup": warmup, "iters": iters,
                    "latency_ms": {"mean": p50, "p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.2, "min": p50,
                                   "max": p50 * 1.3},
                    "throughput_ips": batch / p50 * 1e3, "peak_rss_mb": 50.0, "artifact_mb": 0.01,
                    "machine": {"cpu": "Cortex-A76", "cores": 4, "flags": ["asimd"], "os": "Linux", "arch": "aarch64"}}
        finally:
            with lock:
                active[url] -= 1

    monkeypatch.setattr(vitedge.remote, "bench_remote", bench_remote)
    devices = ("ssh://pi@board:2222", "ssh://jetson")
    cfg = SweepConfig(presets=[PRESET], out=tmp_path / "sweep", targets=["torchscript"], image_size=(16, 16),
                      epochs=1, warmup=2, iters=10, threads=2, plugins=("sweep_toy",), jobs=1, devices=devices,
                      max_drop=100.0, pick=tmp_path / "picked")
    res = sweep(cfg, log=None)
    assert sorted(calls) == sorted((d, "torchscript", p, 1, 2, 2, 10) for d in devices for p in ("fp32", "int8"))
    assert peak == {d: 1 for d in devices}  # never two timing cells at once on one device
    for d, slug in zip(devices, ("ssh-pi@board-2222", "ssh-jetson")):
        board = json.loads((tmp_path / "sweep" / slug / "leaderboard.json").read_text())
        assert board["device"] == d and board["machine"]["cpu"] == "Cortex-A76"
        assert board["picked"] == {PRESET: f"{PRESET}/torchscript-int8"}
        assert read_manifest(tmp_path / "picked" / slug / PRESET).manifest["precision"] == "int8"
    assert not (tmp_path / "sweep" / "local").exists() and res["ran"] == 1 + 2 + 4


@pytest.mark.parametrize("args, message", [
    (["--presets", "no_such_preset"], "unknown preset"),
    (["--presets", PRESET, "--plugin", "sweep_toy", "--targets", "onnxx"], "unknown target 'onnxx'"),
    (["--presets", PRESET, "--plugin", "sweep_toy", "--on", "ftp://host"], "a device is 'local' or ssh://"),
    (["--presets", PRESET, "--plugin", "no_such_plugin_module"], "--plugin no_such_plugin_module: cannot import"),
    (["--presets", PRESET, "--plugin", "sweep_toy", "--image-size", "15", "15"], "cannot take image size 15x15"),
])
def test_sweep_bad_input_is_one_line(args, message, tmp_path, capsys):
    assert main(["sweep", *args, "-o", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vitedge: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_sweep_ray_executor_on_a_local_two_cpu_instance(tmp_path):
    ray = pytest.importorskip("ray", reason="the optional extra vitedge[ray] is not installed")
    path = os.pathsep.join([str(ROOT), str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})  # the workers import vitedge and the toy from here
    try:
        cfg = SweepConfig(presets=[PRESET], out=tmp_path / "sweep", targets=["torchscript"], image_size=(16, 16),
                          epochs=1, warmup=2, iters=10, threads=1, plugins=("sweep_toy",), executor="ray")
        res = sweep(cfg, log=None)
        board = res["leaderboards"]["local"]
        assert {(r["target"], r["precision"]) for r in board["rows"]} == {("torchscript", "fp32"),
                                                                          ("torchscript", "int8")}
        assert res["ran"] == 5 and board["machine"]["cores"] >= 1  # train, 2 exports, 2 timings
        assert sweep(cfg, log=None)["ran"] == 0
    finally:
        ray.shutdown()


def test_sweep_ray_without_an_address_is_a_usage_error(tmp_path, capsys):
    pytest.importorskip("ray", reason="the optional extra vitedge[ray] is not installed")
    import ray
    if ray.is_initialized():
        pytest.skip("a Ray instance is running in this process")
    assert main(["sweep", "--presets", PRESET, "--plugin", "sweep_toy", "--executor", "ray",
                 "-o", str(tmp_path / "s")]) == 2
    assert "--executor ray needs --ray-address ADDR" in capsys.readouterr().err


def test_an_interrupted_sweep_leaves_whole_cells_and_resumes(tmp_path, monkeypatch):
    """Ctrl-C during a timing cell: the cells finished before it are whole JSON files, no temporary file is left,
    and the next run does only the cells that did not finish."""
    import vitedge.sweep as sweep_module
    real, calls = sweep_module.bench, []

    def interrupted(*a, **kw):
        calls.append(a[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(sweep_module, "bench", interrupted)
    cfg = SweepConfig(presets=[PRESET], out=tmp_path / "sweep", targets=["torchscript"], image_size=(16, 16),
                      epochs=1, warmup=1, iters=5, plugins=("sweep_toy",), jobs=1)
    with pytest.raises(KeyboardInterrupt):
        sweep(cfg, log=None)
    cells = sorted((tmp_path / "sweep" / "cells").rglob("*"))
    assert not [p for p in cells if p.name.startswith(".")]  # no temporary file left behind
    files = [p for p in cells if p.is_file()]
    assert len(files) == 3 and all(json.loads(p.read_text())["result"]["status"] == "ok" for p in files)
    monkeypatch.setattr(sweep_module, "bench", real)
    res = sweep(cfg, log=None)
    assert res["ran"] == 1 and res["skipped"] == 4  # the interrupted timing cell only
