"""Export never destroys a user's files (issue 17, "Data loss"): ``-o`` may name a missing path, an empty folder, or
(with ``--force`` / ``force=True``) a previous vitedge artifact; anything else is refused with one line before any
export work starts, and again at swap time, and is left byte-for-byte as it was."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from vitedge.cli import main
from vitedge.errors import ArtifactError
from vitedge.export import export, prepare_preset
from vitedge.manifest import atomic_directory, check_destination, is_artifact_dir, read_manifest, write_manifest
from vitedge.targets import torchscript

NOT_ARTIFACT = "{} exists and is not a vitedge artifact; choose another -o or remove it"
HAS_ARTIFACT = "{} already holds a vitedge artifact; pass --force to replace it"


def cli_export(out, num_classes: int = 2, *extra: str) -> list[str]:
    """Arguments of the smallest CLI export (deit_tiny 32x32, fixed batch 2: one parity run) to ``out``."""
    return ["export", "deit_tiny", "--target", "torchscript", "--image-size", "32", "32", "--batch", "2",
            "--num-classes", str(num_classes), *extra, "-o", str(out)]


def snapshot(root: Path) -> dict:
    """Every entry below ``root`` (symlinks not followed): kind, mode, bytes of files, targets of symlinks."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", st.st_mode, p.read_bytes())
            else:
                out[rel] = ("dir", st.st_mode)
    return out


@pytest.fixture
def user_tree(tmp_path):
    """A user's project: docs/ with files, a regular file, a symlink to docs/, a symlink to a file."""
    proj = tmp_path / "proj"
    (proj / "docs" / "img").mkdir(parents=True)
    (proj / "docs" / "index.md").write_text("# my notes\n")
    (proj / "docs" / "img" / "a.png").write_bytes(bytes(range(256)))
    (proj / "notes.txt").write_text("do not lose me\n")
    (proj / "link").symlink_to("docs")
    (proj / "filelink").symlink_to("notes.txt")
    return proj


def _refuses_via_cli(proj, out_arg, capsys, monkeypatch, *extra):
    monkeypatch.chdir(proj)
    before = snapshot(proj)
    called = []
    monkeypatch.setattr(torchscript, "write", lambda *a, **k: called.append(1))  # no export work may start
    rc = main(cli_export(out_arg, 2, *extra))
    err = capsys.readouterr().err
    assert rc == 1
    assert err == f"vitedge: error: {NOT_ARTIFACT.format(out_arg)}\n", err
    assert called == []
    assert snapshot(proj) == before  # byte for byte, modes and link targets included


@pytest.mark.parametrize("out_arg", ["docs", ".", "notes.txt", "link", "filelink", "docs/index.md"])
def test_cli_never_replaces_what_is_not_an_artifact(user_tree, out_arg, capsys, monkeypatch):
    _refuses_via_cli(user_tree, out_arg, capsys, monkeypatch)


@pytest.mark.parametrize("out_arg", ["docs", ".", "notes.txt", "link"])
def test_force_does_not_replace_what_is_not_an_artifact(user_tree, out_arg, capsys, monkeypatch):
    _refuses_via_cli(user_tree, out_arg, capsys, monkeypatch, "--force")


@pytest.mark.parametrize("name", ["docs", "notes.txt", "link"])
@pytest.mark.parametrize("force", [False, True])
def test_api_never_replaces_what_is_not_an_artifact(user_tree, name, force):
    model, spec, pre = prepare_preset("deit_tiny", image_size=(32, 32), num_classes=2)
    before = snapshot(user_tree)
    out = user_tree / name
    with pytest.raises(ArtifactError) as e:
        export(model, torch.zeros(2, 3, 32, 32), "torchscript", out, spec=spec, preprocessing=pre,
               dynamic_batch=False, force=force)
    assert str(e.value) == NOT_ARTIFACT.format(out)
    assert snapshot(user_tree) == before
    with pytest.raises(ArtifactError, match="is not a vitedge artifact"):
        with atomic_directory(out, force=True) as d:  # the swap itself refuses too
            (d / "x").write_bytes(b"1")
    assert snapshot(user_tree) == before


