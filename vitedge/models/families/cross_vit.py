"""CrossViT (vit-pytorch's ``cross_vit.CrossViT``): dual-branch cross-attention."""
from ..registry import register_family, register_preset

register_family(
    "cross_vit", "vitedge.models.cross_vit:CrossViT", upstream=("cross_vit", "CrossViT"),
    size_arg=("image_size", "tuple"),
    small_config=dict(image_size=48, num_classes=10, sm_dim=32, lg_dim=48, sm_patch_size=8, sm_enc_depth=1,
                      sm_enc_heads=2, sm_enc_mlp_dim=64, sm_enc_dim_head=16, lg_patch_size=16, lg_enc_depth=2,
                      lg_enc_heads=3, lg_enc_mlp_dim=96, lg_enc_dim_head=16, cross_attn_depth=2, cross_attn_heads=2,
                      cross_attn_dim_head=16, depth=2),
    small_input_size=(48, 48),
)

for n, sm, lg, h, ld, params, ok in [("9", 128, 256, 4, 3, 8.6, True), ("15", 192, 384, 6, 5, 27.4, False)]:
    register_preset(
        f"crossvit_{n}", "cross_vit",
        dict(image_size=240, num_classes=1000, sm_dim=sm, lg_dim=lg, sm_patch_size=12, sm_enc_depth=1,
             sm_enc_heads=h, sm_enc_mlp_dim=3 * sm, sm_enc_dim_head=32, lg_patch_size=16, lg_enc_depth=ld,
             lg_enc_heads=h, lg_enc_mlp_dim=3 * lg, lg_enc_dim_head=64, cross_attn_depth=1, cross_attn_heads=h,
             cross_attn_dim_head=64, depth=3, dropout=0., emb_dropout=0.),
        (240, 240), "CrossViT, Chen et al. 2021, arXiv 2103.14899, Table 1",
        "Chen, Fan, Panda. CrossViT: Cross-Attention Multi-Scale Vision Transformer. ICCV 2021.", params,
        "vit-pytorch uses one image size for both branches: 240 (divisible by 12 and 16), and one "
        "cross_attn_dim_head (64) for both fusion attentions where the paper's small branch uses 32",
        params_comparable=ok)
