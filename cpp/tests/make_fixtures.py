"""Export the tiny artifacts and photos the C++ tests share (ctest fixture "vitedge_artifacts").

make_fixtures.py OUT_DIR

Writes OUT_DIR/torchscript and OUT_DIR/aotinductor (the same tiny seeded ViT, 64x64, 10 labelled classes,
exported with vitedge.export.export, parity-checked there against eager on the bundled photos),
OUT_DIR/photos/ (copies of the bundled scikit-image photos, JPEG and PNG, full size) and OUT_DIR/photos64/*.png (the same,
resized by PIL to exactly 64x64, so C++ only normalises them), and OUT_DIR/notes.txt (a text file).
Both artifacts are signed (OUT_DIR/<target>/model.sig, OpenSSF model-signing) with a throwaway P-256 key made here:
OUT_DIR/keys/key.pem (private) and OUT_DIR/keys/pub.pem (public; the tests pass it as --key / trusted_keys).
The AOTInductor compile takes ~20-60 s; a stamp (torch version + hash of the exporting code) lets a re-run
reuse the artifacts.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import PREPROCESSING, make_keypair, sign_artifact, tiny_vit  # noqa: E402

BACKENDS = ("torchscript", "aotinductor")
LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def stamp() -> str:
    import vitedge
    root = Path(vitedge.__file__).parent
    h = hashlib.sha256(torch.__version__.encode())
    for f in [Path(__file__), Path(__file__).parent / "_common.py", root / "export.py",
              *sorted((root / "targets").glob("*.py")), *sorted((root / "models").glob("*.py"))]:
        h.update(f.read_bytes())
    return h.hexdigest()


def main(out: Path) -> None:
    from PIL import Image

    from vitedge.data import bundled_photo_paths
    from vitedge.export import export
    key = stamp()
    stamp_file = out / "stamp.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()).get("key") == key:
        print(f"fixtures in {out} are current")
        return
    shutil.rmtree(out, ignore_errors=True)
    (out / "photos").mkdir(parents=True)
    (out / "photos64").mkdir()
    for p in bundled_photo_paths():
        shutil.copyfile(p, out / "photos" / Path(p).name)  # the original JPEG / PNG bytes
        img = Image.open(p).convert("RGB")
        img.resize((64, 64), Image.BILINEAR).save(out / "photos64" / f"{Path(p).stem}.png")
    (out / "notes.txt").write_text("not an image\n")
    example = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    private_key, _ = make_keypair(out / "keys")
    for target in BACKENDS:
        art = export(tiny_vit(), example, target, out / target, force=True, preprocessing=dict(PREPROCESSING),
                     labels=LABELS)
        sign_artifact(out / target, private_key)
        print(f"{target}: {art.path} parity {json.dumps({k: v['max_abs'] for k, v in art.manifest['parity'].items() if k.startswith('batch_')})}")
    stamp_file.write_text(json.dumps({"key": key}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
