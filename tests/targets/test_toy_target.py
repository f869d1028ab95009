"""A new export target needs only its own code and one registration line (issue 20).

The "toy" target below is defined here, outside vitedge: it writes the model's weights and its zoo spec (JSON) as
``model.npz`` and runs the artifact by rebuilding the model from that spec and loading those weights. Registered with
``register_target(ToyTarget)``, it is exported by ``vitedge export --target toy`` (its ``Options`` become CLI
flags in their own group, refused with another target), and ``vitedge validate`` / ``vitedge bench`` load it,
with no other file of vitedge knowing its name.
"""
import io
import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from helpers import assert_one_line_error
from vitedge.cli import main
from vitedge.errors import UsageError
from vitedge.targets import Target, get_target, register_target, target_names, unregister_target

FILENAME = "model.npz"
SPEC = "__spec__"
SMALL = ["--image-size", "32", "32", "--num-classes", "3"]


@dataclass
class ToyOptions:
    note: str | None = field(default=None, metadata={"flag": "--toy-note", "metavar": "TEXT",
                                                     "help": "a note stored in the manifest (--target toy)"})
    compress: bool | None = field(default=None, metadata={"flag": "--toy-compress", "action": "store_true",
                                                          "help": "np.savez_compressed (--target toy)"})


class ToyRunner:
    runtime = "torch-eager (npz weights)"

    def __init__(self, model):
        self.model = model

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            out = self.model(torch.from_numpy(x))
        return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]


class ToyTarget(Target):
    name = "toy"
    title = "Toy npz"
    precisions = {"fp32": None}
    Options = ToyOptions

    def write(self, model, example, directory, options):
        topts = options["target_options"]
        arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        arrays[SPEC] = np.array(json.dumps(options["spec"]))  # a zoo model: how to rebuild it
        (np.savez_compressed if topts.get("compress") else np.savez)(directory / FILENAME, **arrays)
        return {"artifact": FILENAME, "backend": "numpy",
                "export": {"method": "state_dict -> npz", "device": "cpu"},
                "manifest": {"toy": {"note": topts.get("note"), "compressed": bool(topts.get("compress"))}}}

    def load(self, artifact, threads=None, **kwargs):
        from vitedge.export import build_model
        with np.load(io.BytesIO(artifact.read_file()), allow_pickle=False) as z:
            model = build_model(json.loads(str(z[SPEC])))
            model.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files if k != SPEC})
        return ToyRunner(model)


@pytest.fixture(scope="module", autouse=True)
def toy():
    register_target(ToyTarget)  # the one line a new target adds (built-in ones: a line in vitedge.targets.TARGETS)
    yield get_target("toy")
    unregister_target("toy")


def test_registry_lists_it(toy):
    assert isinstance(toy, ToyTarget) and target_names()[-1] == "toy"
    assert toy.unavailable() is None and toy.code_bearing is None


def test_export_help_lists_its_flags(capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "Toy npz (--target toy):" in out and "--toy-note TEXT" in out and "--toy-compress" in out
    assert "| openvino | toy" in " ".join(out.split())


def test_export_validate_bench(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["export", "deit_tiny", "--target", "toy", *SMALL, "--toy-note", "hello", "--toy-compress",
                 "-o", str(out)]) == 0
    assert f"wrote {out / FILENAME} (fp32" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    assert m["target"] == "toy" and m["backend"] == "numpy" and m["artifact"] == FILENAME
    assert m["toy"] == {"note": "hello", "compressed": True}
    assert max(v["max_abs"] for k, v in m["parity"].items() if k.startswith("batch_")) == 0.0

    assert main(["validate", str(out), "--json", "-"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["passed"] and r["runtime"] == ToyRunner.runtime
    assert main(["bench", str(out / FILENAME), "--iters", "2", "--warmup", "0", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["runtime"] == ToyRunner.runtime


@pytest.mark.parametrize("args,needle", [
    (["--target", "onnx", "--toy-note", "x"], "--toy-note and --toy-compress are Toy npz options (--target toy)"),
    (["--target", "toy", "--precision", "fp16"], "target toy cannot produce fp16 (it does: fp32)"),
    (["--target", "toy", "--workspace", "64"], "TensorRT build options (--target trt)"),
    (["--target", "toy", "--batch", "1:2:4"], "MIN:OPT:MAX is a TensorRT optimization profile (--target trt)"),
    (["--target", "tyo"], "did you mean toy?"),
])
def test_usage_errors_exit_2(args, needle, tmp_path, capsys):
    assert main(["export", "deit_tiny", *args, *SMALL, "-o", str(tmp_path / "a")]) == 2
    assert_one_line_error(capsys.readouterr().err, needle)
    assert not (tmp_path / "a").exists()


def test_builtin_names_are_reserved():
    class Fake(ToyTarget):
        name = "onnx"
    with pytest.raises(ValueError, match="built-in"):
        register_target(Fake)
    with pytest.raises(UsageError, match="unknown target 'nope'"):
        get_target("nope")
