"""The CLI as a new user meets it: the happy path, and bad input that must end in one clear line and exit != 0."""
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitedge.cli import main
from vitedge.data import bundled_photo_paths
from helpers import assert_one_line_error


REPO = Path(__file__).resolve().parents[1]


def cli_env(**extra) -> dict:
    """The environment of a CLI subprocess: this checkout's ``vitedge`` first on the import path (the console
    script's own import may resolve to another checkout's editable install), plus ``extra``."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def run_cli(*args, cwd=None, env=None):
    """Run the installed ``vitedge`` console script in a subprocess: (exit code, stdout, stderr)."""
    exe = Path(sys.executable).with_name("vitedge")
    p = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600,
                       env=env or cli_env())
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


# ---------------------------------------------------------------------------------------------------------------
# Issue 21, "the CLI never surprises": zoo speed and errors, one-line argparse errors, --json -, artifact paths,
# the bench table at 80 columns, progress lines, the training loss.

def test_zoo_lists_every_preset_without_building_a_model():
    """`vitedge zoo` reads the registry only: torch is never imported (that import alone is over a second, and
    building the 38 models took minutes)."""
    from vitedge.models.registry import FAMILIES
    from vitedge.models.zoo import PRESETS, get_preset
    # the package's own presets: a test module may have registered a toy family in this process (tests/sweep_toy.py)
    expected = [p for p in PRESETS if FAMILIES[get_preset(p).family].module.startswith("vitedge.")]
    code = ("import sys, io, contextlib\nfrom vitedge.cli import main\nbuf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n    rc = main(['zoo', '--json'])\n"
            "assert rc == 0, rc\nassert 'torch' not in sys.modules, 'zoo imported torch'\nprint(buf.getvalue())")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert [r["preset"] for r in rows] == expected and len(expected) >= 38
    assert all("params" not in r for r in rows)  # counts only with --count


def test_zoo_unknown_family_is_one_line_listing_the_families(capsys):
    from vitedge.models.zoo import FAMILIES
    assert main(["zoo", "--family", "bogus"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err, "unknown family 'bogus'", *FAMILIES)


def test_zoo_help_lists_every_family(capsys):
    from vitedge.models.zoo import FAMILIES
    with pytest.raises(SystemExit) as e:
        main(["zoo", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert all(f in out for f in FAMILIES) and f"one of the {len(FAMILIES)}" in out


@pytest.mark.parametrize("args,needles", [
    (["export", "deit_tiny"], ["the following arguments are required: --target", "see vitedge export --help"]),
    (["export", "deit_tiny", "--target", "onnx", "--image-size", "0", "0"], ["--image-size", "positive integer"]),
    (["export", "deit_tiny", "--target", "onnx", "--image-size", "-1", "5"], ["--image-size", "positive integer"]),
    (["export", "deit_tiny", "--target", "onnx", "--num-classes", "0"], ["--num-classes", "positive integer"]),
    (["train", "--preset", "deit_tiny", "--image-size", "0", "0"], ["--image-size", "positive integer"]),
    (["train", "--preset", "deit_tiny", "--epochs", "0"], ["--epochs", "positive integer"]),
    (["bench", "x", "--input-size", "-1", "5"], ["--input-size", "positive integer"]),
    (["bench", "x", "--iters", "0"], ["--iters", "positive integer"]),
    (["bench", "x", "--batch", "-2"], ["--batch", "positive integer"]),
    (["validate", "x", "--min-top1", "150"], ["--min-top1", "0..100", "percentage"]),
    (["validate", "x", "--min-top1", "0.99"], ["--min-top1", "fraction", "write 99"]),
    (["validate", "x", "--min-top1", "nan"], ["--min-top1"]),
    (["validate", "x", "--max-drop", "101"], ["--max-drop", "percentage points"]),
    (["validate", "x", "--min-cosine", "2"], ["--min-cosine", "-1..1"]),
    (["validate", "x", "--max-abs", "-1"], ["--max-abs", "must be >= 0"]),
    (["zoo", "--bogus"], ["unrecognized arguments: --bogus", "see vitedge zoo --help"]),
    (["export", "deit_tiny", "--target", "onnx", "--precision", "fp64"], ["--precision", "invalid choice"]),
    ([], ["COMMAND", "see vitedge --help"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
])
def test_argparse_errors_are_one_line(args, needles, capsys):
    """Bad usage ends in one line and exit 2: never the usage block, never a traceback."""
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert "usage:" not in captured.err
    assert_one_line_error(captured.err, *needles)


def test_missing_target_subprocess():
    rc, out, err = run_cli("export", "deit_tiny")
    assert rc == 2 and out == ""
    assert_one_line_error(err, "--target", "see vitedge export --help")


def test_min_top1_is_a_percentage(artifacts, tmp_path, capsys):
    """--min-top1 takes a percentage (the unit of the table and of --max-drop); the JSON keeps the library's
    fraction."""
    for pct in ("100", "5", "99.5"):
        assert main(["validate", str(artifacts["onnx"]), "--min-top1", pct, "--json", str(tmp_path / "v.json")]) == 0
        v = json.loads((tmp_path / "v.json").read_text())
        assert v["tolerance"]["top1_agreement"] == pytest.approx(float(pct) / 100)


def test_json_dash_is_stdout(artifacts, tmp_path, monkeypatch, capsys):
    """`--json -` prints the JSON (and only it) on stdout for validate and bench; no file named '-' appears."""
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(artifacts["onnx"]), "--json", "-"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert v["passed"] and v["metrics"]["samples"] > 0
    assert main(["bench", str(artifacts["onnx"]), "--iters", "2", "--warmup", "0", "--json", "-"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert b["iters"] == 2 and b["latency_ms"]["p50"] > 0
    assert not (tmp_path / "-").exists() and list(tmp_path.iterdir()) == []


def test_json_dash_keeps_the_exit_code_of_a_failed_validation(artifacts, capsys):
    assert main(["validate", str(artifacts["onnx"]), "--max-abs", "0", "--json", "-"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["passed"] is False
    assert_one_line_error(captured.err, "outside tolerance", "max_abs")


@pytest.mark.parametrize("target,fname", [("torchscript", "model.pt"), ("onnx", "model.onnx")])
@pytest.mark.parametrize("command", ["validate", "bench"])
def test_artifact_folder_manifest_or_model_file(artifacts, target, fname, command, capsys):
    extra = ["--iters", "1", "--warmup", "0"] if command == "bench" else []
    trust = ["--trust-code"] if target == "torchscript" else []
    for path in (artifacts[target], artifacts[target] / fname):
        assert main([command, str(path), *extra, *trust]) == 0, path
    capsys.readouterr()
    assert main([command, str(artifacts[target] / "manifest.json"), *extra, *trust]) == 1  # as the C++ runner
    assert_one_line_error(capsys.readouterr().err, "manifest.json is a file but not the model file")


@pytest.mark.parametrize("target", ["torchscript", "onnx", "coreml", "executorch", "aotinductor", "openvino", "trt"])
def test_every_artifact_type_opens_from_its_model_file(artifacts, tmp_path, target):
    """The folder and the model file the manifest names resolve to the same artifact, for the
    model file name of every target (a directory for Core ML's model.mlpackage); any other entry of the folder is
    refused in one line naming what was typed. The resolution reads only the manifest, so an ONNX artifact renamed
    to each target's file name stands in for it."""
    import importlib
    from vitedge.errors import ArtifactError
    from vitedge.manifest import read_manifest
    from vitedge.targets import TARGETS
    mod = importlib.import_module(TARGETS[target])
    name = getattr(mod, "FILENAME", None) or mod.ENGINE_FILE
    art = copy_artifact(artifacts["onnx"], tmp_path / "a")
    m = json.loads((art / "manifest.json").read_text())
    entry = m["files"].pop("model.onnx")
    if name.endswith(".mlpackage"):  # a directory holding the weights
        (art / name).mkdir()
        (art / "model.onnx").rename(art / name / "weights.bin")
        m["files"][f"{name}/weights.bin"] = entry
    else:
        (art / "model.onnx").rename(art / name)
        m["files"][name] = entry
    m["artifact"] = name
    (art / "manifest.json").write_text(json.dumps(m))
    (art / "notes.txt").write_text("not a model\n")
    for path in (art, art / name):
        a = read_manifest(path)
        assert a.path == art and a.file == art / name and a.verified
    with pytest.raises(ArtifactError) as e:
        read_manifest(art / "notes.txt")
    assert str(art / "notes.txt") in str(e.value) and name in str(e.value)


def test_other_files_are_refused_naming_what_was_typed(artifacts, tmp_path, monkeypatch, capsys):
    art = copy_artifact(artifacts["onnx"], tmp_path / "a")
    (art / "notes.txt").write_text("hello\n")
    (tmp_path / "loose.onnx").write_bytes((art / "model.onnx").read_bytes())
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    for command in ("validate", "bench"):
        assert main([command, "a/notes.txt"]) == 1
        assert_one_line_error(capsys.readouterr().err, "a/notes.txt", "model.onnx")
        assert main([command, "loose.onnx"]) == 1
        line = assert_one_line_error(capsys.readouterr().err, "loose.onnx is a file but not the model file")
        assert "error: . " not in line  # names the file typed, not its folder
        assert main([command, "empty"]) == 1
        assert_one_line_error(capsys.readouterr().err, "empty is not a vitedge artifact")
        assert main([command, "nope/model.onnx"]) == 1
        assert_one_line_error(capsys.readouterr().err, "not found: nope/model.onnx")


def test_bench_table_fits_80_columns(artifacts, tmp_path):
    """Nothing truncated ('…') and no line over 80 columns, with every number of the JSON in the output."""
    env = cli_env(COLUMNS="80")
    rc, out, err = run_cli("bench", artifacts["onnx"], "--iters", "3", "--warmup", "1", "--json", tmp_path / "b.json",
                           env=env)
    assert rc == 0, err
    b = json.loads((tmp_path / "b.json").read_text())
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert "…" not in out and "..." not in out
    lat = b["latency_ms"]
    for value in (f"{lat['mean']:.2f}", f"{lat['p50']:.2f}", f"{lat['p99']:.2f}", f"{b['throughput_ips']:.1f}",
                  f"peak RSS {b['peak_rss_mb']:.0f} MiB", b["runtime"]):
        assert value in out, (value, out)


def test_validate_table_fits_80_columns(artifacts, tmp_path):
    """validate's table (a row per metric) in an 80-column terminal: nothing truncated, every value of the JSON shown."""
    rc, out, err = run_cli("validate", artifacts["onnx"], "--json", tmp_path / "v.json", env=cli_env(COLUMNS="80"))
    assert rc == 0, err
    m = json.loads((tmp_path / "v.json").read_text())["metrics"]
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert "…" not in out
    for value in (f"{m['max_abs']:.2e}", f"{m['cosine']:.6f}", f"{m['top1_agreement']:.1%}", "PASS"):
        assert value in out, (value, out)


def test_bench_table_fits_80_columns_with_wide_values():
    from rich.console import Console
    from vitedge.cli import bench_table
    r = {"artifact": "artifacts/a-very-long-folder-name/deit_small-openvino-int8-with-calibration", "runtime":
         "onnxruntime", "device": "cpu", "batch": 64, "threads": 128, "warmup": 10, "iters": 50,
         "latency_ms": {"mean": 12345.67, "p50": 12345.67, "p90": 12345.67, "p99": 12345.67},
         "throughput_ips": 123456.7, "peak_rss_mb": 123456, "artifact_mb": 1234.56,
         "machine": {"cpu": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "flags": ["avx2", "avx512f",
                                                                                        "avx512_vnni", "amx_int8"]}}
    c = Console(width=80, record=True, file=open(os.devnull, "w"))
    c.print(bench_table(r))
    text = c.export_text()
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    assert "…" not in text
    for v in ("12345.67", "123456.7", "onnxruntime", "128"):
        assert v in text.replace("\n", " ")


def test_progress_lines_on_a_terminal_only(artifacts, tmp_path, monkeypatch, capsys):
    """Long steps print one `vitedge: [SECONDS s] stage` line each on stderr when it is a terminal; none when it
    is not, and none with --quiet."""
    from vitedge import progress
    out = tmp_path / "x"
    monkeypatch.setattr(progress, "stderr_is_tty", lambda: True)
    assert main(["export", "deit_tiny", "--target", "onnx", "--image-size", "32", "32", "--num-classes", "3",
                 "--precision", "int8", "--int8-mode", "static", "--calib-count", "8", "-o", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    stages = [ln for ln in err if ln.startswith("vitedge: [")]
    text = "\n".join(stages)
    for needle in ("building deit_tiny", "calibration images", "exporting to onnx (int8)", "quantizing to int8",
                   "checking parity"):
        assert needle in text, text
    assert all(re.fullmatch(r"vitedge: \[ *\d+\.\d s\] \S.*", ln) for ln in stages), stages
    assert not progress.enabled()  # main() switches it off again
    assert main(["export", "deit_tiny", "--target", "onnx", "--image-size", "32", "32", "--num-classes", "3",
                 "-o", str(tmp_path / "y"), "--quiet"]) == 0
    assert "vitedge: [" not in capsys.readouterr().err
    monkeypatch.setattr(progress, "stderr_is_tty", lambda: False)
    assert main(["export", "deit_tiny", "--target", "onnx", "--image-size", "32", "32", "--num-classes", "3",
                 "-o", str(tmp_path / "z")]) == 0
    assert capsys.readouterr().err == ""


def test_training_reports_the_sample_weighted_epoch_mean_loss(tmp_path, monkeypatch, capsys):
    """The per-epoch line is the mean of the per-sample losses over the epoch (the last batch is smaller: the
    digits train split is not a multiple of 64), not the last batch's loss."""
    import torch.nn.functional as F

    import vitedge.train
    seen = []

    class Recording:
        def __getattr__(self, name):
            return getattr(F, name)

        @staticmethod
        def cross_entropy(logits, y, **kw):
            loss = F.cross_entropy(logits, y, **kw)
            seen.append((loss.item(), len(y)))
            return loss
    monkeypatch.setattr(vitedge.train, "F", Recording())
    out = tmp_path / "c.safetensors"
    assert main(["train", "--preset", "deit_tiny", "--image-size", "32", "32", "--epochs", "1", "-o", str(out)]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch 1/1")][0]
    sizes = {n for _, n in seen}
    assert len(sizes) == 2, sizes  # full batches and a smaller last one: the weighting matters
    mean = sum(v * n for v, n in seen) / sum(n for _, n in seen)
    assert f"loss {mean:.3f}," in line, (line, mean, seen[-1])
    side = json.loads(Path(f"{out}.json").read_text())
    assert side["train_loss"] == [pytest.approx(mean)]


def test_training_stops_at_max_steps(tmp_path):
    """``max_steps`` (a training-time budget for large presets) stops mid-epoch, and the cosine schedule spans the
    steps taken: the learning rate has decayed to near zero by the last one."""
    import vitedge.train
    lrs = []
    real_step = vitedge.train.torch.optim.lr_scheduler.LambdaLR.step

    def record(self, *a, **kw):
        lrs.append(self.optimizer.param_groups[0]["lr"])
        return real_step(self, *a, **kw)
    out = tmp_path / "c.safetensors"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vitedge.train.torch.optim.lr_scheduler.LambdaLR, "step", record)
        side = vitedge.train.train_digits("deit_tiny", out, image_size=(32, 32), epochs=8, max_steps=30, log=None)
    assert side["steps"] == 30 and side["epochs"] == 2  # 22 steps per epoch at batch 64 on 1347 images
    assert len(side["train_loss"]) == 2
    assert len(lrs) == 30 + 1  # LambdaLR steps once at construction, then once per optimizer step
    assert lrs[-1] < 0.01 * max(lrs)
    with pytest.raises(vitedge.train.UsageError, match="max_steps"):
        vitedge.train.train_digits("deit_tiny", out, image_size=(32, 32), max_steps=0, log=None)
