"""scripts/arm64_qemu_compare.py, the arm64 (qemu-aarch64) vs x86 comparison behind `make arm64`.

Fast: the classify-output check and bad arguments (no build needed).
Slow (`pytest -m slow`), each skipped when what it needs is not built:
* the cross-built runner (build/arm64, from `make arm64`) under qemu-aarch64 on a TorchScript and an ExecuTorch
  artifact of deit_tiny at 32x32: top-1 and logits agree with x86 on every bundled photo;
* the comparison fails (exit 1, one FAIL line per disagreement) when the "arm64" ExecuTorch logits are wrong: an
  x86 vitedge-bench whose .pte outputs are altered stands in for the arm64 one, so no qemu is needed.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "arm64_qemu_compare.py"
ARM64_BENCH = ROOT / "build" / "arm64" / "qemu" / "vitedge-bench"
X86_BENCHES = [ROOT / "build" / "arm64-x86ref" / "cpp" / "vitedge-bench", ROOT / "build" / "cpp" / "cpp" / "vitedge-bench"]
SIZE = 32


def load_script():
    spec = importlib.util.spec_from_file_location("arm64_qemu_compare", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_classify_names_checks_the_first_line_after_the_image():
    mod = load_script()
    png = Path("/w/photos/astronaut.png")
    out = ["/w/photos/astronaut.png", "  293  class_293  0.0123", "  12  class_12  0.0100", "/w/photos/coffee.png",
           "  875  class_875  0.02"]
    assert mod.classify_names(out, png, 293)
    assert not mod.classify_names(out, png, 12)            # second-best is not top-1
    assert not mod.classify_names(out, Path("/w/photos/rocket.jpg"), 293)  # image not in the output
    assert not mod.classify_names(out[:1], png, 293)       # path line without a result line


def test_missing_et_artifact_is_a_usage_error(tmp_path, capsys, monkeypatch):
    mod = load_script()
    art = tmp_path / "ts"
    art.mkdir()
    (art / "manifest.json").write_text("{}")
    bench = tmp_path / "bench"
    bench.write_text("")
    monkeypatch.setattr(sys, "argv", ["arm64_qemu_compare.py", "--artifact", str(art), "--arm64-bench", str(bench),
                                      "--workdir", str(tmp_path / "w"), "--json", str(tmp_path / "r.json"),
                                      "--qemu-version", "q", "--wheel", "w", "--et-artifact", str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as e:
        mod.main()
    assert e.value.code == 2
    assert "nope/manifest.json does not exist" in capsys.readouterr().err


def export(preset_target: str, out: Path) -> Path:
    r = subprocess.run([str(Path(sys.executable).parent / "vitedge"), "export", "deit_tiny", "--target", preset_target,
                        "--image-size", str(SIZE), str(SIZE), "-o", str(out)], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def run_compare(tmp_path: Path, arm64_bench: Path, x86_bench: Path | None, ts: Path, et: Path,
                classify: Path | None = None):
    result = tmp_path / "result.json"
    cmd = [sys.executable, str(SCRIPT), "--artifact", str(ts), "--arm64-bench", str(arm64_bench),
           "--workdir", str(tmp_path / "work"), "--json", str(result), "--qemu-version", "test",
           "--wheel", "test", "--et-artifact", str(et), "--et-wheel", "test"]
    if x86_bench:
        cmd += ["--x86-bench", str(x86_bench)]
    if classify:
        cmd += ["--arm64-classify", str(classify)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    return r, (json.loads(result.read_text()) if result.exists() else None)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    pytest.importorskip("executorch.runtime", reason="executorch is not installed")
    d = tmp_path_factory.mktemp("arm64_artifacts")
    return export("torchscript", d / "ts"), export("executorch", d / "et")


@pytest.mark.slow
def test_arm64_executorch_matches_x86_under_qemu(artifacts, tmp_path):
    if not ARM64_BENCH.exists() or shutil.which("qemu-aarch64") is None:
        pytest.skip("no cross-built runner under qemu (run `make arm64` first)")
    libs = [p for p in (ROOT / "build" / "arm64").rglob("lib*.so*") if "CMakeFiles" not in p.parts]
    if not any("[libexecutorch.so]" in subprocess.run(["readelf", "-d", str(p)], capture_output=True, text=True).stdout
               for p in libs):
        pytest.skip("the arm64 build has no ExecuTorch backend (no library of it links libexecutorch.so)")
    ts, et = artifacts
    x86 = next((b for b in X86_BENCHES if b.exists()), None)
    classify = ARM64_BENCH.parent / "classify"
    classify = classify if classify.exists() else None
    r, res = run_compare(tmp_path, ARM64_BENCH, x86, ts, et, classify)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    section = res["executorch"]
    assert section["passed"] and not section["failures"]
    assert section["top1_agreement_vs_x86_executorch"] == 1.0 and section["top1_agreement_vs_x86_eager"] == 1.0
    assert [p["photo"] for p in section["photos"]] == [p["photo"] for p in res["photos"]] and len(res["photos"]) >= 4
    if classify:
        assert all(p["classify_top1_matches"] is True for p in section["photos"])
    assert section["max_abs_diff_vs_x86_executorch"] <= section["tolerance_max_abs"]


@pytest.mark.slow
def test_wrong_executorch_logits_fail_the_comparison(artifacts, tmp_path):
    x86 = next((b for b in X86_BENCHES if b.exists()), None)
    if x86 is None:
        pytest.skip("no x86 vitedge-bench (make cpp)")
    ts, et = artifacts
    # An x86 vitedge-bench standing in for the arm64 one; on the .pte it raises the smallest logit above the
    # largest, so the top-1 changes and the difference exceeds any tolerance.
    fake = tmp_path / "fake-arm64-bench"
    fake.write_text(f"""#!{sys.executable}
import subprocess, sys
import numpy as np
r = subprocess.run([{str(x86)!r}, *sys.argv[1:]])
if r.returncode:
    sys.exit(r.returncode)
if sys.argv[1] == {str(et)!r}:
    out = sys.argv[sys.argv.index("--dump-output") + 1]
    x = np.fromfile(out, dtype="<f4")
    x[x.argmin()] = x.max() + 1.0
    x.tofile(out)
""")
    fake.chmod(0o755)
    r, res = run_compare(tmp_path, fake, None, ts, et)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    fails = [ln for ln in r.stderr.splitlines() if ln.startswith("FAIL:")]
    assert fails and all("arm64 ExecuTorch" in ln for ln in fails), r.stderr[-3000:]
    photos = [p["photo"] for p in res["photos"]]
    assert [p["photo"] for p in res["executorch"]["photos"]] == photos
    assert all(ln.split(":")[1].strip() in photos for ln in fails), fails  # "FAIL: <photo>: ..."
    assert res["photos"] and all(p["top1_arm64"] == p["top1_x86_pytorch"] for p in res["photos"])  # TorchScript ok
    assert res["executorch"]["passed"] is False
    assert res["executorch"]["top1_agreement_vs_x86_executorch"] < 1.0
