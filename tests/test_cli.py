"""The CLI as a new user meets it: the happy path, and bad input that must end in one clear line and exit != 0."""
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitedge.cli import main
from vitedge.data import bundled_photo_paths
from helpers import assert_one_line_error


def run_cli(*args, cwd=None):
    """Run the installed ``vitedge`` console script in a subprocess: (exit code, stdout, stderr)."""
    exe = Path(sys.executable).with_name("vitedge")
    p = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A small deit_tiny (32x32, 3 classes) exported by the CLI to both targets, fixed and dynamic batch."""
    root = tmp_path_factory.mktemp("arts")
    out = {}
    for target in ("torchscript", "onnx"):
        out[target] = root / target
        assert main(["export", "deit_tiny", "--target", target, "--image-size", "32", "32", "--num-classes", "3",
                     "-o", str(out[target])]) == 0
    out["fixed"] = root / "fixed"
    assert main(["export", "deit_tiny", "--target", "onnx", "--image-size", "32", "32", "--num-classes", "3",
                 "--batch", "2", "-o", str(out["fixed"])]) == 0
    return out


def copy_artifact(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_happy_path_validate_and_bench(artifacts, tmp_path, capsys):
    for target in ("torchscript", "onnx"):
        trust = ["--trust-code"] if target == "torchscript" else []  # exported by this test: its own code
        assert main(["validate", str(artifacts[target]), "--json", str(tmp_path / f"v-{target}.json"), *trust]) == 0
        v = json.loads((tmp_path / f"v-{target}.json").read_text())
        assert v["passed"] and v["metrics"]["top1_agreement"] == 1.0
        assert main(["bench", str(artifacts[target]), "--iters", "3", "--warmup", "1", "--batch", "2",
                     "--json", str(tmp_path / f"b-{target}.json"), *trust]) == 0
        b = json.loads((tmp_path / f"b-{target}.json").read_text())
        assert set(b) == {"artifact", "runtime", "device", "batch", "threads", "warmup", "iters", "latency_ms",
                          "throughput_ips", "peak_rss_mb", "artifact_mb", "machine"}
        assert set(b["latency_ms"]) == {"mean", "p50", "p90", "p99", "min", "max"}
        assert b["batch"] == 2 and b["iters"] == 3 and b["latency_ms"]["min"] <= b["latency_ms"]["p50"]
        assert {"cpu", "cores", "flags"} <= set(b["machine"])
    out = capsys.readouterr().out
    assert "PASS" in out and "p50 ms" in out


def test_validate_on_an_image_folder(artifacts, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in bundled_photo_paths()[:3]:
        shutil.copy(p, folder / p.name)
    assert main(["validate", str(artifacts["onnx"]), "--images", str(folder), "--json", str(tmp_path / "v.json")]) == 0
    assert json.loads((tmp_path / "v.json").read_text())["metrics"]["samples"] == 3


def test_unknown_preset_subprocess():
    rc, _, err = run_cli("export", "mobilevit_sx", "--target", "onnx")
    assert rc == 2
    assert_one_line_error(err, "unknown preset 'mobilevit_sx'", "mobilevit_s")


def test_unknown_target(capsys):
    assert main(["export", "deit_tiny", "--target", "tensorflow"]) == 2
    assert_one_line_error(capsys.readouterr().err, "unknown target")


@pytest.mark.parametrize("args,needle", [
    (["export", "levit_128s", "--target", "onnx", "--image-size", "224", "160"], "square"),
    (["export", "deit_tiny", "--target", "onnx", "--image-size", "100", "100"], "divisible"),
    (["export", "deit_tiny", "--target", "onnx", "--batch", "0"], "--batch"),
    (["export", "deit_tiny", "--target", "onnx", "--batch", "many"], "--batch"),
])
def test_bad_export_options(args, needle, capsys, tmp_path):
    assert main(args + ["-o", str(tmp_path / "x")]) == 2
    assert_one_line_error(capsys.readouterr().err, needle)
    assert not (tmp_path / "x").exists()


def test_wrong_image_size_for_fixed_size_artifact(artifacts, capsys):
    assert main(["bench", str(artifacts["onnx"]), "--input-size", "64", "64", "--iters", "1"]) == 2
    assert_one_line_error(capsys.readouterr().err, "does not fit", "32x32")


def test_wrong_batch_for_fixed_batch_artifact(artifacts, capsys):
    assert main(["bench", str(artifacts["fixed"]), "--batch", "3", "--iters", "1"]) == 2
    assert_one_line_error(capsys.readouterr().err, "fixed batch of 2")


@pytest.mark.parametrize("target,fname", [("torchscript", "model.pt"), ("onnx", "model.onnx")])
@pytest.mark.parametrize("verify", [True, False])
def test_truncated_artifact(artifacts, tmp_path, target, fname, verify):
    art = copy_artifact(artifacts[target], tmp_path / "a")
    data = (art / fname).read_bytes()
    (art / fname).write_bytes(data[: len(data) // 3])
    args = ["validate", art, "--trust-code"] + ([] if verify else ["--no-verify"])
    rc, _, err = run_cli(*args)
    assert rc == 1
    assert_one_line_error(err, "truncated" if verify else "cannot load")


def test_missing_artifact(capsys, tmp_path):
    assert main(["bench", str(tmp_path / "nope")]) == 1
    assert_one_line_error(capsys.readouterr().err, "not found")


def test_manifest_from_the_future(artifacts, tmp_path, capsys):
    art = copy_artifact(artifacts["onnx"], tmp_path / "a")
    m = json.loads((art / "manifest.json").read_text())
    m["schema_version"] = 99
    (art / "manifest.json").write_text(json.dumps(m))
    assert main(["validate", str(art)]) == 1
    assert_one_line_error(capsys.readouterr().err, "schema version 99", "upgrade")


def test_text_file_as_image(artifacts, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "notes.jpg").write_text("this is not a picture\n")
    rc, _, err = run_cli("validate", artifacts["torchscript"], "--images", folder, "--trust-code")
    assert rc == 1
    assert_one_line_error(err, "cannot decode image", "notes.jpg")


def test_empty_image_folder(artifacts, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["validate", str(artifacts["onnx"]), "--images", str(tmp_path / "empty")]) == 1
    assert_one_line_error(capsys.readouterr().err, "no images")


def test_missing_checkpoint(capsys, tmp_path):
    assert main(["export", "deit_tiny", "--target", "onnx", "--checkpoint", str(tmp_path / "w.safetensors"),
                 "-o", str(tmp_path / "x")]) == 1
    assert_one_line_error(capsys.readouterr().err, "checkpoint not found")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupt_checkpoint(capsys, tmp_path, suffix):
    ck = tmp_path / f"w{suffix}"
    ck.write_bytes(os.urandom(1000))
    assert main(["export", "deit_tiny", "--target", "onnx", "--checkpoint", str(ck), "-o", str(tmp_path / "x")]) == 1
    assert_one_line_error(capsys.readouterr().err, "cannot load checkpoint")
    assert not (tmp_path / "x").exists()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_payload_checkpoint_is_refused_and_not_run(capsys, tmp_path):
    marker = tmp_path / "pwned"
    ck = tmp_path / "evil.pt"
    torch.save({"weights": _Payload(str(marker))}, ck)
    assert not marker.exists()
    assert main(["export", "deit_tiny", "--target", "onnx", "--checkpoint", str(ck), "-o", str(tmp_path / "x")]) == 1
    assert_one_line_error(capsys.readouterr().err, "cannot load checkpoint")
    assert not marker.exists(), "the pickle payload ran"
    # and a plain pickle (not even torch's zip format) is refused the same way
    with open(tmp_path / "evil2.pt", "wb") as f:
        pickle.dump(_Payload(str(marker)), f)
    assert main(["export", "deit_tiny", "--target", "onnx", "--checkpoint", str(tmp_path / "evil2.pt"),
                 "-o", str(tmp_path / "x")]) == 1
    assert not marker.exists()


def test_checkpoint_for_another_preset(capsys, tmp_path):
    from vitedge.checkpoint import save_state_dict
    from vitedge.models.zoo import create_model
    ck = save_state_dict(create_model("deit_tiny", num_classes=10), tmp_path / "digits.safetensors")
    assert main(["export", "deit_small", "--target", "onnx", "--checkpoint", str(ck), "--num-classes", "10",
                 "-o", str(tmp_path / "x")]) == 1
    assert_one_line_error(capsys.readouterr().err, "does not fit", "shape mismatch")
    # the right preset loads it, and the artifact reproduces the checkpoint's eager model
    assert main(["export", "deit_tiny", "--target", "onnx", "--checkpoint", str(ck), "--num-classes", "10",
                 "-o", str(tmp_path / "y")]) == 0
    assert main(["validate", str(tmp_path / "y")]) == 0
