"""CrossFormer (vit-pytorch's ``crossformer.CrossFormer``): cross-scale embedding, long/short distance attention."""
from ..registry import register_family, register_preset

register_family(
    "crossformer", "vitedge.models.crossformer:CrossFormer", upstream=("crossformer", "CrossFormer"),
    size_arg=(None, "none"),
    small_config=dict(dim=(32, 64, 64, 64), depth=(1, 1, 1, 1), global_window_size=(4, 2, 2, 1), local_window_size=2,
                      num_classes=10),
    small_input_size=(64, 64),
)

register_preset(
    "crossformer_t", "crossformer",
    dict(dim=(64, 128, 256, 512), depth=(1, 1, 4, 3), global_window_size=(8, 4, 2, 1), local_window_size=7,
         cross_embed_kernel_sizes=((4, 8, 16, 32), (2, 4), (2, 4), (2, 4)), cross_embed_strides=(4, 2, 2, 2),
         num_classes=1000),
    (224, 224), "CrossFormer, Wang et al. 2021, arXiv 2108.00154, Table 1",
    "Wang et al. CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention. ICLR 2022.", 27.8,
    "the paper's depths (1, 1, 8, 6) count single SDA/LDA blocks; vit-pytorch's depth counts pairs")
