"""T2T-ViT (vit-pytorch's ``t2t.T2TViT``): tokens-to-token."""
from ..registry import register_family, register_preset

register_family(
    "t2t", "vitedge.models.t2t:T2TViT", upstream=("t2t", "T2TViT"), size_arg=("image_size", "tuple"),
    small_config=dict(image_size=32, num_classes=10, dim=32, depth=2, heads=2, mlp_dim=64, dim_head=16,
                      t2t_layers=((3, 2), (3, 2))),
    small_input_size=(32, 32),
    # ONNX int8: dynamic, measured on T2T-ViT-14 trained on the digits (32x32, 2 threads, interleaved): 0.55x fp32
    # at batch 1 and 0.51x at batch 8, where static QDQ ran 0.87x and 1.13x (benchmarks/quantization.py)
    recipes={"onnx_int8": {"mode": "dynamic"}},
)

register_preset(
    "t2t_vit_14", "t2t",
    dict(image_size=224, num_classes=1000, dim=384, depth=14, heads=6, mlp_dim=1152, dim_head=64,
         t2t_layers=((7, 4), (3, 2), (3, 2))),
    (224, 224), "T2T-ViT, Yuan et al. 2021, arXiv 2101.11986, Table 1",
    "Yuan et al. Tokens-to-Token ViT: Training Vision Transformers from Scratch on ImageNet. ICCV 2021.", 21.5,
    "backbone as the paper's; vit-pytorch's T2T module keeps the full unfolded widths (147, 1323) and a "
    "learnable position embedding instead of the paper's 64-wide Performer tokens, so it is larger",
    params_comparable=False)
