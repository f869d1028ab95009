"""Which model families convert to Core ML (coremltools 9, mlprogram), and how: one preset per family.

For each family in the zoo, the smallest preset at its paper's input size (or, with ``--small``, the small
config tests/models/test_families.py uses) is exported with ``vitedge.export.export(..., "coreml")`` as an fp16 model
with a float32 tensor input and a dynamic batch, so the flexible-batch path (``ct.RangeDim``, then enumerated
batches) is exercised; the saved package is checked by ``vitedge.targets.coreml.inspect`` inside the export.
Conversion time is wall-clock on a shared machine: a rough figure, not a benchmark.

    python benchmarks/coreml_families.py [--small] [--families vit,levit]

Writes benchmarks/results/coreml_families{,_small}.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

from vitedge.data import make_preprocessing  # noqa: E402
from vitedge.errors import VitedgeError  # noqa: E402
from vitedge.export import export, prepare_preset  # noqa: E402
from vitedge.machine import machine_info  # noqa: E402
from vitedge.files import write_json_atomic, write_text_atomic  # noqa: E402
from vitedge.models.zoo import FAMILIES, PRESETS, family_class  # noqa: E402
from vitedge.report import markdown_table  # noqa: E402

COLUMNS = [("family", "family", "{}"), ("model", "model", "{}"), ("input", "input", "{}"),
           ("converts", "converts", "{}"), ("batch", "batch", "{}"), ("fp16 ops / fp32 ops", "ops", "{}"),
           ("size (MB)", "size_mb", "{:.2f}"), ("convert (s)", "seconds", "{:.0f}"), ("error", "error", "{}")]


def _model(family: str, small: bool):
    if small:
        from test_families import SMALL
        _, _, kw, size = SMALL[family]
        torch.manual_seed(0)
        return family_class(family)(**kw).eval(), size, "tests/models/test_families.py small config", None
    preset = next(n for n, p in PRESETS.items() if p.family == family)
    model, spec, pre = prepare_preset(preset)
    return model, tuple(pre["size"]), preset, (spec, pre)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="the tests' small configs instead of the presets")
    ap.add_argument("--families", help="comma-separated subset (default: all)")
    args = ap.parse_args(argv)
    families = args.families.split(",") if args.families else list(FAMILIES)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            model, size, name, prepared = _model(family, args.small)
            spec, pre = prepared or (None, make_preprocessing(size))
            row = {"family": family, "model": name, "input": "x".join(map(str, size)),
                   "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
            t = time.perf_counter()
            try:
                art = export(model, torch.zeros(2, 3, *size), "coreml", Path(tmp) / family, spec=spec,
                             preprocessing=pre, precision="fp16", target_options={"input": "tensor"})
                cm = art.manifest["coreml"]
                row.update(converts="yes", batch=cm["batch"], size_mb=art.size_mb,
                           ops=f"{cm['op_dtypes'].get('fp16', 0)} / {cm['op_dtypes'].get('fp32', 0)}",
                           error=("RangeDim failed: " + cm["range_dim_error"]) if "range_dim_error" in cm else "",
                           spec_check=cm["spec_check"], deployment_target=cm["deployment_target"])
            except VitedgeError as e:
                row.update(converts="no", batch="-", size_mb=float("nan"), ops="-", error=str(e)[:300])
            row["seconds"] = time.perf_counter() - t
            print(json.dumps(row), flush=True)
            rows.append(row)
    suffix = "_small" if args.small else ""
    out = ROOT / f"benchmarks/results/coreml_families{suffix}"
    import coremltools
    meta = {"coremltools": coremltools.__version__, "torch": torch.__version__, "precision": "fp16",
            "input": "float32 tensor, dynamic batch", "machine": machine_info(),
            "note": "conversion times measured on a shared 2-core machine with other jobs running"}
    write_json_atomic(out.with_suffix(".json"), {"meta": meta, "rows": rows})
    ok = [r["family"] for r in rows if r["converts"] == "yes"]
    title = "presets at their paper's input size" if not args.small else "the tests' small configs"
    text = (f"# Core ML conversion by family ({title})\n\n"
            f"coremltools {meta['coremltools']}, torch {meta['torch']}; fp16 mlprogram, float32 tensor input, dynamic "
            f"batch (RangeDim first, enumerated batches if that fails); every converted package passed the saved-spec "
            f"check. {len(ok)}/{len(rows)} families convert. Times: a shared, loaded 2-core machine.\n\n"
            + markdown_table(rows, COLUMNS) + "\n")
    write_text_atomic(out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
