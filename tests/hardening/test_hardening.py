"""Hostile and malformed inputs (issue 9): every file here is made by the test; each ends in one readable error
(a VitedgeError, or one ``vitedge: error:`` line and a non-zero exit from the CLI), nothing is executed, and nothing
is written outside the output folder."""
from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitedge.checkpoint import apply_checkpoint, load_state_dict
from vitedge.cli import main
from vitedge.data import bundled_photo_paths, load_rgb
from vitedge.errors import ArtifactError, CheckpointError, ImageError, UsageError
from vitedge.export import export, prepare_preset
from vitedge.manifest import read_manifest, write_manifest
from vitedge.runtime import check_input
from vitedge.safety import check_onnx_external_data, check_tree, safe_extract, safe_zip_members
from helpers import one_line_error

SIZE = (32, 32)



@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    """deit_tiny at 32x32 with 2 classes, exported to TorchScript and ONNX."""
    root = tmp_path_factory.mktemp("hard")
    model, spec, pre = prepare_preset("deit_tiny", image_size=SIZE, num_classes=2)
    return {t: export(model, torch.zeros(2, 3, *SIZE), t, root / t, spec=spec, preprocessing=pre).path
            for t in ("torchscript", "onnx")}


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def edit_manifest(art: Path, fn, rehash: bool = False) -> None:
    """Apply ``fn`` to the manifest; with ``rehash`` recompute ``files`` as an attacker who rewrites it would."""
    m = json.loads((art / "manifest.json").read_text())
    fn(m)
    if rehash:
        (art / "manifest.json").unlink()
        m.pop("files", None)
        write_manifest(art, m)
    else:
        (art / "manifest.json").write_text(json.dumps(m))


# ---------------------------------------------------------------------------------------------------------
# 1. Integrity

