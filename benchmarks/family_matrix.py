"""Render the family x target table from what tests/models/test_families.py measured (build/test-reports/family_matrix/).

Run the suite first (`make test`, or `-m slow` for the full-size presets), then `python benchmarks/family_matrix.py`;
writes benchmarks/results/family_matrix.md.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitedge.files import write_text_atomic  # noqa: E402
from vitedge.report import markdown_table  # noqa: E402

COLUMNS = [("family", "family", "{}"), ("config", "config", "{}"), ("input", "input", "{}"),
           ("vs vit-pytorch (max abs)", "oracle", "{:.1e}"), ("TorchScript b1/3/8 (max abs)", "ts", "{:.1e}"),
           ("ONNX b1/3/8 (max abs)", "onnx", "{:.1e}"), ("ONNX exporter", "method", "{}")]


def main() -> int:
    src = ROOT / "build/test-reports/family_matrix"
    rows = []
    for f in sorted(src.glob("*.json")):
        r = json.loads(f.read_text())
        rows.append({"family": r["family"], "config": r["config"], "input": "x".join(map(str, r["size"])),
                     "oracle": r["oracle_max_abs"], "ts": r["torchscript"]["max_abs_b1_3_8"],
                     "onnx": r["onnx"]["max_abs_b1_3_8"],
                     "method": "dynamo" if "dynamo=True" in r["onnx"]["method"] else r["onnx"]["method"]})
    if not rows:
        sys.exit(f"no reports in {src}: run tests/models/test_families.py first")
    out = ROOT / "benchmarks/results/family_matrix.md"
    write_text_atomic(out, "# family x target, as measured by tests/models/test_families.py\n\n" + markdown_table(rows, COLUMNS) + "\n")
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
