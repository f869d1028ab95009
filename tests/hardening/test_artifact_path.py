"""An artifact is opened from its folder or from the model file in it; any other file is refused, naming it (issue 21).

The same rule as the C++ runner (cpp/src/artifact_io.cpp locate_artifact; ctest cpp_artifact_path runs both on the
same paths).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vitedge.errors import ArtifactError
from vitedge.export import export, prepare_preset
from vitedge.manifest import artifact_folder, read_manifest
from vitedge.runtime import open_artifact

SIZE = (32, 32)


@pytest.fixture(scope="module")
def onnx_art(tmp_path_factory):
    model, spec, pre = prepare_preset("deit_tiny", image_size=SIZE, num_classes=3, seed=0)
    d = tmp_path_factory.mktemp("path") / "art"
    export(model, torch.zeros(1, 3, *SIZE), "onnx", d, spec=spec, preprocessing=pre, dynamic_batch=False)
    return d


def test_folder_and_model_file_open_the_same_artifact(onnx_art, photo_batch):
    model_file = onnx_art / read_manifest(onnx_art).manifest["artifact"]
    x = photo_batch(SIZE, 1).numpy()
    outs = []
    for p in (onnx_art, model_file, str(model_file) + "/"):
        art, runner = open_artifact(p)
        assert art.path == onnx_art
        outs.append(runner.run(x)[0])
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    assert artifact_folder(model_file) == onnx_art


def test_model_file_given_relative_to_the_working_directory(onnx_art, monkeypatch):
    monkeypatch.chdir(onnx_art)
    assert read_manifest("model.onnx").path == Path(".")


def test_other_files_are_refused_naming_the_path(onnx_art, tmp_path):
    (onnx_art / "notes.txt").write_text("not a model\n")
    lone = tmp_path / "lone.onnx"
    shutil.copy(onnx_art / "model.onnx", lone)
    other = tmp_path / "other"
    shutil.copytree(onnx_art, other)
    os.rename(other / "model.onnx", other / "renamed.onnx")  # the manifest still names model.onnx
    cases = {
        onnx_art / "manifest.json": "(it is the manifest",
        onnx_art / "notes.txt": "names 'model.onnx'",
        lone: "(no manifest.json beside it)",
        other / "renamed.onnx": "names 'model.onnx'",
    }
    try:
        for path, phrase in cases.items():
            for fn in (read_manifest, open_artifact):
                with pytest.raises(ArtifactError) as e:
                    fn(path)
                msg = str(e.value)
                assert msg.startswith(f"{path} is a file but not the model file of an artifact"), msg
                assert phrase in msg and "\n" not in msg
    finally:
        (onnx_art / "notes.txt").unlink()


def test_symlinks(onnx_art, tmp_path):
    # A symlink to the folder is the folder; a symlink to the model file stands for the folder it is in (the
    # link's own folder, not the target's), so one from elsewhere has no manifest.json beside it.
    (tmp_path / "dirlink").symlink_to(onnx_art)
    assert read_manifest(tmp_path / "dirlink").path == tmp_path / "dirlink"
    (tmp_path / "filelink.onnx").symlink_to(onnx_art / "model.onnx")
    with pytest.raises(ArtifactError, match="no manifest.json beside it"):
        read_manifest(tmp_path / "filelink.onnx")
    assert read_manifest(tmp_path / "dirlink" / "model.onnx").path == tmp_path / "dirlink"
