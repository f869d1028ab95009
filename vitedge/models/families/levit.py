"""LeViT (vit-pytorch's ``levit.LeViT``) and the paper's four sizes."""
from ..registry import register_family, register_preset

register_family(
    "levit", "vitedge.models.levit:LeViT", upstream=("levit", "LeViT"), size_arg=("image_size", "square"),
    small_config=dict(image_size=64, num_classes=10, dim=(16, 24, 32), depth=(1, 2, 1), heads=(2, 3, 4), mlp_mult=2,
                      dim_key=8, dim_value=16),
    small_input_size=(64, 64),
    recipes={"onnx": {"fusions": ()},  # ONNX Runtime: measured, no fusion made a difference
             # ONNX int8: dynamic. Static QDQ (minmax or percentile) failed the export's parity gate on LeViT-192
             # trained on the digits (cosine 0.980 / 0.982 on held-out digits, so `--precision int8` was refused);
             # dynamic passed, lost 0.89 points and ran faster (benchmarks/quantization.py)
             "onnx_int8": {"mode": "dynamic"}},
)

PAPER = "LeViT, Graham et al. 2021, arXiv 2104.01136, Table 2"
CITATION = "Graham et al. LeViT: a Vision Transformer in ConvNet's Clothing for Faster Inference. ICCV 2021."


def _levit(name, dims, depths, heads, dim_key, params):
    register_preset(name, "levit", dict(image_size=224, num_classes=1000, dim=dims, depth=depths, heads=heads,
                                        mlp_mult=2, stages=3, dim_key=dim_key, dim_value=2 * dim_key),
                    (224, 224), PAPER, CITATION, params,
                    note="vit-pytorch's LeViT is a simplification (plain conv stem, one shared value dim, "
                         "no attention-bias resolution change), so its parameter count differs from the paper's",
                    params_comparable=False)


_levit("levit_128s", (128, 256, 384), (2, 3, 4), (4, 6, 8), 16, 7.8)
_levit("levit_128", (128, 256, 384), (4, 4, 4), (4, 8, 12), 16, 9.2)
_levit("levit_192", (192, 288, 384), (4, 4, 4), (3, 5, 6), 32, 11.0)
_levit("levit_256", (256, 384, 512), (4, 4, 4), (4, 6, 8), 32, 19.0)
