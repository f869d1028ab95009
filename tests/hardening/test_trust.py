"""The trust model for code-bearing artifacts (issue 17): signatures (OpenSSF model-signing) and the load gate.

A TorchScript file runs TorchScript code when it is loaded: the hostile artifact here holds a scripted
``__setstate__`` that writes a marker file through ``torch.from_file(path, shared=True)``. Without a trusted key
or ``--trust-code`` nothing may load it (the marker must not appear); with ``--trust-code`` it does appear (the
control that proves the payload is real). With ``--key`` the folder's ``model.sig`` must verify, and every way of
editing a signed artifact afterwards (a model byte, a re-hashed manifest, an added file, another signer, no or a
broken signature, a symlink, a manifest swapped in after the check) is refused with one line.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch
from torch import nn

import vitedge.data
import vitedge.runtime
from vitedge.bench import bench
from vitedge.cli import main
from vitedge.errors import SignatureError, UntrustedCodeError, UsageError
from vitedge.export import export
from vitedge.manifest import write_manifest
from vitedge.runtime import open_artifact
from vitedge.signing import generate_keypair, sign_artifact, verify_artifact
from vitedge.validate import validate
from helpers import one_line_error

SIZE = (32, 32)


def tiny() -> nn.Module:
    """A 3-class patch classifier for (B, 3, 32, 32): exports and validates in a second."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 8, stride=8), nn.Flatten(), nn.Linear(8 * 4 * 4, 3)).eval()


class Payload(nn.Module):
    """Hostile code: its scripted ``__setstate__`` runs inside ``torch.jit.load`` and writes ``marker``."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.written = 0

    def forward(self, x):
        return x

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.marker = state[0]
        self.training = state[1]
        # the sum keeps the write alive (TorchScript drops a mutation of a tensor nobody reads)
        self.written = int(torch.from_file(self.marker, shared=True, size=8, dtype=torch.uint8).fill_(88).sum())


class Hostile(nn.Module):
    """The genuine model behind the payload: it still classifies like the exported one."""

    def __init__(self, inner, marker: str):
        super().__init__()
        self.inner = inner
        self.payload = Payload(marker)

    def forward(self, x):
        return self.inner(self.payload(x))


def rehash(d: Path) -> None:
    """Recompute manifest.json's ``files`` as an attacker who can edit files can."""
    m = json.loads((d / "manifest.json").read_text())
    m.pop("files", None)
    (d / "manifest.json").unlink()
    write_manifest(d, m)


def make_hostile(src: Path, dst: Path, marker: Path, sign: Path | None = None, keep_sig: bool = False) -> Path:
    """Copy artifact ``src`` to ``dst`` with its model.pt replaced by :class:`Hostile` (marker path inside) and
    the manifest re-hashed; signed with ``sign`` if given; the copied model.sig is dropped unless ``keep_sig``."""
    shutil.copytree(src, dst)
    if not keep_sig:
        (dst / "model.sig").unlink(missing_ok=True)
    scripted = torch.jit.script(Hostile(torch.jit.load(str(src / "model.pt")), str(marker)))
    torch.jit.save(scripted, str(dst / "model.pt"))
    sig = dst / "model.sig"
    saved = sig.read_bytes() if keep_sig and sig.exists() else None
    sig.unlink(missing_ok=True)
    rehash(dst)
    if saved is not None:
        sig.write_bytes(saved)
    if sign is not None:
        sign_artifact(dst, sign)
    assert not marker.exists()  # scripting and saving ran nothing
    return dst


def refusal(target: str, d: Path, what: str) -> str:
    return (f"refusing to load {target} artifact {d}: its {what} runs code when it is loaded and it is not signed by a "
            "trusted key; pass --key PUB.pem to check its signature, or --trust-code if you trust its source")