@pytest.mark.parametrize("command", ["validate", "bench"])
def test_modified_file_is_named(arts, tmp_path, capsys, command):
    art = copy(arts["onnx"], tmp_path / "a")
    data = bytearray((art / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one bit pattern changed
    (art / "model.onnx").write_bytes(bytes(data))
    assert main([command, str(art), "--iters", "1"] if command == "bench" else [command, str(art)]) == 1
    one_line_error(capsys, "model.onnx", "does not match the SHA-256")


def test_stripped_files_list_does_not_skip_verification(arts, tmp_path, capsys):
    art = copy(arts["torchscript"], tmp_path / "a")
    edit_manifest(art, lambda m: m.update(files={}))
    assert main(["validate", str(art)]) == 1
    one_line_error(capsys, "does not cover its artifact 'model.pt'")
    assert main(["validate", str(art), "--no-verify", "--trust-code"]) == 0  # the explicit opt-out still works
    capsys.readouterr()


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/hostname", "sub/../../outside.bin", "C:evil"])
@pytest.mark.parametrize("verify", [True, False])
def test_manifest_names_escaping_the_folder(arts, tmp_path, capsys, name, verify):
    art = copy(arts["onnx"], tmp_path / "a")
    edit_manifest(art, lambda m: m["files"].update({name: {"sha256": "0" * 64, "bytes": 1}}))
    assert main(["validate", str(art)] + ([] if verify else ["--no-verify"])) == 1
    one_line_error(capsys, repr(name))
    art2 = copy(arts["onnx"], tmp_path / "b")
    edit_manifest(art2, lambda m: m.update(artifact=name))
    with pytest.raises(ArtifactError, match="absolute|escapes|backslash"):
        read_manifest(art2, verify=verify)


def test_symlink_out_of_the_artifact_is_refused(arts, tmp_path, capsys):
    outside = tmp_path / "secret.onnx"
    shutil.copy(arts["onnx"] / "model.onnx", outside)
    art = copy(arts["onnx"], tmp_path / "a")
    (art / "model.onnx").unlink()
    (art / "model.onnx").symlink_to(outside)  # same bytes, so the SHA-256 in the manifest still matches
    for extra in ([], ["--no-verify"]):
        assert main(["validate", str(art), *extra]) == 1
        one_line_error(capsys, "'model.onnx'", "resolves outside")


def test_unlisted_file_inside_a_directory_artifact(tmp_path):
    art = tmp_path / "a"
    pkg = art / "model.mlpackage" / "Data"
    pkg.mkdir(parents=True)
    (pkg / "weights.bin").write_bytes(b"\x00" * 64)
    base = json.loads(json.dumps(MINIMAL))
    base.update(artifact="model.mlpackage", target="coreml")
    write_manifest(art, base)
    assert set(read_manifest(art).manifest["files"]) == {"model.mlpackage/Data/weights.bin"}
    (pkg / "extra.bin").write_bytes(b"\x01")
    with pytest.raises(ArtifactError, match="extra.bin is not listed"):
        read_manifest(art)
    (pkg / "extra.bin").unlink()
    (pkg / "link").symlink_to(tmp_path)  # a symlink out of a directory artifact
    with pytest.raises(ArtifactError, match="symlink pointing outside"):
        read_manifest(art)


MINIMAL = {"schema_version": 1, "artifact": "model.bin", "target": "onnx", "files": {},
           "inputs": [{"name": "pixel_values", "shape": [-1, 3, 32, 32], "dtype": "float32"}],
           "outputs": [{"name": "logits", "shape": [-1, 2], "dtype": "float32"}],
           "preprocessing": {"size": [32, 32], "scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}


@pytest.mark.parametrize("mutate,needle", [
    (lambda m: m["preprocessing"].update(std=[0.2, 0.0, 0.2]), "divide by zero"),
    (lambda m: m["preprocessing"].update(size=[100000, 100000]), "preprocessing size"),
    (lambda m: m["inputs"][0].update(shape=[-1, 3, "32", 32]), "tensor spec"),
    (lambda m: m.update(files=["model.bin"]), "'files' is not a mapping"),
    (lambda m: m.update(schema_version=True), "no integer schema_version"),
    (lambda m: m.update(schema_version=0), "schema version 0"),
    (lambda m: m.pop("preprocessing"), "missing 'preprocessing'"),
    (lambda m: m.update(artifact="a" * 300), "longer than a file name"),  # found by benchmarks/fuzz_python.py
    (lambda m: m["inputs"][0].update(dtype="gloat32"), "a dtype"),           # found by benchmarks/fuzz_python.py
])
def test_ill_typed_manifest(tmp_path, mutate, needle):
    (tmp_path / "model.bin").write_bytes(b"x")
    m = json.loads(json.dumps(MINIMAL))
    mutate(m)
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=needle):
        read_manifest(tmp_path, verify=False)


def test_oversized_and_deeply_nested_manifests(tmp_path):
    (tmp_path / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ArtifactError, match="corrupt manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"schema_version": 1, "x": ' + "9" * 5000 + "}")
    with pytest.raises(ArtifactError, match="corrupt manifest"):
        read_manifest(tmp_path)
    with open(tmp_path / "manifest.json", "wb") as f:
        f.truncate(17 * 2**20)  # sparse 17 MiB file
    with pytest.raises(ArtifactError, match="larger than"):
        read_manifest(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# 2a. Checkpoints

class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this calls Path.touch(marker): code execution
        return (Path.touch, (Path(self.marker),))


def test_pickle_payload_is_refused_and_not_run_api(tmp_path):
    marker = tmp_path / "pwned"
    ck = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _Payload(str(marker))}, ck)
    model, _, _ = prepare_preset("deit_tiny", image_size=SIZE, num_classes=2)
    for call in (lambda: load_state_dict(ck), lambda: apply_checkpoint(model, ck)):
        with pytest.raises(CheckpointError, match="cannot load checkpoint"):
            call()
        assert not marker.exists(), "the pickle payload ran"
    # Positive control: the file really is hostile (an unrestricted torch.load runs the payload).
    control = tmp_path / "control"
    torch.save(_Payload(str(control)), tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists()


def _safetensors_bytes(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


@pytest.mark.parametrize("kind", ["truncated", "offsets_past_end", "huge_header_length", "wrong_dtype_size",
                                  "not_json"])
def test_malformed_safetensors(tmp_path, kind, capsys):
    from vitedge.checkpoint import save_state_dict
    model, _, _ = prepare_preset("deit_tiny", image_size=SIZE, num_classes=2)
    good = save_state_dict(model, tmp_path / "good.safetensors").read_bytes()
    bad = tmp_path / "bad.safetensors"
    if kind == "truncated":
        bad.write_bytes(good[: len(good) // 2])
    elif kind == "offsets_past_end":
        bad.write_bytes(_safetensors_bytes({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}},
                                           b"\x00" * 16))
    elif kind == "huge_header_length":
        bad.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    elif kind == "wrong_dtype_size":
        bad.write_bytes(_safetensors_bytes({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
                                           b"\x00" * 8))
    else:
        bad.write_bytes(struct.pack("<Q", 6) + b"nope!!")
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_state_dict(bad)
    out = tmp_path / "x"
    assert main(["export", "deit_tiny", "--target", "torchscript", "--image-size", "32", "32", "--num-classes", "2",
                 "--checkpoint", str(bad), "-o", str(out)]) == 1
    one_line_error(capsys, "cannot load checkpoint")
    assert not out.exists()


def test_checkpoint_zip_with_escaping_member(tmp_path):
    ck = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(2)}, ck)
    with zipfile.ZipFile(ck, "a") as zf:
        zf.writestr("../../escaped.txt", b"x")
    with pytest.raises(CheckpointError, match=r"escapes its folder"):
        load_state_dict(ck)
    assert not (tmp_path.parent / "escaped.txt").exists()


# ---------------------------------------------------------------------------------------------------------
# 2b. ONNX external data

def _externalize(art: Path, location: str | None = None, target: Path | None = None) -> None:
    """Move the ONNX file's weights to external data ``weights.bin``; then optionally point every external
    tensor at ``location`` (copying the weights to ``target`` first). Re-hashes the manifest as an attacker would."""
    import onnx
    proto = onnx.load(str(art / "model.onnx"))
    onnx.save_model(proto, str(art / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=1024)
    if location is not None:
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(art / "weights.bin", target)
        proto = onnx.load(str(art / "model.onnx"), load_external_data=False)
        for t in proto.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = location
        onnx.save_model(proto, str(art / "model.onnx"))
    edit_manifest(art, lambda m: None, rehash=True)


def test_external_data_inside_the_folder_loads(arts, tmp_path, capsys):
    art = copy(arts["onnx"], tmp_path / "a")
    _externalize(art)
    assert check_onnx_external_data(art / "model.onnx") == ["weights.bin"]
    assert "weights.bin" in read_manifest(art).manifest["files"]
    assert main(["validate", str(art)]) == 0
    capsys.readouterr()
    # the same weights file, but not covered by the manifest: refused (its bytes would skip the SHA-256 check)
    edit_manifest(art, lambda m: m["files"].pop("weights.bin"))
    assert main(["validate", str(art)]) == 1
    one_line_error(capsys, "weights.bin", "does not list")


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_external_data_escaping_the_folder_is_refused_before_ort(arts, tmp_path, capsys, monkeypatch, how):
    import onnxruntime
    art = copy(arts["onnx"], tmp_path / "a")
    outside = tmp_path / "elsewhere" / "w.bin"
    if how == "dotdot":
        _externalize(art, "../elsewhere/w.bin", outside)
    elif how == "absolute":
        _externalize(art, str(outside), outside)
    else:
        _externalize(art, "w.bin", outside)
        (art / "w.bin").symlink_to(outside)  # not listed in the manifest: read_manifest has no reason to look
    opened = []
    real = onnxruntime.InferenceSession
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: opened.append(a) or real(*a, **k))
    for extra in ([], ["--no-verify"]):
        assert main(["validate", str(art), *extra]) == 1
        one_line_error(capsys, "external data location")
    assert opened == [], "ONNX Runtime opened the file"


# ---------------------------------------------------------------------------------------------------------
# 2c. Archives

def _zip(members, *, overlap: bool = False) -> bytes:
    """A zip built by hand: ``members`` = [(name, data, external_attr, flag_bits)] stored uncompressed. With
    ``overlap``, the last member's central record points inside the first member's data (Fifield's bomb shape)."""
    local, central, offsets = b"", b"", []
    for name, data, attr, flags in members:
        n = name.encode()
        offsets.append(len(local))
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, flags, 0, 0, 0, zlib.crc32(data), len(data), len(data),
                             len(n), 0) + n + data
    for i, (name, data, attr, flags) in enumerate(members):
        n = name.encode()
        off = offsets[i] if not (overlap and i == len(members) - 1) else offsets[0] + 30 + len(members[0][0])
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 0x031E, 20, flags, 0, 0, 0, zlib.crc32(data), len(data),
                               len(data), len(n), 0, 0, 0, 0, attr, off) + n
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(local), 0)
    return local + central + eocd


def _inner_member(name: str, data: bytes) -> bytes:
    n = name.encode()
    return struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, zlib.crc32(data), len(data), len(data), len(n),
                       0) + n + data


