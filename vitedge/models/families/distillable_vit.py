"""DistillableViT (vit-pytorch's ``distill.DistillableViT``): DeiT with a distillation token."""
from ..registry import register_family, register_preset
from .vit import DEIT

register_family(
    "distillable_vit", "vitedge.models.distill:DistillableViT", upstream=("distill", "DistillableViT"),
    size_arg=("image_size", "tuple"),
    small_config=dict(image_size=32, patch_size=8, num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64, dim_head=8),
    small_input_size=(32, 32),
)

register_preset(
    "deit_tiny_distilled", "distillable_vit",
    dict(image_size=224, patch_size=16, num_classes=1000, dim=192, depth=12, heads=3, mlp_dim=768, dim_head=64),
    (224, 224), "DeiT, Touvron et al. 2021, arXiv 2012.12877, Table 1 (distillation token)", DEIT, None,
    "DeiT-Ti with a distillation token; to_vit() gives the plain ViT")
