"""Attention maps (vit-pytorch Recorder) and embeddings (Extractor) as extra named graph outputs."""
import numpy as np
import pytest
import torch

from oracle import oracle
from vitedge.cli import main
from vitedge.errors import UsageError
from vitedge.export import export
from vitedge.models.outputs import WithOutputs
from vitedge.models.vit import ViT
from vitedge.runtime import open_artifact

KW = dict(image_size=(32, 48), patch_size=8, num_classes=5, dim=32, depth=2, heads=2, mlp_dim=64, dim_head=16)


def _pair():
    torch.manual_seed(0)
    ref = oracle("vit").ViT(**KW).eval()
    ours = ViT(**KW).eval()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def test_outputs_match_recorder_and_extractor(photo_batch):
    ref, ours = _pair()
    x = photo_batch((32, 48), 4)
    with torch.no_grad():
        logits_r, attns_r = oracle("recorder").Recorder(ref)(x)
        _, emb_r = oracle("extractor").Extractor(ref)(x)
        logits, attns, emb = WithOutputs(ours)(x)
    assert attns.shape == (4, 2, 2, 1 + 4 * 6, 1 + 4 * 6) and attns.shape == attns_r.shape
    assert (logits - logits_r).abs().max() <= 1e-5
    assert (attns - attns_r).abs().max() <= 1e-5
    assert (emb - emb_r).abs().max() <= 1e-5


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
def test_extra_outputs_are_named_graph_outputs(target, tmp_path, photo_batch):
    _, ours = _pair()
    net = WithOutputs(ours, ("logits", "attentions", "embeddings"))
    art = export(net, torch.zeros(2, 3, 32, 48), target, tmp_path / "a")
    assert [o["name"] for o in art.manifest["outputs"]] == ["logits", "attentions", "embeddings"]
    assert art.manifest["outputs"][1]["shape"] == [-1, 2, 2, 25, 25]
    _, runner = open_artifact(art.path, trust_code=True)
    x = photo_batch((32, 48), 3)
    got = runner.run(x.numpy())
    with torch.no_grad():
        want = net(x)
    for g, w in zip(got, want):
        assert np.abs(g - w.numpy()).max() <= 1e-4


def test_cli_outputs_option(tmp_path):
    assert main(["export", "deit_tiny", "--target", "onnx", "--image-size", "32", "32", "--num-classes", "3",
                 "--outputs", "logits,embeddings", "-o", str(tmp_path / "a")]) == 0
    assert main(["validate", str(tmp_path / "a")]) == 0


def test_outputs_rejected_for_non_vit_models():
    from vitedge.models.zoo import create_model
    with pytest.raises(UsageError, match="ViT-style"):
        WithOutputs(create_model("levit_128s"))
    with pytest.raises(UsageError, match="unknown output"):
        WithOutputs(_pair()[1], ("logits", "attention_maps"))
