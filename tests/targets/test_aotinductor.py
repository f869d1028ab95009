"""AOTInductor target: torch.export + aoti_compile_and_package -> model.pt2, run with aoti_load_package.

Each compile takes tens of seconds on this machine, so one fp32 artifact is shared by the module (fp16 is
marked slow).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import vitedge.export
from vitedge.errors import ArtifactError
from vitedge.manifest import read_manifest
from vitedge.models.vit import ViT
from vitedge.targets import aotinductor, target_module

SIZE = (32, 32)


def tiny_vit() -> ViT:
    torch.manual_seed(0)
    return ViT(image_size=32, patch_size=8, dim=32, depth=1, heads=2, mlp_dim=64, num_classes=7).eval()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("aoti") / "tiny_vit_aoti"
    return vitedge.export.export(tiny_vit(), torch.zeros(1, 3, *SIZE), "aotinductor", out,
                                 preprocessing=vitedge.data.make_preprocessing(SIZE))


def test_target_is_registered():
    assert target_module("aotinductor") is aotinductor
    assert set(aotinductor.PRECISIONS) == {"fp32", "fp16"}


def test_manifest_and_export_parity(artifact):
    m = artifact.manifest
    assert (m["target"], m["backend"], m["artifact"], m["precision"]) == ("aotinductor", "libtorch", "model.pt2", "fp32")
    assert m["inputs"][0]["shape"] == [-1, 3, *SIZE]
    assert m["outputs"][0]["shape"] == [-1, 7]
    assert m["export"]["example_batch"] == 2  # a batch-1 example is widened so the batch stays symbolic
    assert m["export"]["inductor_configs"]["freezing"] is True
    assert (artifact.path / "model.pt2").stat().st_size == m["files"]["model.pt2"]["bytes"]
    for b in (1, 3, 8):  # checked by the export driver on the bundled photos
        p = m["parity"][f"batch_{b}"]
        assert p["samples"] == b and p["max_abs"] <= 1e-4 and p["top1_agreement"] == 1.0, (b, p)


def test_runner_matches_eager_on_photos(artifact, photo_batch):
    runner = aotinductor.load(read_manifest(artifact.path))
    assert runner.runtime == "aotinductor"
    x = photo_batch(SIZE, 5)
    with torch.inference_mode():
        ref = tiny_vit()(x).numpy()
    got = runner.run(x.numpy())
    assert len(got) == 1 and got[0].dtype == np.float32 and got[0].shape == (5, 7)
    assert np.abs(got[0] - ref).max() <= 1e-4
    assert (got[0].argmax(1) == ref.argmax(1)).all()
    # The batch is dynamic: batch 1 gives the first row.
    one = runner.run(x[:1].numpy())[0]
    assert np.abs(one - ref[:1]).max() <= 1e-4


def test_truncated_package_is_a_clear_error(artifact, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(artifact.path, bad)
    data = (bad / "model.pt2").read_bytes()
    (bad / "model.pt2").write_bytes(data[: len(data) // 3])
    # skip the manifest's size/hash check so the loader itself meets the broken file (an empty "files" no longer
    # skips it: read_manifest refuses a manifest that does not cover its artifact)
    with pytest.raises(ArtifactError, match="cannot load AOTInductor package"):
        aotinductor.load(read_manifest(bad, verify=False))


def test_missing_package_is_a_clear_error(artifact, tmp_path):
    bad = tmp_path / "gone"
    shutil.copytree(artifact.path, bad)
    (bad / "model.pt2").unlink()
    with pytest.raises(ArtifactError):
        aotinductor.load(read_manifest(bad, verify=False))


@pytest.mark.slow
def test_fp16(tmp_path, photo_batch):
    art = vitedge.export.export(tiny_vit(), torch.zeros(2, 3, *SIZE), "aotinductor", tmp_path / "fp16",
                                precision="fp16", preprocessing=vitedge.data.make_preprocessing(SIZE))
    assert art.manifest["precision"] == "fp16" and art.manifest["quantization"]["io"] == "float32"
    x = photo_batch(SIZE, 4)
    got = aotinductor.load(art).run(x.numpy())[0]
    with torch.inference_mode():
        ref = tiny_vit()(x).numpy()
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert got.dtype == np.float32 and cos.min() >= 0.999


def test_unsigned_package_is_refused_unless_trusted(artifact, tmp_path, monkeypatch, photo_batch):
    """A .pt2 holds a shared library whose constructors run on load: open_artifact refuses it without a trusted
    key or trust_code, before aoti_load_package is reached; signed with a key it loads with that key."""
    from vitedge.errors import UntrustedCodeError
    from vitedge.runtime import open_artifact
    from vitedge.signing import generate_keypair, sign_artifact
    real, calls = torch._inductor.aoti_load_package, []
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda *a, **k: calls.append(a) or real(*a, **k))
    with pytest.raises(UntrustedCodeError, match="AOTInductor package runs code when it is loaded"):
        open_artifact(artifact.path)
    assert calls == []
    x = photo_batch(SIZE, 2).numpy()
    assert open_artifact(artifact.path, trust_code=True)[1].run(x)[0].shape == (2, 7)
    signed = tmp_path / "signed"
    shutil.copytree(artifact.path, signed)
    priv, pub = generate_keypair(tmp_path / "k")
    sign_artifact(signed, priv)
    assert open_artifact(signed, trusted_keys=[pub])[1].run(x)[0].shape == (2, 7)


def _garbage_library(src: Path, dst: Path) -> None:
    """Copy the package ``src`` to ``dst`` with its shared library replaced by bytes dlopen refuses."""
    import zipfile
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zo:
        for n in zi.namelist():
            zo.writestr(n, b"\x7fELF not a library" * 8 if n.endswith(".so") else zi.read(n))


def test_loads_leave_nothing_in_the_system_temp_dir(artifact, tmp_path, monkeypatch):
    """libtorch extracts a package into $TMPDIR/aotinductor_XXXXXX and kept it after a failed load (issue 17):
    every load now goes through a private folder that is removed, on failure and on success."""
    import tempfile
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(systmp))
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    bad = tmp_path / "bad"
    shutil.copytree(artifact.path, bad)
    _garbage_library(artifact.path / "model.pt2", bad / "model.pt2")
    with pytest.raises(ArtifactError, match="cannot load AOTInductor package"):
        aotinductor.load(read_manifest(bad, verify=False))
    assert list(systmp.iterdir()) == []
    runner = aotinductor.load(read_manifest(artifact.path))
    assert list(systmp.iterdir()) == [] and os.environ["TMPDIR"] == str(systmp)
    assert runner.run(np.zeros((1, 3, *SIZE), np.float32))[0].shape == (1, 7)  # the library stays mapped


def test_runs_the_hashed_bytes_when_the_package_is_swapped(artifact, tmp_path, monkeypatch, photo_batch):
    from vitedge.manifest import Artifact
    work = tmp_path / "art"
    shutil.copytree(artifact.path, work)
    art = read_manifest(work)
    real = Artifact.read_file

    def read_then_swap(self, name=None, **kw):
        data = real(self, name, **kw)
        _garbage_library(artifact.path / "model.pt2", work / "model.pt2")  # on disk after the hash
        return data

    monkeypatch.setattr(Artifact, "read_file", read_then_swap)
    x = photo_batch(SIZE, 2)
    with torch.inference_mode():
        ref = tiny_vit()(x).numpy()
    assert np.abs(aotinductor.load(art).run(x.numpy())[0] - ref).max() <= 1e-4
