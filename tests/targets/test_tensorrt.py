"""TensorRT target.

Runs everywhere: the graph check (ONNX checker + strict shape inference + TensorRT's ONNX parser op list and
restrictions) on exported fp32 / fp16 / int8-QDQ graphs of small models of every family, negative graphs, the
trtexec command line, --batch MIN:OPT:MAX parsing, and the CLI's exit code 3 with a one-line message when
TensorRT or a GPU is missing. The engine build and run tests need TensorRT and a CUDA GPU and skip without them.
"""
import json
import os
import shlex
import subprocess

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from vitedge.cli import main
from vitedge.data import make_preprocessing
from vitedge.errors import ArtifactError, RuntimeMissingError, UsageError
from vitedge.export import export, prepare_preset
from vitedge.manifest import read_manifest
from vitedge.runtime import open_artifact
from vitedge.targets import tensorrt as trt_target

MISSING = trt_target.runs_here()  # None when TensorRT and a CUDA GPU are present
needs_trt = pytest.mark.skipif(MISSING is not None, reason=f"needs TensorRT and a CUDA GPU: {MISSING}")
without_trt = pytest.mark.skipif(MISSING is None, reason="TensorRT and a GPU are present: the engine is built")


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("vitedge: error: "), err
    return lines[0]


def small_model(family: str):
    """A small model of ``family`` (the configs of test_families.py) and its input size."""
    from helpers import SMALL
    from vitedge.models.zoo import family_class
    _, _, kw, size = SMALL[family]
    torch.manual_seed(0)
    return family_class(family)(**kw).eval(), size


def onnx_model(node, inputs, outputs, initializers=(), opset=18):
    g = helper.make_graph([node], "g", inputs, outputs, initializer=list(initializers))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


# ---- profile and trtexec command -------------------------------------------------------------------------

def test_parse_profile():
    assert trt_target.parse_profile("1:4:16") == (1, 4, 16)
    assert trt_target.parse_profile("8:8:8") == (8, 8, 8)
    for bad in ("1:4", "1:4:16:32", "a:b:c", "0:1:2", "4:2:8", "1:9:8", "-1:1:1", ""):
        with pytest.raises(UsageError):
            trt_target.parse_profile(bad)


@pytest.mark.parametrize("args, needle", [
    (["--target", "trt", "--batch", "1:4"], "three integers"),
    (["--target", "trt", "--batch", "4:2:8"], "MIN <= OPT <= MAX"),
    (["--target", "trt", "--batch", "0:1:2"], "MIN <= OPT <= MAX"),
    (["--target", "onnx", "--batch", "1:4:16"], "optimization profile (--target trt)"),
    (["--target", "onnx", "--workspace", "256"], "--target trt"),
    (["--target", "torchscript", "--timing-cache", "x.cache"], "--target trt"),
    (["--target", "trt", "--precision", "int8", "--int8-mode", "dynamic"], "cannot do dynamic int8"),
])
def test_cli_bad_trt_options_exit_2(args, needle, tmp_path, capsys):
    assert main(["export", "deit_tiny", *args, "--image-size", "32", "32", "-o", str(tmp_path / "a")]) == 2
    assert needle in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "a").exists()


def test_trtexec_command():
    dyn = trt_target.trtexec_command("model.onnx", "pixel_values", (3, 64, 48), (1, 4, 16), workspace_mb=512)
    assert dyn == ["trtexec", "--onnx=model.onnx", "--minShapes=pixel_values:1x3x64x48",
                   "--optShapes=pixel_values:4x3x64x48", "--maxShapes=pixel_values:16x3x64x48", "--stronglyTyped",
                   "--memPoolSize=workspace:512M", "--timingCacheFile=timing.cache", "--saveEngine=model.engine"]
    static = trt_target.trtexec_command("model.onnx", "pixel_values", (3, 32, 32), None, timing_cache="/c/t.cache")
    assert not any(a.startswith(("--minShapes", "--optShapes", "--maxShapes", "--memPoolSize")) for a in static)
    assert "--timingCacheFile=/c/t.cache" in static


# ---- graph check: negative graphs --------------------------------------------------------------------------

