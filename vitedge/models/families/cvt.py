"""CvT (vit-pytorch's ``cvt.CvT``): convolutional token embedding and projection."""
from ..registry import register_family, register_preset

register_family(
    "cvt", "vitedge.models.cvt:CvT", upstream=("cvt", "CvT"), size_arg=(None, "none"),
    small_config=dict(num_classes=10, s1_emb_dim=16, s1_heads=1, s1_depth=1, s2_emb_dim=24, s2_heads=2, s2_depth=1,
                      s3_emb_dim=32, s3_heads=2, s3_depth=2),
    small_input_size=(64, 96),
)

PAPER = "CvT, Wu et al. 2021, arXiv 2103.15808, Table 2"
CITATION = "Wu et al. CvT: Introducing Convolutions to Vision Transformers. ICCV 2021."

register_preset("cvt_13", "cvt", dict(num_classes=1000), (224, 224), PAPER, CITATION, 20.0,
                "vit-pytorch's CvT defaults are CvT-13 (average pooling instead of a class token)")
register_preset("cvt_21", "cvt", dict(num_classes=1000, s2_depth=4, s3_depth=16), (224, 224), PAPER, CITATION, 32.0)
