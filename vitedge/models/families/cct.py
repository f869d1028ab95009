"""CCT (vit-pytorch's ``cct.CCT``): compact convolutional transformers, the paper's and vit-pytorch's cct_N."""
from ..registry import register_family, register_preset

register_family(
    "cct", "vitedge.models.cct:CCT", upstream=("cct", "CCT"), size_arg=("img_size", "tuple"),
    small_config=dict(img_size=(32, 48), embedding_dim=32, num_layers=2, num_heads=4, mlp_ratio=2, num_classes=7,
                      kernel_size=3, stride=1, padding=1, positional_embedding="learnable"),
    small_input_size=(32, 48),
)

CITATION = "Hassani et al. Escaping the Big Data Paradigm with Compact Transformers. 2021."

register_preset(
    "cct_7_3x1_32", "cct",
    dict(img_size=32, embedding_dim=256, num_layers=7, num_heads=4, mlp_ratio=2, kernel_size=3, stride=1, padding=1,
         n_conv_layers=1, num_classes=10, positional_embedding="learnable"),
    (32, 32), "CCT, Hassani et al. 2021, arXiv 2104.05704, Table 2 (CIFAR-10)", CITATION, 3.76)
register_preset(
    "cct_14_7x2_224", "cct",
    dict(img_size=224, embedding_dim=384, num_layers=14, num_heads=6, mlp_ratio=3, kernel_size=7, stride=2, padding=3,
         n_conv_layers=2, num_classes=1000, positional_embedding="learnable"),
    (224, 224), "CCT, Hassani et al. 2021, arXiv 2104.05704, Table 3 (ImageNet)", CITATION, 22.36)
for n, e, h, r in [(2, 128, 2, 1), (4, 128, 2, 1), (6, 256, 4, 2), (7, 256, 4, 2), (8, 256, 4, 2), (14, 384, 6, 3),
                   (16, 384, 6, 3)]:
    register_preset(
        f"cct_{n}", "cct",
        dict(img_size=224, embedding_dim=e, num_layers=n, num_heads=h, mlp_ratio=r, kernel_size=7, stride=2,
             padding=3, n_conv_layers=1, pooling_kernel_size=3, pooling_stride=2, pooling_padding=1,
             num_classes=1000, positional_embedding="learnable"),
        (224, 224), "CCT, Hassani et al. 2021, arXiv 2104.05704 (vit_pytorch.cct.cct_%d)" % n, CITATION, None,
        "vit-pytorch's cct_%d() with its README's 224x224 tokenizer (one 7x7 conv, stride 2)" % n)
