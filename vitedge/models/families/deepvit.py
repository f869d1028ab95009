"""DeepViT (vit-pytorch's ``deepvit.DeepViT``): re-attention."""
from ..registry import register_family, register_preset

register_family(
    "deepvit", "vitedge.models.deepvit:DeepViT", upstream=("deepvit", "DeepViT"), size_arg=("image_size", "tuple"),
    small_config=dict(image_size=32, patch_size=8, num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64, dim_head=8),
    small_input_size=(32, 32),
)

register_preset(
    "deepvit_s", "deepvit",
    dict(image_size=224, patch_size=16, num_classes=1000, dim=396, depth=16, heads=12, mlp_dim=1188, dim_head=33),
    (224, 224), "DeepViT, Zhou et al. 2021, arXiv 2103.11886",
    "Zhou et al. DeepViT: Towards Deeper Vision Transformer. 2021.", None,
    "width/heads/MLP ratio of the official DeepViT-S; vit-pytorch re-attends in every layer and embeds "
    "patches linearly, so the parameter count differs from the paper's")