@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two P-256 key pairs: "a" (the trusted publisher) and "b" (someone else)."""
    root = tmp_path_factory.mktemp("keys")
    return {n: generate_keypair(root / n) for n in ("a", "b")}


@pytest.fixture(scope="module")
def arts(tmp_path_factory, keys):
    """The tiny model exported to TorchScript and ONNX, unsigned and signed with key a."""
    root = tmp_path_factory.mktemp("trust")
    pre = vitedge.data.make_preprocessing(SIZE)
    out = {}
    for target in ("torchscript", "onnx"):
        for signed in (False, True):
            name = f"{target}{'-signed' if signed else ''}"
            out[name] = export(tiny(), torch.zeros(2, 3, *SIZE), target, root / name, preprocessing=pre,
                               sign_key=keys["a"][0] if signed else None).path
    return out


# ---------------------------------------------------------------------------------------------------------
# The gate without keys

def test_unsigned_torchscript_is_refused_by_open_validate_and_bench(arts, tmp_path):
    marker = tmp_path / "marker"
    d = make_hostile(arts["torchscript"], tmp_path / "hostile", marker)
    for call in (lambda: open_artifact(d), lambda: validate(d, model=tiny()),
                 lambda: bench(d, iters=1, warmup=0)):
        with pytest.raises(UntrustedCodeError) as e:
            call()
        assert str(e.value) == refusal("torchscript", d, "TorchScript file")
    assert not marker.exists()


@pytest.mark.parametrize("command", ["validate", "bench"])
def test_cli_refuses_unsigned_torchscript(arts, tmp_path, capsys, command):
    marker = tmp_path / "marker"
    d = make_hostile(arts["torchscript"], tmp_path / "hostile", marker)
    assert main([command, str(d)] + (["--iters", "1"] if command == "bench" else [])) == 1
    assert one_line_error(capsys)[len("vitedge: error: "):] == refusal("torchscript", d, "TorchScript file")
    assert not marker.exists()


def test_cli_refusal_in_a_real_process(arts, tmp_path):
    marker = tmp_path / "marker"
    d = make_hostile(arts["torchscript"], tmp_path / "hostile", marker)
    p = subprocess.run([sys.executable, "-m", "vitedge.cli", "bench", str(d), "--iters", "1", "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip() == f"vitedge: error: {refusal('torchscript', d, 'TorchScript file')}"
    assert not marker.exists()


def test_trust_code_runs_the_payload(arts, tmp_path, capsys, photo_batch):
    """Control: the payload is real. With trust_code / --trust-code the artifact loads and the marker appears."""
    marker = tmp_path / "marker"
    d = make_hostile(arts["torchscript"], tmp_path / "hostile", marker)
    _, runner = open_artifact(d, trust_code=True)
    assert marker.read_bytes() == b"X" * 8
    x = photo_batch(SIZE, 2).numpy()
    with torch.inference_mode():
        np.testing.assert_allclose(runner.run(x)[0], tiny()(torch.from_numpy(x)).numpy(), atol=1e-5)
    marker2 = tmp_path / "marker2"
    d2 = make_hostile(arts["torchscript"], tmp_path / "hostile2", marker2)
    assert main(["bench", str(d2), "--trust-code", "--iters", "1", "--warmup", "0"]) == 0
    assert marker2.read_bytes() == b"X" * 8


def test_aotinductor_is_refused_before_its_library_is_loaded(arts, tmp_path, monkeypatch, capsys):
    """An AOTInductor package is a shared library: refused unsigned, and aoti_load_package is never reached.
    (The real compiled package is checked in tests/targets/test_aotinductor.py.)"""
    import torch._inductor
    calls = []
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda *a, **k: calls.append(a))
    d = tmp_path / "aoti"
    shutil.copytree(arts["onnx"], d)
    for f in d.iterdir():
        if f.name != "manifest.json":
            f.unlink()
    import zipfile
    with zipfile.ZipFile(d / "model.pt2", "w") as z:
        z.writestr("model/data/aotinductor/model/model.so", b"\x7fELF not really")
    m = json.loads((d / "manifest.json").read_text())
    m.update(target="aotinductor", artifact="model.pt2", backend="libtorch")
    (d / "manifest.json").write_text(json.dumps(m))
    rehash(d)
    with pytest.raises(UntrustedCodeError) as e:
        open_artifact(d)
    assert str(e.value) == refusal("aotinductor", d, "AOTInductor package")
    assert main(["validate", str(d)]) == 1
    one_line_error(capsys, "AOTInductor package runs code", "--trust-code")
    assert calls == []


def test_data_formats_load_without_a_key(arts):
    art, runner = open_artifact(arts["onnx"])
    assert runner.runtime.startswith("onnxruntime")
    assert validate(arts["onnx"], model=tiny())["passed"]


# ---------------------------------------------------------------------------------------------------------
# Signing and --key

def test_signed_artifact_loads_with_its_key(arts, keys, capsys):
    pub_a, pub_b = keys["a"][1], keys["b"][1]
    for name in ("torchscript-signed", "onnx-signed"):
        d = arts[name]
        r = verify_artifact(d, [pub_b, pub_a])
        assert r["key"] == str(pub_a)
        assert set(r["files"]) == {"manifest.json", Path(json.loads((d / "manifest.json").read_text())
                                                           ["artifact"]).name}
        art, runner = open_artifact(d, trusted_keys=[pub_b, pub_a])
        assert runner.runtime.startswith(("libtorch", "onnxruntime"))
        assert validate(d, model=tiny(), trusted_keys=str(pub_a))["passed"]
        assert main(["bench", str(d), "--key", str(pub_a), "--iters", "2", "--warmup", "1"]) == 0
        capsys.readouterr()
        assert main(["verify", str(d), "--key", str(pub_b), "--key", str(pub_a)]) == 0
        out = capsys.readouterr().out.strip()
        assert out.startswith(f"verified {d / 'model.sig'}: signed by {pub_a}") and out.endswith("2 files match")


def test_signed_hostile_loads_only_when_its_signer_is_trusted(arts, keys, tmp_path):
    """A signature grants trust only through the key: signed by b, refused with a; loaded with b."""
    marker = tmp_path / "marker"
    d = make_hostile(arts["torchscript"], tmp_path / "hostile", marker, sign=keys["b"][0])
    with pytest.raises(SignatureError, match="signed by another key"):
        open_artifact(d, trusted_keys=keys["a"][1])
    assert not marker.exists()
    open_artifact(d, trusted_keys=keys["b"][1])
    assert marker.exists()


def _tamper_byte(d, tmp_path, keys):
    data = bytearray((d / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (d / "model.pt").write_bytes(bytes(data))


def _rehashed_manifest(d, tmp_path, keys):  # the hostile model with a manifest re-hashed to match, old model.sig
    shutil.rmtree(d)
    make_hostile(tmp_path / "src", d, tmp_path / "marker", keep_sig=True)


def _extra_file(d, tmp_path, keys):
    (d / "notes.txt").write_text("added after signing\n")


def _other_key(d, tmp_path, keys):
    shutil.rmtree(d)
    make_hostile(tmp_path / "src", d, tmp_path / "marker", sign=keys["b"][0])


def _missing_sig(d, tmp_path, keys):
    (d / "model.sig").unlink()


def _malformed_sig(d, tmp_path, keys):
    b = json.loads((d / "model.sig").read_text())
    b["dsseEnvelope"]["payload"] = "not base64!"
    (d / "model.sig").write_text(json.dumps(b))


def _altered_statement(d, tmp_path, keys):  # a re-encoded statement listing the hostile digests, old signature
    import base64
    sig = json.loads((d / "model.sig").read_text())
    _rehashed_manifest(d, tmp_path, keys)
    st = json.loads(base64.b64decode(sig["dsseEnvelope"]["payload"]))
    for r in st["predicate"]["resources"]:
        r["digest"] = __import__("hashlib").sha256((d / r["name"]).read_bytes()).hexdigest()
    sig["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
    (d / "model.sig").write_text(json.dumps(sig))


def _symlink(d, tmp_path, keys):
    os.symlink("model.pt", d / "link.pt")


ATTACKS = {"tampered model byte": (_tamper_byte, "model.pt does not match its signed SHA-256"),
           "manifest re-hashed": (_rehashed_manifest, "does not match its signed SHA-256"),
           "extra file": (_extra_file, "'notes.txt', which the signature does not cover"),
           "signed by another key": (_other_key, "is signed by another key"),
           "missing model.sig": (_missing_sig, "is not signed (no model.sig)"),
           "malformed model.sig": (_malformed_sig, "malformed signature"),
           "altered statement": (_altered_statement, "does not verify with"),
           "symlink": (_symlink, "symlink")}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_edited_signed_artifact_is_refused(arts, keys, tmp_path, capsys, attack):
    fn, needle = ATTACKS[attack]
    shutil.copytree(arts["torchscript-signed"], tmp_path / "src")
    d = tmp_path / "a"
    shutil.copytree(tmp_path / "src", d, symlinks=True)
    fn(d, tmp_path, keys)
    pub = str(keys["a"][1])
    with pytest.raises(SignatureError) as e:
        open_artifact(d, trusted_keys=pub)
    assert needle in str(e.value) and "\n" not in str(e.value)
    for cmd in (["verify", str(d), "--key", pub], ["validate", str(d), "--key", pub],
                ["bench", str(d), "--key", pub, "--iters", "1"]):
        assert main(cmd) == 1
        one_line_error(capsys, needle)
    assert not (tmp_path / "marker").exists()


def test_manifest_swapped_after_the_signature_check_is_refused(arts, keys, tmp_path, monkeypatch):
    """The manifest that is parsed must be the signed one: a swap between the signature check and the parse
    (here simulated right before read_manifest) is caught by the SHA-256 of the parsed bytes."""
    d = tmp_path / "a"
    shutil.copytree(arts["torchscript-signed"], d)
    real = vitedge.runtime.read_manifest

    def swap_then_read(path, verify=True):
        m = json.loads((d / "manifest.json").read_text())
        m["labels"] = ["x", "y", "z"]
        (d / "manifest.json").write_text(json.dumps(m))
        return real(path, verify=verify)

    monkeypatch.setattr(vitedge.runtime, "read_manifest", swap_then_read)
    with pytest.raises(SignatureError, match="is not the manifest the signature covers"):
        open_artifact(d, trusted_keys=keys["a"][1])


def test_key_makes_the_hash_check_mandatory_and_covers_data_formats(arts, keys, tmp_path, capsys):
    """With a key, an unsigned ONNX artifact is refused too (any target), and --no-verify does not skip it."""
    assert main(["validate", str(arts["onnx"]), "--key", str(keys["a"][1]), "--no-verify"]) == 1
    one_line_error(capsys, "is not signed (no model.sig)")


def test_bad_key_files_are_usage_errors(arts, keys, tmp_path, capsys):
    d = str(arts["torchscript-signed"])
    assert main(["verify", d, "--key", str(keys["a"][0])]) == 2  # the private key given as a public key
    one_line_error(capsys, "not a PEM public key", "pass the .pub.pem")
    assert main(["verify", d, "--key", str(tmp_path / "nope.pub.pem")]) == 2
    one_line_error(capsys, "cannot read public key")
    with pytest.raises(SystemExit) as e:  # --key is required (argparse's usage error)
        main(["verify", d])
    assert e.value.code == 2
    capsys.readouterr()
    with pytest.raises(UsageError, match="not a PEM private key"):
        sign_artifact(d, keys["a"][1])


# ---------------------------------------------------------------------------------------------------------
# Export --sign and keygen

def test_export_signs_inside_the_temporary_folder(keys, tmp_path, monkeypatch):
    """The artifact is never visible unsigned: model.sig is written before the swap into place."""
    import vitedge.signing
    real, seen = vitedge.signing.sign_artifact, []

    def spy(directory, key, password=None):
        seen.append((Path(directory).name, (tmp_path / "out").exists()))
        return real(directory, key, password)

    monkeypatch.setattr(vitedge.signing, "sign_artifact", spy)
    art = export(tiny(), torch.zeros(2, 3, *SIZE), "torchscript", tmp_path / "out",
                 preprocessing=vitedge.data.make_preprocessing(SIZE), sign_key=keys["a"][0])
    assert len(seen) == 1 and seen[0][0].startswith(".out.tmp-") and seen[0][1] is False
    assert verify_artifact(art.path, keys["a"][1])["files"]["manifest.json"] == art.manifest_sha256


def test_export_with_a_bad_sign_key_fails_before_writing(keys, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", "deit_tiny", "--target", "onnx", "--image-size", "32", "32", "--sign",
                 str(keys["a"][1]), "-o", str(out)]) == 2
    one_line_error(capsys, "is not a PEM private key")
    assert not out.exists()
    with pytest.raises(UsageError):
        export(tiny(), torch.zeros(2, 3, *SIZE), "onnx", out, sign_key=tmp_path / "missing.pem")
    assert not out.exists()


def test_cli_export_sign_then_verify(keys, tmp_path, capsys):
    out = tmp_path / "signed"
    assert main(["export", "deit_tiny", "--target", "torchscript", "--image-size", "32", "32", "--num-classes", "3",
                 "--sign", str(keys["a"][0]), "-o", str(out)]) == 0
    assert (out / "model.sig").is_file()
    assert main(["validate", str(out), "--key", str(keys["a"][1])]) == 0
    capsys.readouterr()
    assert main(["verify", str(out), "--key", str(keys["a"][1])]) == 0
    assert "2 files match" in capsys.readouterr().out
    assert main(["verify", str(out / "model.pt"), "--key", str(keys["a"][1])]) == 0  # the model file, as validate
    assert "2 files match" in capsys.readouterr().out
    assert main(["verify", str(out / "model.sig"), "--key", str(keys["a"][1])]) == 1
    one_line_error(capsys, "model.sig is a file but not the model file")


def test_keygen(tmp_path, capsys):
    from cryptography.hazmat.primitives import serialization
    prefix = tmp_path / "k" / "publisher"
    assert main(["keygen", "-o", str(prefix)]) == 0
    priv, pub = Path(f"{prefix}.pem"), Path(f"{prefix}.pub.pem")
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(priv.read_bytes(), None)
    assert key.curve.name == "secp256r1"
    assert serialization.load_pem_public_key(pub.read_bytes()).public_numbers() == key.public_key().public_numbers()
    before = priv.read_bytes()
    capsys.readouterr()
    assert main(["keygen", "-o", str(prefix)]) == 2  # never overwrites a key
    one_line_error(capsys, "exists")
    assert priv.read_bytes() == before


# ---------------------------------------------------------------------------------------------------------
# The runner checks its input

@pytest.mark.parametrize("case", ["nan", "nhwc", "3d", "float64", "list"])
def test_open_artifact_runner_checks_its_input(arts, photo_batch, case):
    _, runner = open_artifact(arts["onnx"])
    x = np.ascontiguousarray(photo_batch(SIZE, 2).numpy())
    bad = {"nan": np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x).astype(np.float32),
           "nhwc": np.ascontiguousarray(x.transpose(0, 2, 3, 1)), "3d": x[0], "float64": x.astype(np.float64),
           "list": x.tolist()}[case]
    with pytest.raises(UsageError) as e:
        runner.run(bad)
    assert "\n" not in str(e.value)
    assert runner.run(x)[0].shape == (2, 3)  # the good input still runs; attributes pass through
    assert runner.runtime == runner.inner.runtime and runner.runtime.startswith("onnxruntime")
