"""Shared helpers for the Python-driven ctest tests of the C++ runner (not a pytest module)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

# Every key of the bench JSON (the bench result schema, README "Using it"); the C++ and Python runners emit the same.
BENCH_KEYS = {"artifact", "runtime", "device", "batch", "threads", "warmup", "iters", "latency_ms",
              "throughput_ips", "peak_rss_mb", "artifact_mb", "machine"}
LATENCY_KEYS = {"mean", "p50", "p90", "p99", "min", "max"}
MACHINE_KEYS = {"cpu", "cores", "flags", "os", "arch"}  # as vitedge/machine.py

PREPROCESSING = {"size": [64, 64], "resize": "cover", "crop": "center", "interpolation": "bilinear",
                 "scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                 "layout": "NCHW", "color": "RGB"}


class Failure(Exception):
    """A failed check; main() prints it as one line and exits 1."""


def tiny_vit():
    """A tiny seeded vitedge ViT on 64x64 inputs, 10 classes, in eval mode."""
    from vitedge.models.vit import ViT
    torch.manual_seed(0)
    return ViT(image_size=64, patch_size=16, dim=64, depth=2, heads=4, mlp_dim=128, num_classes=10).eval()


def export_tiny(out_dir: Path) -> Path:
    """Export the tiny ViT to a TorchScript artifact with the project's exporter; returns the artifact dir."""
    from vitedge.export import export
    model = tiny_vit()
    example = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    art = export(model, example, "torchscript", out_dir, force=True, preprocessing=dict(PREPROCESSING))
    m = art.manifest
    if (m["backend"], m["target"], m["artifact"]) != ("libtorch", "torchscript", "model.pt"):
        raise Failure(f"unexpected manifest from vitedge.export.export: {m['backend']}/{m['target']}/{m['artifact']}")
    return Path(art.path)


def make_keypair(out_dir: Path, curve: str = "P-256") -> tuple[Path, Path]:
    """A throwaway elliptic-curve key pair for signing test artifacts: (OUT/key.pem, OUT/pub.pem), PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(curves[curve])
    priv, pub = out_dir / "key.pem", out_dir / "pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def sign_artifact(artifact_dir: Path, private_key: Path) -> Path:
    """Sign ARTIFACT_DIR with OpenSSF model-signing (files serialization, sha256, model.sig ignored, no git
    ignores): writes and returns ARTIFACT_DIR/model.sig, the format the C++ runner verifies."""
    import model_signing
    artifact_dir = Path(artifact_dir)
    sig = artifact_dir / "model.sig"
    sig.unlink(missing_ok=True)
    hashing = model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"], ignore_git_paths=False)
    model_signing.signing.Config().use_elliptic_key_signer(private_key=str(private_key)) \
        .set_hashing_config(hashing).sign(artifact_dir, sig)
    return sig


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)


def check_bench_json(data: dict, where: str, runtime: str = "libtorch-cpp") -> None:
    missing = BENCH_KEYS - data.keys()
    extra = data.keys() - BENCH_KEYS
    if missing or extra:
        raise Failure(f"{where}: bench JSON keys differ from the schema: missing {sorted(missing)}, extra {sorted(extra)}")
    if set(data["latency_ms"]) != LATENCY_KEYS:
        raise Failure(f"{where}: latency_ms keys {sorted(data['latency_ms'])} != {sorted(LATENCY_KEYS)}")
    if set(data["machine"]) != MACHINE_KEYS:
        raise Failure(f"{where}: machine keys {sorted(data['machine'])} != {sorted(MACHINE_KEYS)}")
    lat = data["latency_ms"]
    if not (0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] and lat["min"] <= lat["mean"] <= lat["max"]):
        raise Failure(f"{where}: inconsistent latency statistics {lat}")
    if data["runtime"] != runtime or data["device"] != "cpu":
        raise Failure(f"{where}: runtime/device {data['runtime']}/{data['device']}")
    for k in ("throughput_ips", "peak_rss_mb", "artifact_mb"):
        if not (isinstance(data[k], (int, float)) and data[k] > 0):
            raise Failure(f"{where}: {k} = {data[k]!r} is not a positive number")
    if not isinstance(data["machine"]["flags"], list) or not data["machine"]["cores"] >= 1:
        raise Failure(f"{where}: bad machine block {data['machine']}")


def main(fn) -> None:
    try:
        fn()
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def read_dump(path: Path) -> np.ndarray:
    """The float32 array vitedge-bench --dump-output wrote to PATH (shape and dtype from PATH.json)."""
    meta = load_json(Path(str(path) + ".json"))
    data = np.fromfile(path, dtype="<f4")
    if meta.get("dtype") != "float32" or data.size != int(np.prod(meta["shape"])):
        raise Failure(f"{path}: {data.size} floats do not match {path}.json {meta}")
    return data.reshape(meta["shape"])


def copy_artifact(src: Path, dst: Path, edit=None) -> Path:
    """Copy an artifact directory, optionally editing its manifest dict in place with ``edit(manifest)``."""
    shutil.copytree(src, dst)
    if edit is not None:
        m = load_json(dst / "manifest.json")
        edit(m)
        (dst / "manifest.json").write_text(json.dumps(m, indent=2))
    return dst


def error_line_problems(r: subprocess.CompletedProcess, code: int, phrase: str,
                        prefix: str = "vitedge-bench: error: ") -> list[str]:
    """What is wrong with a failed run's output: it must exit ``code``, print nothing on stdout and exactly one
    stderr line starting with ``prefix`` and containing ``phrase``. Empty list = as expected."""
    lines = r.stderr.splitlines()
    problems = []
    if r.returncode != code:
        problems.append(f"exit {r.returncode}, expected {code}")
    if len(lines) != 1 or not lines[0].startswith(prefix):
        problems.append(f"stderr is not one {prefix.strip()!r} line: {r.stderr[:500]!r}")
    elif phrase not in lines[0]:
        problems.append(f"message lacks {phrase!r}: {lines[0]!r}")
    if r.stdout:
        problems.append(f"stdout not empty: {r.stdout[:200]!r}")
    return problems


def parse_classify(stdout: str) -> dict[str, list[tuple[int, float]]]:
    """classify's output: a line per image path, then its top-5 as indented `index  label  score` lines."""
    out: dict[str, list[tuple[int, float]]] = {}
    current = None
    for line in stdout.splitlines():
        if not line.startswith(" "):
            current = line.strip()
            out[current] = []
        else:
            f = line.split()
            out[current].append((int(f[0]), float(f[-1])))
    return out
