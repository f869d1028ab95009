"""BatchNorm folding: LeViT's 1x1 Conv+BN projections and MobileViT's conv_bn blocks hold BatchNorm2d modules, and
the exported graphs of the TorchScript target and the ONNX target hold no BatchNorm op, with parity against eager on
the bundled photos (checked by the export driver). MobileViT's Conv+BN are folded by the exporters (torch.jit.freeze;
the dynamo ONNX exporter's optimizer; AOTInductor's freezing and ExecuTorch's XNNPACK FuseBatchNormPass too); LeViT
folds its own in eval mode (its projections run as matrix products on channel-last tokens, with the BatchNorm folded
into their weights: ``vitedge.models.levit.conv1x1_tokens``)."""
import onnx
import pytest
import torch
from torch import nn

from vitedge.export import export, prepare_preset


@pytest.mark.parametrize("preset", ["levit_128s", "mobilevit_xs"])
@pytest.mark.parametrize("target", ["torchscript", "onnx"])
def test_exported_graph_has_no_batchnorm(preset, target, tmp_path):
    model, spec, pre = prepare_preset(preset, image_size=(64, 64))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n_bn >= 30  # LeViT-128S: 44, MobileViT-XS: 35
    for m in model.modules():  # non-trivial running statistics, so a dropped BN would break parity
        if isinstance(m, nn.BatchNorm2d):
            g = torch.Generator().manual_seed(m.num_features)
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    art = export(model, torch.zeros(2, 3, 64, 64), target, tmp_path / "a", spec=spec, preprocessing=pre)
    assert art.manifest["parity"]["batch_8"]["max_abs"] <= 1e-4
    if target == "torchscript":
        graph = torch.jit.load(str(art.file)).graph
        kinds = [n.kind() for n in graph.nodes()]
        assert not [k for k in kinds if "batch_norm" in k]
        assert sum(k in ("aten::_convolution", "aten::linear") for k in kinds) >= n_bn
    else:
        ops = [n.op_type for n in onnx.load(str(art.file)).graph.node]
        assert "BatchNormalization" not in ops and sum(ops.count(k) for k in ("Conv", "MatMul", "Gemm")) >= n_bn
