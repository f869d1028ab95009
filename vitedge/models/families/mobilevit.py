"""MobileViT (vit-pytorch's ``mobile_vit.MobileViT``) and the paper's three sizes."""
from ..registry import DEFAULT_RECIPES, register_family, register_preset

register_family(
    "mobilevit", "vitedge.models.mobilevit:MobileViT", upstream=("mobile_vit", "MobileViT"),
    size_arg=("image_size", "tuple"),
    small_config=dict(image_size=(64, 128), dims=(16, 20, 24), channels=(8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 48),
                      num_classes=10, depths=(1, 2, 1), expansion=2),
    small_input_size=(64, 128),
    recipes={
        # ONNX Runtime: attention fusion only (its SiLU already becomes ORT's QuickGelu)
        "onnx": {"fusions": ("attention",)},
        # ONNX int8 (docs/quantization.md): its small convolutions ran slower as QLinearConv + Q/DQ than in float,
        # so they stay float at run time (int8 storage, see int8_conv_weight_storage) and the MatMuls are quantized
        # dynamically. MobileViT-XXS on the digits, 64x64, batch 1, interleaved against the fp32 artifact, both
        # quantized from the fused graph: this recipe 0.79-0.93x fp32's p50, static QDQ (convolutions too)
        # 0.94-1.10x (1 and 2 threads)
        "onnx_int8": {"mode": "dynamic", "conv_weight_storage": True},
        # OpenVINO int8: every convolution kept in float (cosine on the photos 0.998 vs 0.956 with them in int8;
        # measurements in vitedge/targets/openvino.py)
        "openvino_int8": {**DEFAULT_RECIPES["openvino_int8"], "ignored_types": ("Convolution", "GroupConvolution")},
        # ExecuTorch int8: static int8 calibrated on digits gave cosine 0.975 vs fp32 on the photos, below the
        # 0.99 gate; dynamic kept 0.9999 and 0.0 points of digits top-1
        "executorch_int8": {"mode": "dynamic"},
    },
)

PAPER = "MobileViT, Mehta & Rastegari 2022, arXiv 2110.02178, Table 4 / Appendix A"
CITATION = ("Mehta, Rastegari. MobileViT: Light-weight, General-purpose, and Mobile-friendly Vision Transformer. "
            "ICLR 2022.")


def _mobilevit(name, dims, channels, expansion, params):
    register_preset(name, "mobilevit", dict(image_size=(256, 256), dims=dims, channels=channels, num_classes=1000,
                                            expansion=expansion),
                    (256, 256), PAPER, CITATION, params,
                    note="vit-pytorch's MobileViT transformer uses 4 heads of dim 8 and a 1x1 fusion input, "
                         "so its parameter count differs from the paper's", params_comparable=False)


_mobilevit("mobilevit_xxs", (64, 80, 96), (16, 16, 24, 24, 48, 48, 64, 64, 80, 80, 320), 2, 1.3)
_mobilevit("mobilevit_xs", (96, 120, 144), (16, 32, 48, 48, 64, 64, 80, 80, 96, 96, 384), 4, 2.3)
_mobilevit("mobilevit_s", (144, 192, 240), (16, 32, 64, 64, 96, 96, 128, 128, 160, 160, 640), 4, 5.6)