REG = (stat.S_IFREG | 0o644) << 16


@pytest.mark.parametrize("members,needle", [
    ([("../evil.txt", b"x", REG, 0)], "escapes its folder"),
    ([("a/../../evil.txt", b"x", REG, 0)], "escapes its folder"),
    ([("/etc/evil.txt", b"x", REG, 0)], "absolute path"),
    ([("a\\..\\evil.txt", b"x", REG, 0)], "backslash"),
    ([("link", b"/etc/passwd", (stat.S_IFLNK | 0o777) << 16, 0)], "is a symlink"),
    ([("secret", b"x", REG, 1)], "is encrypted"),
    ([("a", b"1", REG, 0), ("a", b"2", REG, 0)], "appears twice"),
])
def test_zip_slip_and_odd_members(tmp_path, members, needle):
    p = tmp_path / "x.zip"
    p.write_bytes(_zip(members))
    with pytest.raises(ArtifactError, match=needle):
        safe_zip_members(p)
    with pytest.raises(ArtifactError, match=needle):
        safe_extract(p, tmp_path / "out")
    assert not list(tmp_path.glob("**/evil.txt")) and not (tmp_path / "out" / "link").exists()


def test_zip_bombs(tmp_path):
    ratio = tmp_path / "ratio.zip"
    with zipfile.ZipFile(ratio, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\x00" * (16 << 20))  # 16 MiB of zeros deflate ~1000-fold
    with pytest.raises(ArtifactError, match="expands .*-fold"):
        safe_zip_members(ratio)
    stored = tmp_path / "total.zip"
    with zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as zf:
        for i in range(3):
            zf.writestr(f"part{i}.bin", os.urandom(1 << 20))
    assert len(safe_zip_members(stored)) == 3
    with pytest.raises(ArtifactError, match="expands to more than"):
        safe_zip_members(stored, max_total_bytes=2 << 20)
    with pytest.raises(ArtifactError, match="more than the limit of 2"):
        safe_zip_members(stored, max_entries=2)
    overlap = tmp_path / "overlap.zip"
    inner = _inner_member("b", b"kernel")
    overlap.write_bytes(_zip([("a", inner, REG, 0), ("b", b"kernel", REG, 0)], overlap=True))
    with pytest.raises(ArtifactError, match="overlap"):
        safe_zip_members(overlap)


def test_safe_extract_writes_only_inside(tmp_path):
    p = tmp_path / "ok.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("d/a.txt", b"hello")
        zf.writestr("b.txt", b"world")
    got = safe_extract(p, tmp_path / "out")
    assert sorted(x.relative_to(tmp_path / "out").as_posix() for x in got) == ["b.txt", "d/a.txt"]
    assert (tmp_path / "out" / "d" / "a.txt").read_bytes() == b"hello"


def test_torchscript_file_with_escaping_member_is_refused_before_libtorch(arts, tmp_path, capsys, monkeypatch):
    art = copy(arts["torchscript"], tmp_path / "a")
    with zipfile.ZipFile(art / "model.pt", "a") as zf:
        zf.writestr("../../pwned.txt", b"x")
    edit_manifest(art, lambda m: None, rehash=True)
    loaded = []
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loaded.append(a))
    assert main(["validate", str(art), "--trust-code"]) == 1  # even when the code is trusted, the zip is checked
    one_line_error(capsys, "model.pt", "escapes its folder")
    assert loaded == [] and not (tmp_path / "pwned.txt").exists()


