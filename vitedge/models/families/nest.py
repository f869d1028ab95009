"""NesT (vit-pytorch's ``nest.NesT``): nested hierarchical transformer."""
from ..registry import register_family, register_preset

register_family(
    "nest", "vitedge.models.nest:NesT", upstream=("nest", "NesT"), size_arg=("image_size", "square"),
    small_config=dict(image_size=64, patch_size=4, dim=16, heads=2, num_hierarchies=3, block_repeats=(1, 1, 2),
                      num_classes=10),
    small_input_size=(64, 64),
)

register_preset(
    "nest_t", "nest",
    dict(image_size=224, patch_size=4, dim=96, heads=3, num_hierarchies=3, block_repeats=(2, 2, 8), num_classes=1000),
    (224, 224), "NesT, Zhang et al. 2021, arXiv 2105.12723, Table A1",
    "Zhang et al. Nested Hierarchical Transformer. AAAI 2022.", 17.0,
    "vit-pytorch's heads/dim_head layout differs from the paper's (3, 6, 12) heads of 32",
    params_comparable=False)