def test_check_graph_rejects_unsupported_op():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT if n == "y" else TensorProto.INT64, [None])
            for n in ("y", "i", "inv", "c")]
    m = onnx_model(helper.make_node("Unique", ["x"], ["y", "i", "inv", "c"]), [x], outs)
    onnx.checker.check_model(m, full_check=True)  # a valid graph: only TensorRT cannot take it
    with pytest.raises(trt_target.GraphCheckError, match=r"not supported by TensorRT's ONNX parser: Unique"):
        trt_target.check_graph(m)
    # the same graph passes once the op is in the list: the check is the list, nothing else
    assert trt_target.check_graph(m, supported=trt_target.SUPPORTED_OPS | {"Unique"})["ops"] == {"Unique": 1}


def test_check_graph_rejects_custom_domain_opset_and_zero_points():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    relu = helper.make_node("Relu", ["x"], ["y"])
    assert trt_target.check_graph(onnx_model(relu, [x], [y]))["opset"] == 18
    with pytest.raises(trt_target.GraphCheckError, match="outside TensorRT's parser range 9-20"):
        trt_target.check_graph(onnx_model(relu, [x], [y], opset=21))
    gelu = helper.make_node("FastGelu", ["x"], ["y"], domain="com.microsoft")
    m = onnx_model(gelu, [x], [y])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(trt_target.GraphCheckError, match="com.microsoft.FastGelu"):
        trt_target.check_graph(m)
    # asymmetric uint8 quantization (zero point 128) is not something TensorRT's parser accepts
    q = helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["y"])
    yq = helper.make_tensor_value_info("y", TensorProto.UINT8, [2, 4])
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(128, np.uint8), "zp")]
    with pytest.raises(trt_target.GraphCheckError, match="zero point"):
        trt_target.check_graph(onnx_model(q, [x], [yq], inits))
    inits[1] = numpy_helper.from_array(np.array(0, np.int8), "zp")
    yq = helper.make_tensor_value_info("y", TensorProto.INT8, [2, 4])
    assert trt_target.check_graph(onnx_model(q, [x], [yq], inits))["ops"] == {"QuantizeLinear": 1}
    # ONNX Runtime's default int32 bias quantization: a DequantizeLinear TensorRT cannot take
    dq = helper.make_node("DequantizeLinear", ["b", "s", "bz"], ["y"])
    inits = [numpy_helper.from_array(np.array([5, -3, 2, 0], np.int32), "b"),
             numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int32), "bz")]
    yf = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    with pytest.raises(trt_target.GraphCheckError, match="quantize to int32"):
        trt_target.check_graph(onnx_model(dq, [], [yf], inits))


def test_check_graph_parser_restrictions():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1])
    reduce = helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="rm")
    with pytest.raises(trt_target.GraphCheckError, match="ReduceMean rm computes at run time"):
        trt_target.check_graph(onnx_model(reduce, [x, axes], [y]))  # axes fed at run time
    const_axes = [numpy_helper.from_array(np.array([1], np.int64), "axes")]
    assert trt_target.check_graph(onnx_model(reduce, [x], [y], const_axes))["ops"] == {"ReduceMean": 1}
    k = [numpy_helper.from_array(np.array([2], np.int64), "k")]
    outs = [helper.make_tensor_value_info("v", TensorProto.FLOAT, [2, 2]),
            helper.make_tensor_value_info("i", TensorProto.INT64, [2, 2])]
    topk = helper.make_node("TopK", ["x", "k"], ["v", "i"], name="tk", sorted=0)
    with pytest.raises(trt_target.GraphCheckError, match="TopK tk with sorted=0"):
        trt_target.check_graph(onnx_model(topk, [x], outs, k))


def test_check_graph_rejects_shape_errors():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])  # contradicts what Relu gives
    with pytest.raises(trt_target.GraphCheckError, match="strict shape inference"):
        trt_target.check_graph(onnx_model(helper.make_node("Relu", ["x"], ["y"]), [x], [y]))