def test_aotinductor_package_is_checked_before_loading(tmp_path, monkeypatch):
    aoti = pytest.importorskip("vitedge.targets.aotinductor")
    from vitedge.manifest import Artifact
    (tmp_path / "model.pt2").write_bytes(_zip([("../../evil.so", b"\x7fELF", REG, 0)]))
    called = []
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda *a, **k: called.append(a))
    with pytest.raises(ArtifactError, match="escapes its folder"):
        aoti.load(Artifact(tmp_path, {"artifact": "model.pt2", "files": {}}))
    assert called == []


def test_coreml_package_is_checked_before_loading(tmp_path):
    coreml = pytest.importorskip("vitedge.targets.coreml")
    from vitedge.manifest import Artifact
    pkg = tmp_path / "model.mlpackage"
    pkg.mkdir()
    (pkg / "Manifest.json").write_text("{}")
    (tmp_path / "secret").write_text("s")
    (pkg / "Data").symlink_to(tmp_path)  # the package's Data folder is the folder around it
    with pytest.raises(ArtifactError, match="symlink pointing outside"):
        coreml.load(Artifact(tmp_path, {"artifact": "model.mlpackage", "files": {}}))


def test_directory_artifact_walker(tmp_path):
    pkg = tmp_path / "model.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Data" / "w.bin").write_bytes(b"1")
    (pkg / "Manifest.json").write_text("{}")
    (pkg / "inner").symlink_to(pkg / "Data" / "w.bin")  # a symlink that stays inside is fine
    assert check_tree(pkg) == ["Data/w.bin", "Manifest.json", "inner"]
    (tmp_path / "secret").write_text("s")
    (pkg / "Data" / "out").symlink_to(tmp_path / "secret")
    with pytest.raises(ArtifactError, match="Data/out is a symlink pointing outside"):
        check_tree(pkg)
    (pkg / "Data" / "out").unlink()
    (pkg / "Data" / "dangling").symlink_to(tmp_path / "nothing")
    with pytest.raises(ArtifactError, match="pointing outside"):
        check_tree(pkg)
    (pkg / "Data" / "dangling").unlink()
    os.mkfifo(pkg / "fifo")
    with pytest.raises(ArtifactError, match="not a regular file"):
        check_tree(pkg)
    (pkg / "fifo").unlink()
    with pytest.raises(ArtifactError, match="more than 2 entries"):
        check_tree(pkg, max_entries=2)


