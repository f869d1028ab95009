"""PiT (vit-pytorch's ``pit.PiT``): pooling-based vision transformers."""
from ..registry import register_family, register_preset

register_family(
    "pit", "vitedge.models.pit:PiT", upstream=("pit", "PiT"), size_arg=("image_size", "tuple"),
    small_config=dict(image_size=64, patch_size=8, num_classes=10, dim=16, depth=(1, 2, 1), heads=(2, 2, 4),
                      mlp_dim=32, dim_head=8),
    small_input_size=(64, 64),
)

for n, d, h, dh, params in [("ti", 64, (2, 4, 8), 32, 4.9), ("xs", 96, (2, 4, 8), 48, 10.6),
                            ("s", 144, (3, 6, 12), 48, 23.5)]:
    register_preset(
        f"pit_{n}", "pit",
        dict(image_size=224, patch_size=16, num_classes=1000, dim=d, depth=(2, 6, 4), heads=h, mlp_dim=12 * d,
             dim_head=dh),
        (224, 224), "PiT, Heo et al. 2021, arXiv 2103.16302, Table 2",
        "Heo et al. Rethinking Spatial Dimensions of Vision Transformers. ICCV 2021.", params,
        "vit-pytorch shares one mlp_dim across stages; 12 x dim matches the paper's parameter count "
        "(its FLOPs are ~20% above the paper's; 8 x dim would match FLOPs instead)")
