"""--device plumbing (vitedge/device.py): CUDA for TorchScript and AOTInductor only, clear refusals elsewhere, the
CPU path unchanged, the manifest's export.device allow-listed. What needs a GPU runs in scripts/gpu_check.sh."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import vitedge.export
from vitedge.bench import bench
from vitedge.data import make_preprocessing
from vitedge.device import artifact_device, check_target_device, parse_device, require_device
from vitedge.errors import ArtifactError, RuntimeMissingError, UsageError
from vitedge.models.vit import ViT
from vitedge.targets import aotinductor

from helpers import assert_one_line_error

ROOT = Path(__file__).resolve().parents[2]
CPP_BENCH = ROOT / "build/cpp/cpp/vitedge-bench"
SIZE = (32, 32)
HAS_CUDA = torch.cuda.is_available()


def tiny_vit() -> ViT:
    torch.manual_seed(0)
    return ViT(image_size=32, patch_size=8, dim=32, depth=1, heads=2, mlp_dim=64, num_classes=7).eval()


def cli(*args):
    return subprocess.run([sys.executable, "-m", "vitedge.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def ts_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("device") / "tiny_ts"
    return vitedge.export.export(tiny_vit(), torch.zeros(2, 3, *SIZE), "torchscript", out,
                                 preprocessing=make_preprocessing(SIZE), device="cpu")


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("device") / "tiny_onnx"
    return vitedge.export.export(tiny_vit(), torch.zeros(2, 3, *SIZE), "onnx", out,
                                 preprocessing=make_preprocessing(SIZE))


@pytest.mark.parametrize("dev", ["cpu", "cuda", "cuda:0", "cuda:12"])
def test_parse_device_accepts(dev):
    assert parse_device(dev) == dev


@pytest.mark.parametrize("dev", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:1234", "cpu:0", "mps", "", "cuda:0 "])
def test_parse_device_refuses(dev):
    with pytest.raises(UsageError, match="device must be cpu, cuda or cuda:N"):
        parse_device(dev)


@pytest.mark.parametrize("target", ["onnx", "openvino", "executorch", "coreml", "trt"])
def test_cpu_only_targets_refuse_cuda(target):
    with pytest.raises(UsageError, match=f"target {target} runs on the CPU"):
        check_target_device(target, "cuda")
    check_target_device(target, "cpu")  # no error


def test_torchscript_int8_refuses_cuda():
    with pytest.raises(UsageError, match="runs on the CPU only"):
        check_target_device("torchscript", "cuda:0", "int8")
    check_target_device("torchscript", "cuda", "fp16")
    check_target_device("aotinductor", "cuda", "fp32")


@pytest.mark.skipif(HAS_CUDA, reason="this PyTorch has CUDA: the refusal is for CPU-only builds")
def test_require_device_without_cuda():
    require_device("cpu")
    with pytest.raises(RuntimeMissingError, match="device cuda requested, but this PyTorch"):
        require_device("cuda")


def test_export_refuses_cuda_for_onnx_before_any_work(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(UsageError, match="target onnx runs on the CPU"):
        vitedge.export.export(tiny_vit(), torch.zeros(2, 3, *SIZE), "onnx", out, device="cuda")
    assert not out.exists()


def test_manifest_device_is_allow_listed():
    assert artifact_device({}) == "cpu"
    assert artifact_device({"export": {"device": "cuda"}}) == "cuda"
    for bad in ("tpu", "cuda:0", 1, None, ["cuda"]):
        with pytest.raises(ArtifactError, match="export.device"):
            artifact_device({"export": {"device": bad}})


def test_aotinductor_refuses_a_package_for_another_device(tmp_path):
    # The device check comes before the package bytes are read: a manifest claiming cuda is refused on cpu, and
    # a cpu package on cuda, with the way out in the message.
    fake = SimpleNamespace(manifest={"export": {"device": "cuda"}}, file=tmp_path / "model.pt2",
                           read_file=lambda: pytest.fail("must not be read"))
    with pytest.raises(ArtifactError, match="compiled for cuda, not cpu; run it with --device cuda"):
        aotinductor.load(fake)
    fake.manifest = {"export": {"device": "cpu"}}
    with pytest.raises(ArtifactError, match="compiled for cpu, not cuda:0"):
        aotinductor.load(fake, device="cuda:0")


def test_cpu_path_records_device_and_runs(ts_artifact, photo_batch):
    m = ts_artifact.manifest
    assert m["export"]["device"] == "cpu"
    assert m["parity"]["batch_3"]["max_abs"] <= 1e-4  # the CPU tolerance, not the CUDA one
    r = bench(ts_artifact.path, batch=2, threads=1, warmup=1, iters=3, trust_code=True, device="cpu")
    assert r["device"] == "cpu" and r["runtime"] == "libtorch" and r["latency_ms"]["p50"] > 0
    from vitedge.runtime import open_artifact
    _, runner = open_artifact(ts_artifact.path, trust_code=True, device="cpu")
    x = photo_batch(SIZE, 3)
    with torch.inference_mode():
        ref = tiny_vit()(x).numpy()
    np.testing.assert_allclose(runner.run(x.numpy())[0], ref, atol=1e-4)


def test_bench_refuses_cuda_for_onnx(onnx_artifact):
    with pytest.raises(UsageError, match="target onnx runs on the CPU"):
        bench(onnx_artifact.path, iters=1, device="cuda")
    r = cli("bench", onnx_artifact.path, "--iters", "1", "--device", "cuda")
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "vitedge: error: --device cuda: target onnx runs on the CPU")


@pytest.mark.skipif(HAS_CUDA, reason="this PyTorch has CUDA")
def test_bench_cuda_without_cuda_is_one_line(ts_artifact):
    r = cli("bench", ts_artifact.path, "--iters", "1", "--trust-code", "--device", "cuda")
    assert r.returncode == 1
    assert_one_line_error(r.stderr, "device cuda requested, but this PyTorch")


def test_cli_export_refusals_are_usage_errors(tmp_path):
    r = cli("export", "deit_tiny", "--target", "onnx", "--device", "cuda", "-o", tmp_path / "x")
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "target onnx runs on the CPU")
    r = cli("export", "deit_tiny", "--target", "torchscript", "--device", "tpu", "-o", tmp_path / "x")
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "device must be cpu, cuda or cuda:N")
    r = cli("export", "deit_tiny", "--target", "torchscript", "--precision", "int8", "--device", "cuda",
            "-o", tmp_path / "x")
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "runs on the CPU only")
    assert not (tmp_path / "x").exists()


def cpp_error(err: str) -> str:
    """vitedge-bench's stderr is one ``vitedge-bench: error: ...`` line; returns it."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("vitedge-bench: error: "), err
    return lines[0]


