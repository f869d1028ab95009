"""Exports are atomic: a failure at any point leaves the previous artifact (or none), never a partial one."""
import pytest
import torch

from vitedge.errors import ArtifactError, ExportError
from vitedge.export import export, prepare_preset
from vitedge.manifest import atomic_directory, read_manifest
from vitedge.targets import torchscript


def _small():
    return prepare_preset("deit_tiny", image_size=(32, 32), num_classes=2)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    model, spec, pre = _small()

    def broken_write(model, example, directory, options):
        (directory / "model.pt").write_bytes(b"partial")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(torchscript, "write", broken_write)
    with pytest.raises(ExportError, match="disk on fire"):
        export(model, torch.zeros(2, 3, 32, 32), "torchscript", tmp_path / "a", spec=spec, preprocessing=pre)
    assert list(tmp_path.iterdir()) == []


def test_failed_parity_keeps_previous_artifact(tmp_path, monkeypatch):
    model, spec, pre = _small()
    out = tmp_path / "a"
    export(model, torch.zeros(2, 3, 32, 32), "torchscript", out, spec=spec, preprocessing=pre)
    before = read_manifest(out).manifest["files"]

    real_write = torchscript.write

    def drifting_write(model, example, directory, options):  # export a different model than the eager one
        other, _, _ = prepare_preset("deit_tiny", image_size=(32, 32), num_classes=2, seed=1)
        return real_write(other, example, directory, options)

    monkeypatch.setattr(torchscript, "write", drifting_write)
    with pytest.raises(ExportError, match="differs from eager"):
        export(model, torch.zeros(2, 3, 32, 32), "torchscript", out, spec=spec, preprocessing=pre, force=True)
    assert read_manifest(out).manifest["files"] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_atomic_directory_enospc(tmp_path):
    out = tmp_path / "a"
    with pytest.raises(ArtifactError, match="no space left on device"):
        with atomic_directory(out) as d:
            (d / "x").write_bytes(b"1")
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []
