"""The manifest's JSON Schema is the contract of both readers (issue 20): one corpus, two verdicts that must agree.

schema_corpus.py --bench PATH/vitedge-bench --schema PATH/share/vitedge/manifest.schema.json --fixtures DIR
                 --workdir DIR [--openvino]

1. Every manifest vitedge export writes for the targets the C++ runner loads here (the shared TorchScript and
   AOTInductor fixtures, an ONNX and, with --openvino, an OpenVINO export made here) validates against the schema
   (the build tree's copy, the file `cmake --install` ships as share/vitedge/manifest.schema.json).
2. A corpus of edited manifests (hostile ones, and edits a reader must still accept) over the ONNX and OpenVINO
   artifacts: for each, the schema's verdict (jsonschema, Draft 2020-12), the Python reader's (read_manifest) and the
   C++ runner's (vitedge-bench ART --iters 1, i.e. Runner::open, the ONNX Runtime / OpenVINO backend and one run)
   must agree: C++ refuses exactly what the schema refuses. A few bounds are code, not schema (preprocessing.size
   equal to the input's (H, W)): those cases must be refused by Python and C++ while the schema accepts them.
   Every refusal is one line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import PREPROCESSING, Failure, copy_artifact, load_json, main, run, tiny_vit  # noqa: E402

SHA0 = "0" * 64


def _set(path: str, value):
    """An edit setting manifest[path] (dotted, [i] for list items; the last key created if absent)."""
    def edit(m):
        keys = path.split(".")
        obj = m
        for k in keys[:-1]:
            obj = obj[int(k[1:-1])] if k.startswith("[") else obj.setdefault(k, {}) if obj.get(k) is None else obj[k]
        last = keys[-1]
        obj[int(last[1:-1]) if last.startswith("[") else last] = value
    return edit


def _pop(path: str):
    def edit(m):
        *head, last = path.split(".")
        obj = m
        for k in head:
            obj = obj[k]
        obj.pop(last)
    return edit


def _first_file_entry(update: dict):
    def edit(m):
        m["files"][m["artifact"]].update(update)
    return edit


def _file_entry_drop(key: str):
    def edit(m):
        m["files"][m["artifact"]].pop(key)
    return edit


def _add_file(name, entry=None):
    def edit(m):
        m["files"][name] = entry or {"sha256": SHA0, "bytes": 1}
    return edit


# (name, edit, verdict): "ok" accepted by all; "schema" refused by the schema, Python and C++; "code" accepted by the
# schema, refused by both readers (a bound the schema cannot express); "schema-only" refused by the schema and Python,
# while the runner leaves it to the runtime (the first input (B, C, H, W) with fixed C: cpp_bad_inputs runs graphs
# with other inputs; the runtime refuses an input the graph does not take) or to the image loader (no
# "preprocessing": the runner runs tensors, Runner::load_image refuses), or never reads it (export.graph: node
# counts for people and tools).
COMMON = [
    ("as exported", lambda m: None, "ok"),
    ("unknown top-level key", _set("future_field", [1, 2]), "ok"),
    ("no backend (the target's)", _pop("backend"), "ok"),
    ("precision null", _set("precision", None), "ok"),
    ("labels null", _set("labels", None), "ok"),
    ("quantization null", _set("quantization", None), "ok"),
    ("one mean value (broadcast)", _set("preprocessing.mean", [0.5]), "ok"),
    ("one std value (broadcast)", _set("preprocessing.std", [0.25]), "ok"),
    ("schema_version 2", _set("schema_version", 2), "schema"),
    ("schema_version 0", _set("schema_version", 0), "schema"),
    ("schema_version string", _set("schema_version", "1"), "schema"),
    ("artifact ../x", _set("artifact", "../model.onnx"), "schema"),
    ("artifact absolute", _set("artifact", "/etc/passwd"), "schema"),
    ("artifact backslash", _set("artifact", "sub\\model.onnx"), "schema"),
    ("artifact drive", _set("artifact", "C:model.onnx"), "schema"),
    ("artifact empty", _set("artifact", ""), "schema"),
    ("artifact ./", _set("artifact", "./"), "schema"),
    ("artifact number", _set("artifact", 5), "schema"),
    ("target empty", _set("target", ""), "schema"),
    ("target missing", _pop("target"), "schema"),
    ("precision number", _set("precision", 5), "schema"),
    ("files a list", _set("files", ["model.onnx"]), "schema"),
    ("files missing", _pop("files"), "schema"),
    ("files ../x", _add_file("../outside.bin"), "schema"),
    ("files lists manifest.json", _add_file("manifest.json"), "schema"),
    ("sha256 upper-case", lambda m: m["files"][m["artifact"]].update(sha256=m["files"][m["artifact"]]["sha256"].upper()),
     "schema"),
    ("sha256 short", _first_file_entry({"sha256": "abc"}), "schema"),
    ("bytes negative", _first_file_entry({"bytes": -1}), "schema"),
    ("bytes missing", _file_entry_drop("bytes"), "schema"),
    ("sha256 missing", _file_entry_drop("sha256"), "schema"),
    ("inputs empty", _set("inputs", []), "schema"),
    ("input dtype unknown", _set("inputs.[0].dtype", "gloat32"), "schema"),
    ("input name missing", lambda m: m["inputs"][0].pop("name"), "schema"),
    ("input rank 3", _set("inputs.[0].shape", [-1, 3, 64]), "schema-only"),
    ("input dynamic C", _set("inputs.[0].shape", [-1, -1, 64, 64]), "schema-only"),
    ("input dim 0", _set("inputs.[0].shape", [-1, 3, 0, 64]), "schema"),
    ("input dim string", _set("inputs.[0].shape", [-1, 3, "64", 64]), "schema"),
    ("input H above 8192", _set("inputs.[0].shape", [-1, 3, 9000, 64]), "schema"),
    ("outputs missing", _pop("outputs"), "schema"),
    ("output dtype missing", lambda m: m["outputs"][0].pop("dtype"), "schema"),
    ("preprocessing missing", _pop("preprocessing"), "schema-only"),
    ("preprocessing a list", _set("preprocessing", [64, 64]), "schema"),
    ("size above 8192", _set("preprocessing.size", [9000, 9000]), "schema"),
    ("size one value", _set("preprocessing.size", [64]), "schema"),
    ("size differs from the input", _set("preprocessing.size", [32, 32]), "code"),
    ("std zero", _set("preprocessing.std", [0.2, 0.0, 0.2]), "schema"),
    ("std negative", _set("preprocessing.std", [0.2, -1.0, 0.2]), "schema"),
    ("scale zero", _set("preprocessing.scale", 0), "schema"),
    ("scale missing", _pop("preprocessing.scale"), "schema"),
    ("mean two values", _set("preprocessing.mean", [0.1, 0.2]), "schema"),
    ("mean beyond float32", _set("preprocessing.mean", [1e39, 0.0, 0.0]), "schema"),
    ("mean string", _set("preprocessing.mean", ["0.5", 0.5, 0.5]), "schema"),
    ("layout NHWC", _set("preprocessing.layout", "NHWC"), "schema"),
    ("color BGR", _set("preprocessing.color", "BGR"), "schema"),
    ("interpolation nearest", _set("preprocessing.interpolation", "nearest"), "schema"),
    ("crop none", _set("preprocessing.crop", "none"), "schema"),
    ("labels numbers", _set("labels", [1, 2]), "schema"),
    ("quantization a number", _set("quantization", 5), "schema"),
    ("quantization.session_config key", _set("quantization", {"session_config": {"session.optimized_model_filepath": "x"}}),
     "schema"),
    ("export.graph unknown key", _set("export.graph.future", [1]), "ok"),
    ("export.graph op type with a domain", _set("export.graph.op_counts", {"com.microsoft:Gelu": 2}), "ok"),
    ("export.graph nodes negative", _set("export.graph.nodes", -1), "schema-only"),
    ("export.graph nodes a string", _set("export.graph.nodes", "394"), "schema-only"),
    ("export.graph op type not a name", _set("export.graph.op_counts", {"Mat Mul; rm": 1}), "schema-only"),
    ("export.graph 513 op types", _set("export.graph.op_counts", {f"Op{i}": 1 for i in range(513)}), "schema-only"),
    ("export.graph a list", _set("export.graph", [394]), "schema-only"),
]

ONNX = [
    ("session_config keys vitedge writes", _set("onnxruntime.session_config", {"session.intra_op.allow_spinning": "0",
                                                                                "session.inter_op.allow_spinning": "1",
                                                                                "session.disable_quant_qdq": "0"}), "ok"),
    ("graph level ORT_DISABLE_ALL", _set("onnxruntime.graph_optimization_level", "ORT_DISABLE_ALL"), "ok"),
    ("onnxruntime null", _set("onnxruntime", None), "ok"),
    ("onnxruntime a number", _set("onnxruntime", 5), "schema"),
    ("graph level unknown", _set("onnxruntime.graph_optimization_level", "FAST"), "schema"),
    ("session_config optimized_model_filepath", _set("onnxruntime.session_config",
                                                     {"session.optimized_model_filepath": "/tmp/written-by-ort.onnx"}),
     "schema"),
    ("session_config enable_profiling", _set("onnxruntime.session_config", {"session.enable_profiling": "1"}), "schema"),
    ("session_config value 2", _set("onnxruntime.session_config", {"session.intra_op.allow_spinning": "2"}), "schema"),
    ("session_config value integer", _set("onnxruntime.session_config", {"session.intra_op.allow_spinning": 1}), "schema"),
    ("session_config a list", _set("onnxruntime.session_config", ["session.intra_op.allow_spinning"]), "schema"),
]

OPENVINO = [
    ("openvino config allowed", _set("openvino.config", {"PERFORMANCE_HINT": "LATENCY", "EXECUTION_MODE_HINT": "ACCURACY"}),
     "ok"),
    ("openvino weights empty (default)", _set("openvino.weights", ""), "ok"),
    ("openvino block null", _set("openvino", None), "ok"),
    ("openvino a number", _set("openvino", 5), "schema"),
    ("openvino config CACHE_DIR", _set("openvino.config", {"CACHE_DIR": "/tmp/vitedge-ov-cache"}), "schema"),
    ("openvino config INFERENCE_NUM_THREADS", _set("openvino.config", {"INFERENCE_NUM_THREADS": "64"}), "schema"),
    ("openvino config bad value", _set("openvino.config", {"INFERENCE_PRECISION_HINT": "i8"}), "schema"),
    ("openvino config value list", _set("openvino.config", {"PERFORMANCE_HINT": ["LATENCY"]}), "schema"),
    ("openvino config null", _set("openvino.config", None), "schema"),
    ("openvino weights ../x", _set("openvino.weights", "../model.bin"), "schema"),
    ("openvino weights absolute", _set("openvino.weights", "/etc/passwd"), "schema"),
    ("openvino weights number", _set("openvino.weights", 3), "schema"),
]


def export_tiny(target: str, out: Path) -> Path:
    from vitedge.export import export
    example = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    return Path(export(tiny_vit(), example, target, out, force=True, preprocessing=dict(PREPROCESSING)).path)


def test(a) -> None:
    import jsonschema

    from vitedge.errors import VitedgeError
    from vitedge.manifest import manifest_schema, read_manifest
    schema = load_json(Path(a.schema))
    if schema != manifest_schema():
        raise Failure(f"{a.schema} differs from vitedge/schemas/manifest.schema.json")
    validator = jsonschema.Draft202012Validator(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    import shutil
    shutil.rmtree(work / "corpus", ignore_errors=True)

    bases = {"onnx": export_tiny("onnx", work / "onnx")}
    if a.openvino:
        bases["openvino"] = export_tiny("openvino", work / "openvino")
    exported = [*bases.values(), *(p for p in (Path(a.fixtures) / "torchscript", Path(a.fixtures) / "aotinductor")
                                   if (p / "manifest.json").is_file())]
    for art in exported:
        errors = sorted(validator.iter_errors(load_json(art / "manifest.json")), key=lambda e: list(e.path))
        if errors:
            raise Failure(f"the manifest export wrote at {art} does not validate: {errors[0].json_path}: {errors[0].message}")
        print(f"ok   {art.name}: the exported manifest validates against the schema")

    cases = [("onnx", *c) for c in COMMON + ONNX] + ([("openvino", *c) for c in COMMON + OPENVINO] if a.openvino else [])
    bad = []
    for i, (target, name, edit, verdict) in enumerate(cases):
        art = copy_artifact(bases[target], work / "corpus" / f"{target}_{i:02d}", edit)
        m = load_json(art / "manifest.json")
        schema_ok = validator.is_valid(m)
        try:
            read_manifest(art)
            py = None
        except VitedgeError as e:
            py = str(e)
        r = run([a.bench, art, "--iters", 1, "--warmup", 0], timeout=300)
        cpp = None if r.returncode == 0 else r.stderr.strip()
        want_schema = verdict == "ok" or verdict == "code"
        problems = []
        if schema_ok != want_schema:
            problems.append(f"schema {'accepts' if schema_ok else 'refuses'} it")
        if (py is None) != (verdict == "ok"):
            problems.append(f"Python {'accepts' if py is None else 'refuses'} it ({(py or '')[:200]})")
        if verdict != "schema-only" and (cpp is None) != (verdict == "ok"):
            problems.append(f"C++ {'accepts' if cpp is None else 'refuses'} it ({(cpp or '')[:200]})")
        if verdict not in ("code", "schema-only") and (cpp is None) != schema_ok:
            problems.append("C++ and the schema disagree")
        for who, msg in (("Python", py), ("C++", cpp)):
            if msg is not None and "\n" in msg.strip():
                problems.append(f"{who}'s refusal is not one line: {msg[:300]!r}")
        if problems:
            bad.append(f"{target} / {name}: {'; '.join(problems)}")
            print(f"FAIL {target} / {name}: {'; '.join(problems)}")
        else:
            print(f"ok   {target} / {name}: {verdict}" + (f" | C++ {cpp[:110]!r} | Python {py[:110]!r}" if cpp else ""))
    if Path("/tmp/written-by-ort.onnx").exists() or Path("/tmp/vitedge-ov-cache").exists():
        bad.append("a runtime wrote the file a refused manifest named")
    if bad:
        raise Failure(f"{len(bad)} of {len(cases)} corpus cases: " + " | ".join(bad))
    print(f"{len(cases)} corpus cases: the schema, the Python reader and the C++ runner agree")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    for opt in ("--bench", "--schema", "--fixtures", "--workdir"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--openvino", action="store_true")
    main(lambda: test(ap.parse_args()))
