"""ATS ViT (vit-pytorch's ``ats_vit.ViT``): adaptive token sampling, deterministic in eval here."""
from ..registry import register_family, register_preset

register_family(
    "ats", "vitedge.models.ats:ATSViT", upstream=("ats_vit", "ViT"), size_arg=("image_size", "tuple"),
    small_config=dict(image_size=(32, 48), patch_size=(4, 6), num_classes=10, dim=32, depth=3,
                      max_tokens_per_depth=(32, 16, 8), heads=2, mlp_dim=64, dim_head=16),
    small_input_size=(32, 48),
)

register_preset(
    "ats_readme", "ats",
    dict(image_size=256, patch_size=16, num_classes=1000, dim=1024, depth=6,
         max_tokens_per_depth=(256, 128, 64, 32, 16, 8), heads=16, mlp_dim=2048, dropout=0.1, emb_dropout=0.1),
    (256, 256), "ATS, Fayyaz et al. 2022, arXiv 2111.15667 (vit-pytorch README configuration)",
    "Fayyaz et al. Adaptive Token Sampling For Efficient Vision Transformers. ECCV 2022.", None,
    "deterministic fixed-capacity sampling in eval (vitedge.models.ats); the paper gives no preset for this "
    "constructor")