def test_topological_sort(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4])
    nodes = [helper.make_node("Relu", ["y"], ["z"]), helper.make_node("Neg", ["x"], ["y"])]  # reader first
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [z]), opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(m, str(tmp_path / "m.onnx"))
    with pytest.raises(trt_target.GraphCheckError, match="strict shape inference / onnx.checker"):
        trt_target.check_graph(tmp_path / "m.onnx")
    assert trt_target.topological_sort(tmp_path / "m.onnx") is True
    assert [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node] == ["Neg", "Relu"]
    assert trt_target.check_graph(tmp_path / "m.onnx")["ops"] == {"Neg": 1, "Relu": 1}
    assert trt_target.topological_sort(tmp_path / "m.onnx") is False


def test_onnx_runtime_dynamic_int8_graph_is_rejected(tmp_path):
    """ONNX Runtime's dynamic int8 (DynamicQuantizeLinear + MatMulInteger) is exactly what TensorRT cannot parse."""
    from vitedge.quantize.onnx import quantize_int8
    model, size = small_model("vit")
    art = export(model, torch.zeros(2, 3, *size), "onnx", tmp_path / "onnx", preprocessing=make_preprocessing(size))
    quantize_int8(art.file, tmp_path / "dyn.onnx", mode="dynamic")
    with pytest.raises(trt_target.GraphCheckError, match="DynamicQuantizeLinear.*MatMulInteger"):
        trt_target.check_graph(tmp_path / "dyn.onnx")


# ---- exported graphs: every family, fp32; fp16 and int8 on three ---------------------------------------------

FAST = ("vit", "levit", "mobilevit")
OTHERS = ("simple_vit", "distillable_vit", "deepvit", "cait", "pit", "cvt", "twins_svt", "t2t", "cct", "cross_vit",
          "ats", "crossformer", "regionvit", "nest")


def _export_trt(family, tmp_path, **kw):
    model, size = small_model(family)
    art = export(model, torch.zeros(2, 3, *size), "trt", tmp_path / family,
                 preprocessing=make_preprocessing(size), **kw)
    return art, read_manifest(art.path).manifest["tensorrt"]


def _check_written(art, trt, profile=trt_target.DEFAULT_PROFILE):
    g = onnx.load(str(art.path / "model.onnx"))
    assert trt_target.check_graph(g)["ops"] == trt["graph_check"]["ops"]  # re-checked from the file on disk
    assert trt["profile"]["pixel_values"]["min"][0] == profile[0]
    assert trt["profile"]["pixel_values"]["max"][0] == profile[2]
    cmd = shlex.split((art.path / "trtexec.sh").read_text().splitlines()[-1])
    assert cmd[1:-1] == shlex.split(trt["trtexec"])  # exec <command> "$@"
    if MISSING is not None:
        assert trt["engine"] is None and trt["engine_missing"] == MISSING and art.manifest["artifact"] == "model.onnx"
        assert "skipped" in art.manifest["parity"]
        assert sorted(art.manifest["files"]) == ["model.onnx", "trtexec.sh"]


@pytest.mark.parametrize("family", FAST)
def test_fp32_graph_for_tensorrt(family, tmp_path):
    art, trt = _export_trt(family, tmp_path)
    _check_written(art, trt)
    par = trt["onnx_parity"]
    assert [k for k in par if k.startswith("batch_")] == ["batch_1", "batch_3", "batch_8"]
    assert all(par[f"batch_{b}"]["max_abs"] <= 1e-4 for b in (1, 3, 8))


@pytest.mark.slow
@pytest.mark.parametrize("family", OTHERS)
def test_fp32_graph_for_tensorrt_other_families(family, tmp_path):
    art, trt = _export_trt(family, tmp_path)
    _check_written(art, trt)


@pytest.mark.parametrize("family", FAST)
def test_fp16_graph_for_tensorrt(family, tmp_path):
    art, trt = _export_trt(family, tmp_path, precision="fp16", target_options={"profile": (1, 2, 4)})
    _check_written(art, trt, (1, 2, 4))
    g = onnx.load(str(art.path / "model.onnx"))
    assert g.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # float32 I/O
    assert any(i.data_type == TensorProto.FLOAT16 for i in g.graph.initializer)  # float16 weights in the graph
    assert [k for k in trt["onnx_parity"] if k.startswith("batch_")] == ["batch_1", "batch_3", "batch_4"]
    assert trt["onnx_parity"]["batch_4"]["cosine"] >= 0.999