# ---------------------------------------------------------------------------------------------------------
# 2d. Images (derived from a real bundled photo)

@pytest.fixture(scope="module")
def chelsea():
    return Image.open([p for p in bundled_photo_paths() if p.name == "chelsea.png"][0]).convert("RGB")


def _png_header(w: int, h: int) -> bytes:
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_bad_images_are_refused(tmp_path, chelsea):
    chelsea.save(tmp_path / "cat.jpg", quality=90)
    data = (tmp_path / "cat.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    (tmp_path / "postscript.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    for name, needle in (("truncated.jpg", "truncated|Truncated"), ("bomb.png", "exceeds"),
                         ("postscript.jpg", "cannot identify|cannot decode")):
        with pytest.raises(ImageError, match=needle):
            load_rgb(tmp_path / name)


def test_bomb_image_via_cli(tmp_path, capsys, arts):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "huge.png").write_bytes(_png_header(100_000, 100_000))
    assert main(["validate", str(arts["torchscript"]), "--images", str(folder), "--trust-code"]) == 1
    one_line_error(capsys, "huge.png", "decompression bomb")


def test_image_modes_are_handled(tmp_path, chelsea):
    ref = np.asarray(chelsea).astype(np.int16)
    grey = np.asarray(chelsea.convert("L")).astype(np.int16)
    cases = {
        "grey.png": (chelsea.convert("L"), np.repeat(grey[..., None], 3, 2), 0),
        "grey16.png": (Image.fromarray((grey.astype(np.uint16) * 257)), np.repeat(grey[..., None], 3, 2), 1),
        "rgba.png": (chelsea.convert("RGBA"), ref, 0),
        "cmyk.tif": (chelsea.convert("CMYK"), ref, 2),
        "palette.png": (chelsea.convert("P", palette=Image.Palette.ADAPTIVE), ref, None),
    }
    for name, (im, want, tol) in cases.items():
        im.save(tmp_path / name)
        got = load_rgb(tmp_path / name)
        assert got.mode == "RGB" and got.size == chelsea.size, name
        diff = np.abs(np.asarray(got).astype(np.int16) - want)
        if tol is None:  # 256-colour quantisation: close on average
            assert diff.mean() < 4, (name, diff.mean())
        else:
            assert diff.max() <= tol, (name, diff.max())
    # 16-bit RGB PNG written by hand (Pillow cannot write it): Pillow keeps the top 8 bits.
    a16 = (np.asarray(chelsea).astype(np.uint16) * 257).astype(">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in a16)
    h, w = a16.shape[:2]

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    (tmp_path / "rgb16.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0,
                                         0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "rgb16.png")), np.asarray(chelsea))


