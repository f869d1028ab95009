"""RegionViT (vit-pytorch's ``regionvit.RegionViT``): regional-to-local attention."""
from ..registry import register_family, register_preset

register_family(
    "regionvit", "vitedge.models.regionvit:RegionViT", upstream=("regionvit", "RegionViT"), size_arg=(None, "none"),
    small_config=dict(dim=(16, 32, 32, 32), depth=(1, 1, 1, 1), window_size=2, num_classes=10),
    small_input_size=(64, 128),
    # ONNX int8: dynamic, measured on RegionViT-Ti trained on the digits (56x56): top-1 drop 0.22 points at 0.60x
    # fp32 (batch 1), where static QDQ lost 1.11 points (minmax) or 0.89 (percentile) at 0.58-0.59x
    # (benchmarks/quantization.py)
    recipes={"onnx_int8": {"mode": "dynamic"}},
)

register_preset(
    "regionvit_ti", "regionvit",
    dict(dim=(64, 128, 256, 512), depth=(2, 2, 8, 2), window_size=7, num_classes=1000, tokenize_local_3_conv=True,
         local_patch_size=4, use_peg=False),
    (224, 224), "RegionViT, Chen et al. 2021, arXiv 2106.02689, Table 2",
    "Chen, Panda, Fan. RegionViT: Regional-to-Local Attention for Vision Transformers. ICLR 2022.", 13.8,
    "vit-pytorch fixes attention at 4 heads of 32 (the paper: 2/4/8/16 heads), so it is smaller",
    params_comparable=False)