@pytest.mark.parametrize("family", FAST)
def test_int8_qdq_graph_for_tensorrt(family, tmp_path, photo_batch):
    model, size = small_model(family)
    calib = photo_batch(size, 16).numpy()
    art, trt = _export_trt(family, tmp_path, precision="int8",
                           quantization={"mode": "static", "method": "minmax", "calibration": calib})
    _check_written(art, trt)
    g = onnx.load(str(art.path / "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in g.graph.initializer}
    qdq = [n for n in g.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "no Q/DQ nodes: nothing was quantized"
    zps = [inits[n.input[2]] for n in qdq]
    assert all(z.dtype == np.int8 and not z.any() for z in zps)  # S8S8 symmetric: TensorRT's requirement
    per_channel = [n for n in qdq if n.op_type == "DequantizeLinear" and inits[n.input[1]].ndim == 1]
    assert per_channel, "weights are not quantized per channel"
    q = art.manifest["quantization"]
    assert q["activations"] == "int8 (symmetric)" and q["reduce_range"] is False
    assert trt["onnx_parity"]["batch_8"]["cosine"] >= 0.99


def test_fixed_batch_has_no_profile(tmp_path):
    model, size = small_model("vit")
    art = export(model, torch.zeros(3, 3, *size), "trt", tmp_path / "fixed", dynamic_batch=False,
                 preprocessing=make_preprocessing(size), target_options={"workspace_mb": 256})
    trt = art.manifest["tensorrt"]
    assert trt["profile"] is None and trt["static_shape"] == [3, 3, *size]
    assert "--minShapes" not in trt["trtexec"] and "--memPoolSize=workspace:256M" in trt["trtexec"]
    assert list(k for k in trt["onnx_parity"] if k.startswith("batch_")) == ["batch_3"]
    g = onnx.load(str(art.path / "model.onnx"))
    assert g.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3


# ---- CLI without TensorRT: exit 3, one line, the ONNX and trtexec.sh written; validate/bench refuse -----------

@without_trt
def test_cli_export_without_tensorrt_exit_3(tmp_path, capsys):
    out = tmp_path / "mvit-trt"
    cache = tmp_path / "caches" / "trt.cache"
    rc = main(["export", "mobilevit_xs", "--target", "trt", "--image-size", "64", "64", "--num-classes", "5",
               "--batch", "1:4:16", "--timing-cache", str(cache), "-o", str(out)])
    cap = capsys.readouterr()
    assert rc == 3
    line = one_line_error(cap.err)
    assert line == (f"vitedge: error: {MISSING}; wrote {out.absolute()}/model.onnx and the trtexec command in "
                    f"{out.absolute()}/trtexec.sh")
    assert "no engine built" in cap.out and "TensorRT op check passed" in cap.out
    art = read_manifest(out)  # committed atomically, hashes verify
    trt = art.manifest["tensorrt"]
    assert trt["engine"] is None and trt["profile"]["pixel_values"]["opt"] == [4, 3, 64, 64]
    assert f"--timingCacheFile={cache.absolute()}" in trt["trtexec"] and "--optShapes=pixel_values:4x3x64x64" in \
        trt["trtexec"]
    assert not cache.exists()  # nothing built, nothing cached
    # trtexec.sh is a working shell script: a stand-in trtexec on PATH records its directory and arguments
    fake = tmp_path / "bin" / "trtexec"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\npwd > "$TRTEXEC_LOG"\nfor a in "$@"; do echo "$a" >> "$TRTEXEC_LOG"; done\n')
    fake.chmod(0o755)
    log = tmp_path / "trtexec.log"
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "TRTEXEC_LOG": str(log)}
    subprocess.run([str(out / "trtexec.sh"), "--verbose"], check=True, env=env, cwd=tmp_path)
    lines = log.read_text().splitlines()
    assert lines[0] == str(out) and lines[1:] == shlex.split(trt["trtexec"])[1:] + ["--verbose"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    for cmd in (["validate", str(out)], ["bench", str(out), "--iters", "1", "--warmup", "0"]):
        assert main(cmd) == 1
        line = one_line_error(capsys.readouterr().err)
        assert "cannot run here" in line and MISSING in line
    with pytest.raises(RuntimeMissingError):
        open_artifact(out)
    mod = trt_target
    with pytest.raises(ArtifactError, match="holds no TensorRT engine"):
        mod.load(art)  # a machine with TensorRT would still refuse: no engine in this directory


@without_trt
def test_cli_int8_defaults_to_static_qdq(tmp_path, capsys):
    out = tmp_path / "deit-int8"
    rc = main(["export", "deit_tiny", "--target", "trt", "--precision", "int8", "--image-size", "32", "32",
               "--num-classes", "3", "--calib-count", "16", "-o", str(out)])
    assert rc == 3, capsys.readouterr().err
    m = json.loads((out / "manifest.json").read_text())
    assert m["quantization"]["mode"] == "static" and m["quantization"]["calibration"]["count"] == 16
    assert m["tensorrt"]["graph_check"]["ops"]["QuantizeLinear"] > 0


# ---- with TensorRT and a CUDA GPU ------------------------------------------------------------------------------

@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_build_and_run(precision, tmp_path, photo_batch):
    model, size = small_model("vit")
    quant = None
    if precision == "int8":
        quant = {"mode": "static", "method": "minmax", "calibration": photo_batch(size, 16).numpy()}
    cache = tmp_path / "timing.cache"
    opts = {"profile": (1, 2, 4), "workspace_mb": 256, "timing_cache": str(cache)}
    art = export(model, torch.zeros(2, 3, *size), "trt", tmp_path / "a", preprocessing=make_preprocessing(size),
                 precision=precision, quantization=quant, target_options=opts)
    trt = art.manifest["tensorrt"]
    assert art.manifest["artifact"] == "model.engine" and (art.path / "model.engine").stat().st_size > 0
    assert trt["tensorrt_version"] and trt["gpu"] and trt["compute_capability"]
    assert [k for k in art.manifest["parity"] if k.startswith("batch_")] == ["batch_1", "batch_3", "batch_4"]
    assert cache.is_file() and (art.path / "timing.cache").is_file()
    _, runner = open_artifact(art.path)
    x = photo_batch(size, 4).numpy()
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    got = runner.run(x)[0]
    assert got.shape == ref.shape and (got.argmax(1) == ref.argmax(1)).all()
    with pytest.raises(UsageError, match="optimization profile"):
        runner.run(photo_batch(size, 5).numpy())
    again = export(model, torch.zeros(2, 3, *size), "trt", tmp_path / "b", preprocessing=make_preprocessing(size),
                   precision=precision, quantization=quant, target_options=opts)
    assert again.manifest["tensorrt"]["timing_cache_reused"] is True


@needs_trt
def test_cli_export_with_tensorrt_exit_0(tmp_path):
    out = tmp_path / "deit-trt"
    assert main(["export", "deit_tiny", "--target", "trt", "--image-size", "32", "32", "--batch", "1:2:8",
                 "-o", str(out)]) == 0
    assert main(["validate", str(out)]) == 0
    assert main(["bench", str(out), "--iters", "3", "--warmup", "1", "--batch", "8",
                 "--json", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["device"].startswith("cuda:")


def test_bad_engine_is_an_artifact_error(tmp_path):
    if MISSING is not None:
        with pytest.raises(RuntimeMissingError):
            trt_target.TensorRTRunner(tmp_path / "none.engine")
        return
    (tmp_path / "bad.engine").write_bytes(b"not an engine")
    with pytest.raises(ArtifactError, match="cannot deserialize"):
        trt_target.TensorRTRunner(tmp_path / "bad.engine")


def test_runs_here_names_what_is_missing():
    if MISSING is None:
        assert trt_target._import_tensorrt() is not None and torch.cuda.is_available()
    elif trt_target._import_tensorrt() is None:
        assert MISSING.startswith("TensorRT is not installed") and "vitedge[tensorrt]" in MISSING
    else:
        assert "no CUDA GPU" in MISSING
