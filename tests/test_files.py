"""vitedge.files: atomic writes leave either the old file or the whole new one, and no temp files."""
from __future__ import annotations

import json

import pytest

from vitedge.files import write_json_atomic, write_text_atomic


def test_json_is_written_whole_and_no_temp_file_is_left(tmp_path):
    out = write_json_atomic(tmp_path / "sub" / "result.json", {"p50_ms": 1.5, "rows": [1, 2]})
    assert json.loads(out.read_text()) == {"p50_ms": 1.5, "rows": [1, 2]}
    assert out.read_text().endswith("\n")
    assert [p.name for p in out.parent.iterdir()] == ["result.json"]


def test_a_value_json_cannot_encode_leaves_the_old_file(tmp_path):
    path = tmp_path / "result.json"
    write_text_atomic(path, "old\n")
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["result.json"]
    write_json_atomic(path, {"ok": tmp_path}, default=str)
    assert json.loads(path.read_text()) == {"ok": str(tmp_path)}


def test_a_write_that_fails_midway_removes_its_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    write_text_atomic(path, "old\n")

    def fail(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr("vitedge.files.os.fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["result.json"]
