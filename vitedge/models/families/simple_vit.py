"""SimpleViT (vit-pytorch's ``simple_vit.SimpleViT``): "Better plain ViT baselines"."""
from ..registry import register_family, register_preset

register_family(
    "simple_vit", "vitedge.models.simple_vit:SimpleViT", upstream=("simple_vit", "SimpleViT"),
    size_arg=("image_size", "tuple"),
    small_config=dict(image_size=32, patch_size=8, num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64, dim_head=8),
    small_input_size=(32, 32),
)

PAPER = "Better plain ViT baselines, Beyer et al. 2022, arXiv 2205.01580"
CITATION = "Beyer, Zhai, Kolesnikov. Better plain ViT baselines for ImageNet-1k. 2022."

register_preset(
    "simple_vit_s16", "simple_vit",
    dict(image_size=224, patch_size=16, num_classes=1000, dim=384, depth=12, heads=6, mlp_dim=1536, dim_head=64),
    (224, 224), PAPER, CITATION, note="ViT-S/16 body; the paper states no parameter count")
register_preset(
    "simple_vit_b16", "simple_vit",
    dict(image_size=224, patch_size=16, num_classes=1000, dim=768, depth=12, heads=12, mlp_dim=3072, dim_head=64),
    (224, 224), PAPER, CITATION, note="ViT-B/16 body; the paper states no parameter count")
