"""Twins-SVT (vit-pytorch's ``twins_svt.TwinsSVT``)."""
from ..registry import register_family, register_preset

register_family(
    "twins_svt", "vitedge.models.twins_svt:TwinsSVT", upstream=("twins_svt", "TwinsSVT"), size_arg=(None, "none"),
    small_config=dict(num_classes=10, s1_emb_dim=8, s1_patch_size=2, s1_local_patch_size=4, s1_global_k=4, s1_depth=1,
                      s2_emb_dim=16, s2_patch_size=2, s2_local_patch_size=2, s2_global_k=2, s2_depth=0,
                      s3_emb_dim=24, s3_patch_size=2, s3_local_patch_size=2, s3_global_k=2, s3_depth=1,
                      s4_emb_dim=32, s4_patch_size=2, s4_local_patch_size=7, s4_global_k=1, s4_depth=1),
    small_input_size=(32, 48),
)

register_preset(
    "twins_svt_s", "twins_svt",
    dict(num_classes=1000, s1_emb_dim=64, s1_patch_size=4, s1_local_patch_size=7, s1_global_k=8, s1_depth=0,
         s2_emb_dim=128, s2_patch_size=2, s2_local_patch_size=7, s2_global_k=4, s2_depth=0,
         s3_emb_dim=256, s3_patch_size=2, s3_local_patch_size=7, s3_global_k=2, s3_depth=4,
         s4_emb_dim=512, s4_patch_size=2, s4_local_patch_size=7, s4_global_k=1, s4_depth=3),
    (224, 224), "Twins, Chu et al. 2021, arXiv 2104.13840, Table 1",
    "Chu et al. Twins: Revisiting the Design of Spatial Attention in Vision Transformers. NeurIPS 2021.", 24.0,
    "vit-pytorch hard-codes 8 heads of 64 per block (the paper: 2/4/8/16 heads of 32), so it is larger",
    params_comparable=False)