@pytest.mark.skipif(not CPP_BENCH.exists(), reason="C++ runner not built (make cpp)")
def test_cpp_runner_device(ts_artifact, onnx_artifact):
    def run(art, *extra):
        return subprocess.run([str(CPP_BENCH), str(art), "--trust-code", "--iters", "2", "--warmup", "0", *extra],
                              capture_output=True, text=True, timeout=300)
    r = run(ts_artifact.path, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["device"] == "cpu"
    r = run(onnx_artifact.path, "--device", "cuda")
    assert r.returncode == 1 and "ONNX Runtime backend runs on the CPU" in cpp_error(r.stderr)
    r = run(ts_artifact.path, "--device", "gpu")
    assert r.returncode != 0 and "device" in cpp_error(r.stderr)
    if not HAS_CUDA:
        r = run(ts_artifact.path, "--device", "cuda")
        assert r.returncode == 1 and "use device cpu" in cpp_error(r.stderr)


def test_parity_run_sees_the_export_device(tmp_path, monkeypatch):
    # The export's parity run loads the artifact from a provisional manifest: it must carry export.device, which
    # the AOTInductor loader checks against the device it is asked for (a CUDA package loaded "for cpu" fails).
    from vitedge.targets import torchscript
    seen = []
    real = torchscript.load

    def spy(art, *a, **k):
        seen.append(art.manifest["export"]["device"])
        return real(art, *a, **k)
    monkeypatch.setattr(torchscript, "load", spy)
    vitedge.export.export(tiny_vit(), torch.zeros(2, 3, *SIZE), "torchscript", tmp_path / "a",
                          preprocessing=make_preprocessing(SIZE))
    assert seen == ["cpu"]
