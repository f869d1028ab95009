"""CaiT (vit-pytorch's ``cait.CaiT``): class-attention image transformers."""
from ..registry import register_family, register_preset

register_family(
    "cait", "vitedge.models.cait:CaiT", upstream=("cait", "CaiT"), size_arg=("image_size", "tuple"),
    small_config=dict(image_size=32, patch_size=8, num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64, dim_head=8,
                      cls_depth=1),
    small_input_size=(32, 32),
)

PAPER = "CaiT, Touvron et al. 2021, arXiv 2103.17239, Table 1"
CITATION = "Touvron et al. Going deeper with Image Transformers. ICCV 2021."

register_preset(
    "cait_xxs24", "cait",
    dict(image_size=224, patch_size=16, num_classes=1000, dim=192, depth=24, cls_depth=2, heads=4, mlp_dim=768,
         dim_head=48),
    (224, 224), PAPER, CITATION, 12.0)
register_preset(
    "cait_s24", "cait",
    dict(image_size=224, patch_size=16, num_classes=1000, dim=384, depth=24, cls_depth=2, heads=8, mlp_dim=1536,
         dim_head=48),
    (224, 224), PAPER, CITATION, 46.9)