def test_exif_rotation_is_applied(tmp_path, chelsea):
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was rotated; display rotated 90 degrees clockwise
    chelsea.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    got = load_rgb(tmp_path / "rotated.jpg")
    assert got.size == (chelsea.height, chelsea.width)
    want = np.asarray(chelsea.transpose(Image.Transpose.ROTATE_270)).astype(np.int16)
    assert np.abs(np.asarray(got).astype(np.int16) - want).mean() < 3


# ---------------------------------------------------------------------------------------------------------
# 2e. Inputs to validate / bench: wrong shapes, dtypes, NaN/Inf

@pytest.mark.parametrize("x,needle", [
    (np.zeros((1, 3, 32, 32), np.float64), "dtype float64"),
    (np.zeros((1, 3, 32, 32), np.int32), "dtype int32"),
    (np.zeros((3, 32, 32), np.float32), "does not fit"),
    (np.zeros((1, 3, 64, 64), np.float32), "does not fit"),
    (np.full((1, 3, 32, 32), np.nan, np.float32), "NaN/Inf"),
    (np.where(np.eye(32, dtype=bool), np.inf, 0).astype(np.float32)[None, None].repeat(3, 1), "96 NaN/Inf"),
    ([[0.0]], "numpy array"),
])
def test_bad_inputs_are_refused(arts, x, needle):
    with pytest.raises(UsageError, match=needle):
        check_input(read_manifest(arts["onnx"]), x)


def test_nan_outputs_fail_validation(arts):
    from vitedge.validate import validate

    class NaNModel(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 2), float("nan"))
    r = validate(arts["onnx"], model=NaNModel())
    assert not r["passed"]
    assert any("eager reference output holds" in f and "NaN/Inf" in f for f in r["failures"]), r["failures"]


def test_nan_preprocessing_is_refused_before_running(arts, tmp_path, capsys):
    art = copy(arts["onnx"], tmp_path / "a")
    edit_manifest(art, lambda m: m["preprocessing"].update(std=[0, 0, 0]), rehash=True)
    assert main(["bench", str(art), "--iters", "1"]) == 1
    one_line_error(capsys, "divide by zero")