def test_existing_artifact_is_replaced_only_with_force(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(cli_export("art", 2)) == 0
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert main(cli_export("art", 3)) == 1
    assert capsys.readouterr().err == f"vitedge: error: {HAS_ARTIFACT.format('art')}\n"
    assert snapshot(tmp_path) == before
    assert main(cli_export("art", 3, "--force")) == 0
    assert read_manifest(tmp_path / "art").manifest["model"]["kwargs"]["num_classes"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no temp or backup folder left


def test_api_existing_artifact_needs_force(tmp_path):
    model, spec, pre = prepare_preset("deit_tiny", image_size=(32, 32), num_classes=2)
    out = tmp_path / "a"
    export(model, torch.zeros(2, 3, 32, 32), "torchscript", out, spec=spec, preprocessing=pre, dynamic_batch=False)
    before = snapshot(tmp_path)
    with pytest.raises(ArtifactError) as e:
        export(model, torch.zeros(2, 3, 32, 32), "torchscript", out, spec=spec, preprocessing=pre,
               dynamic_batch=False)
    assert str(e.value) == HAS_ARTIFACT.format(out)
    assert snapshot(tmp_path) == before
    (out / "model.pt").write_bytes(b"edited")  # a damaged artifact is still one: --force may replace it
    export(model, torch.zeros(2, 3, 32, 32), "torchscript", out, spec=spec, preprocessing=pre, dynamic_batch=False,
           force=True)
    assert read_manifest(out).file.stat().st_size > 1000


def test_missing_path_and_empty_folder_are_written(tmp_path):
    model, spec, pre = prepare_preset("deit_tiny", image_size=(32, 32), num_classes=2)
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "deeper"):
        export(model, torch.zeros(2, 3, 32, 32), "torchscript", out, spec=spec, preprocessing=pre,
               dynamic_batch=False)
        assert is_artifact_dir(out)


def test_folder_filled_during_the_export_is_not_replaced(tmp_path, monkeypatch):
    """The destination is checked again under the lock at swap time: files a user put there meanwhile stay."""
    model, spec, pre = prepare_preset("deit_tiny", image_size=(32, 32), num_classes=2)
    out = tmp_path / "out"
    real_write = torchscript.write

    def write_then_user_saves(model, example, directory, options):
        out.mkdir()
        (out / "thesis.tex").write_text("years of work\n")
        return real_write(model, example, directory, options)

    monkeypatch.setattr(torchscript, "write", write_then_user_saves)
    with pytest.raises(ArtifactError) as e:
        export(model, torch.zeros(2, 3, 32, 32), "torchscript", out, spec=spec, preprocessing=pre,
               dynamic_batch=False, force=True)
    assert str(e.value) == NOT_ARTIFACT.format(out)
    assert (out / "thesis.tex").read_text() == "years of work\n" and sorted(os.listdir(out)) == ["thesis.tex"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the temp dir is gone


def test_what_counts_as_an_artifact(tmp_path):
    """A folder is an artifact when its manifest.json is a JSON object with an integer schema_version and a
    target string; hashes are not checked. Anything else is not one."""
    d = tmp_path / "d"
    d.mkdir()
    check_destination(d)  # empty: fine
    for text in ("{", "[]", '{"schema_version": "1", "target": "onnx"}', '{"schema_version": 1}',
                 '{"schema_version": true, "target": "onnx"}'):
        (d / "manifest.json").write_text(text)
        assert not is_artifact_dir(d), text
        with pytest.raises(ArtifactError, match="is not a vitedge artifact"):
            check_destination(d, force=True)
    (d / "manifest.json").unlink()
    os.mkfifo(d / "manifest.json")  # must not hang
    assert not is_artifact_dir(d)
    (d / "manifest.json").unlink()
    (d / "manifest.json").write_text('{"schema_version": 1, "target": "onnx", "files": {"x": 1}}')
    assert is_artifact_dir(d)
    with pytest.raises(ArtifactError, match="pass --force"):
        check_destination(d)
    check_destination(d, force=True)
    (tmp_path / "m.json").write_text('{"schema_version": 1, "target": "onnx"}')
    (d / "manifest.json").unlink()
    (d / "manifest.json").symlink_to(tmp_path / "m.json")  # a symlinked manifest is not ours
    assert not is_artifact_dir(d)


def test_concurrent_exports_without_force_the_second_refuses(tmp_path):
    """Two exports into one new folder without --force: the later swap finds the first one's artifact."""
    final = tmp_path / "a"
    m = {"schema_version": 1, "artifact": "model.bin", "target": "onnx",
         "inputs": [{"name": "x", "shape": [-1, 3, 8, 8], "dtype": "float32"}],
         "outputs": [{"name": "y", "shape": [-1, 2], "dtype": "float32"}],
         "preprocessing": {"size": [8, 8], "scale": 1.0, "mean": [0.0], "std": [1.0]}}
    with pytest.raises(ArtifactError) as e:
        with atomic_directory(final) as d1:  # started while final did not exist ...
            (d1 / "model.bin").write_bytes(b"first")
            write_manifest(d1, m)
            with atomic_directory(final) as d2:  # ... and so did this one, which swaps first
                (d2 / "model.bin").write_bytes(b"second")
                write_manifest(d2, m)
    assert str(e.value) == HAS_ARTIFACT.format(final)
    assert (final / "model.bin").read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
