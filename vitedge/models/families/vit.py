"""ViT (vit-pytorch's ``vit.ViT``) and the DeiT presets."""
from ..registry import register_family, register_preset

register_family(
    "vit", "vitedge.models.vit:ViT", upstream=("vit", "ViT"), size_arg=("image_size", "tuple"),
    small_config=dict(image_size=(32, 48), patch_size=(8, 16), num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64,
                      dim_head=8),
    small_input_size=(32, 48),
    # ONNX Runtime: gelu + attention fusions won in interleaved runs on DeiT (README, ONNX section;
    # scripts/onnx_fusion_bench.py)
    # ONNX int8: dynamic (int8 MatMuls, activations quantized at run time), quantized from the fused fp32 graph.
    # Interleaved on the digits-trained DeiT-Ti at 64x64, batch 1 (docs/quantization.md): dynamic 0.55x fp32's p50
    # vs static QDQ 0.73x (2 threads), and from the fused graph dynamic 1.6-2.0 ms vs static 1.8-6.2 ms (1 and 2
    # threads, a loaded 2-core machine): the Q/DQ pairs around MultiHeadAttention and BiasGelu cost more than
    # static activation scales save.
    recipes={"onnx": {"fusions": ("gelu", "attention")}, "onnx_int8": {"mode": "dynamic"}},
)

DEIT = "Touvron et al. Training data-efficient image transformers & distillation through attention. ICML 2021."


def _deit(name, dim, heads, params):
    register_preset(name, "vit", dict(image_size=224, patch_size=16, num_classes=1000, dim=dim, depth=12, heads=heads,
                                      mlp_dim=4 * dim, dim_head=64),
                    (224, 224), "DeiT, Touvron et al. 2021, arXiv 2012.12877, Table 1", DEIT, params)


_deit("deit_tiny", 192, 3, 5.7)
_deit("deit_small", 384, 6, 22.1)
_deit("deit_base", 768, 12, 86.6)
