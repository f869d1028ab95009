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


@pytest.mark.parametrize("n", [1, 2])
def test_last_block_for_the_first_tokens_only(n, photo_batch):
    """Transformer.forward_first(x, n) == forward(x)[..., :n, :] (what a class-token head reads), for (B, N, dim)
    and for extra leading dimensions; ViT(pool='cls') uses it and still matches the full pass."""
    torch.manual_seed(0)
    model = ViT(image_size=32, patch_size=8, num_classes=10, dim=64, depth=3, heads=4, mlp_dim=128, dim_head=16).eval()
    x = photo_batch((32, 32), 3)
    with torch.no_grad():
        tokens = model.embed(x)                                          # (3, 17, 64)
        full = model.transformer(tokens)
        assert torch.allclose(model.transformer.forward_first(tokens, n), full[:, :n], atol=1e-5)
        grouped = tokens.unflatten(0, (1, 3))                            # (1, 3, 17, 64)
        assert torch.allclose(model.transformer.forward_first(grouped, n), full[:, :n].unflatten(0, (1, 3)), atol=1e-5)
        assert torch.allclose(model(x), model.mlp_head(full[:, 0]), atol=1e-5)
