"""ViT: same state_dict and logits as vit-pytorch's ViT on real photos (fp32 max abs diff <= 1e-5)."""
import pytest
import torch

from oracle import oracle
from vitedge.models.vit import ViT

CONFIGS = {
    "square": dict(image_size=64, patch_size=16, num_classes=10, dim=64, depth=2, heads=4, mlp_dim=128, dim_head=16),
    "non_square_image_and_patch": dict(image_size=(64, 96), patch_size=(16, 8), num_classes=7, dim=48, depth=2,
                                       heads=3, mlp_dim=96, dim_head=16),
    "mean_pool": dict(image_size=48, patch_size=8, num_classes=5, dim=32, depth=1, heads=2, mlp_dim=64, pool="mean"),
    "single_head_no_projection": dict(image_size=32, patch_size=8, num_classes=3, dim=64, depth=1, heads=1,
                                      dim_head=64, mlp_dim=64),
    "features_only": dict(image_size=32, patch_size=8, num_classes=0, dim=32, depth=1, heads=2, mlp_dim=64),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_vit_matches_vit_pytorch_on_photos(name, photo_batch):
    kw = CONFIGS[name]
    torch.manual_seed(0)
    ref = oracle("vit").ViT(**kw).eval()
    ours = ViT(**kw).eval()
    assert set(ours.state_dict()) == set(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    h, w = kw["image_size"] if isinstance(kw["image_size"], tuple) else (kw["image_size"],) * 2
    x = photo_batch((h, w))
    with torch.no_grad():
        a, b = ref(x), ours(x)
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= 1e-5


def test_vit_rejects_indivisible_patch():
    with pytest.raises(ValueError, match="divisible"):
        ViT(image_size=30, patch_size=16, num_classes=2, dim=8, depth=1, heads=1, mlp_dim=8)
