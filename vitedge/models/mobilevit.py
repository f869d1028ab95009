"""MobileViT (Mehta & Rastegari, "MobileViT: Light-weight, General-purpose, and Mobile-friendly Vision
Transformer", arXiv 2110.02178).

Constructor- and ``state_dict``-compatible with ``vit_pytorch.mobile_vit.MobileViT`` (vit-pytorch 1.x): the
same arguments, the same parameter and buffer names, the same logits. Written for export:

* the unfold ``'b d (h ph) (w pw) -> b (ph pw) (h w) d'`` and its inverse are reshape/permute chains whose
  tensors never exceed rank 5 (Core ML's limit), and work for ``ph != pw``;
* the batch dimension is always ``-1`` in reshapes (never read into a Python int); the feature-map sizes
  are fixed at construction from ``image_size``, so the input must have exactly that (H, W);
* attention is the shared SDPA :class:`~vitedge.models.layers.Transformer`; no einops, lambdas or
  data-dependent control flow in ``forward``.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import GlobalAvgPool, Transformer, check_image

__all__ = ["MobileViT", "MobileViTBlock", "MV2Block", "GlobalAvgPool", "unfold_patches", "fold_patches",
           "conv_1x1_bn", "conv_nxn_bn"]


def _down(n: int) -> int:
    """Output length of a stride-2 convolution with ``padding = kernel // 2`` (odd kernel): ceil(n / 2)."""
    return (n + 1) // 2


def conv_1x1_bn(inp: int, oup: int) -> nn.Sequential:
    """Pointwise Conv2d (no bias) -> BatchNorm2d -> SiLU: (B, inp, H, W) -> (B, oup, H, W), float32.

    Keys ``0.weight`` and ``1.*`` as vit-pytorch's ``conv_1x1_bn``.
    """
    return nn.Sequential(nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.SiLU())


def conv_nxn_bn(inp: int, oup: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """``kernel_size`` x ``kernel_size`` Conv2d (no bias, 'same' padding) -> BatchNorm2d -> SiLU.

    Shape (B, inp, H, W) -> (B, oup, ceil(H / stride), ceil(W / stride)). vit-pytorch always pads by 1,
    which equals ``kernel_size // 2`` for the default kernel 3 (other kernels break its fusion ``cat``);
    here the padding is ``kernel_size // 2`` so any odd kernel keeps the spatial size.
    """
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel_size, stride, kernel_size // 2, bias=False), nn.BatchNorm2d(oup), nn.SiLU()
    )


def unfold_patches(x: torch.Tensor, ph: int, pw: int, h: int, w: int) -> torch.Tensor:
    """(B, d, h*ph, w*pw) -> (B, ph*pw, h*w, d): group pixels by their offset inside a ph x pw patch.

    Same result as einops ``'b d (h ph) (w pw) -> b (ph pw) (h w) d'``; every intermediate tensor has
    rank <= 5 and the batch dimension stays symbolic. ``h``, ``w`` are the patch-grid sizes (static ints).
    """
    d = x.shape[1]
    x = x.reshape(-1, d * h, ph, w, pw).permute(0, 2, 4, 1, 3)      # b, ph, pw, d*h, w
    x = x.reshape(-1, ph * pw, d, h * w)                            # b, ph*pw, d, h*w
    return x.transpose(-1, -2)                                      # b, ph*pw, h*w, d


def fold_patches(x: torch.Tensor, ph: int, pw: int, h: int, w: int) -> torch.Tensor:
    """(B, ph*pw, h*w, d) -> (B, d, h*ph, w*pw), the inverse of :func:`unfold_patches` (rank <= 5)."""
    d = x.shape[-1]
    x = x.transpose(-1, -2).reshape(-1, ph, pw, d * h, w)          # b, ph, pw, d*h, w
    x = x.permute(0, 3, 1, 4, 2)                                    # b, d*h, ph, w, pw
    return x.reshape(-1, d, h * ph, w * pw)


class MV2Block(nn.Module):
    """MobileNetV2 inverted residual (Sandler et al., arXiv 1801.04381), as ``vit_pytorch.mobile_vit.MV2Block``.

    (pointwise expand -> BN -> SiLU when ``expansion != 1``) -> depthwise 3x3 (stride) -> BN -> SiLU ->
    pointwise project -> BN, plus the input when ``stride == 1 and inp == oup``.
    Shape (B, inp, H, W) -> (B, oup, ceil(H / stride), ceil(W / stride)), float32.

    Raises:
        ValueError: ``stride`` not in (1, 2).
    """

    def __init__(self, inp: int, oup: int, stride: int = 1, expansion: int = 4):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"MV2Block stride must be 1 or 2, got {stride}")
        self.stride = stride
        hidden_dim = int(inp * expansion)
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(inp, hidden_dim, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden_dim), nn.SiLU()]
        layers += [
            nn.Conv2d(hidden_dim, hidden_dim, 3, stride, 1, groups=hidden_dim, bias=False),
            nn.BatchNorm2d(hidden_dim), nn.SiLU(),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.use_res_connect:
            out = out + x
        return out


class MobileViTBlock(nn.Module):
    """MobileViT block: local conv features, global attention across patches, fusion with the input.

    conv1 (n x n) -> conv2 (1x1 to ``dim``) -> unfold into (B, ph*pw, h*w, dim) -> Transformer (4 heads of
    8, SiLU MLP of ``mlp_dim``, no final norm) over the h*w patches at each of the ph*pw pixel offsets ->
    fold -> conv3 (1x1 back to ``channel``) -> concat with the input -> conv4 (n x n).

    Input and output: float32 (B, channel, H, W) with (H, W) == ``fmap_size`` given at construction.

    Raises:
        ValueError: ``fmap_size`` not divisible by ``patch_size``, or an even ``kernel_size``.
    """

    def __init__(self, dim: int, depth: int, channel: int, kernel_size: int, patch_size: tuple[int, int],
                 mlp_dim: int, dropout: float = 0.0, fmap_size: tuple[int, int] | None = None):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.ph, self.pw = patch_size
        if fmap_size is None:
            raise ValueError("MobileViTBlock needs the static fmap_size (H, W) of its input")
        fh, fw = fmap_size
        if fh % self.ph or fw % self.pw:
            raise ValueError(f"feature map {fh}x{fw} is not divisible by patch size {self.ph}x{self.pw}")
        self.nh, self.nw = fh // self.ph, fw // self.pw

        self.conv1 = conv_nxn_bn(channel, channel, kernel_size)
        self.conv2 = conv_1x1_bn(channel, dim)
        self.transformer = Transformer(dim, depth, heads=4, dim_head=8, mlp_dim=mlp_dim, dropout=dropout,
                                       activation=nn.SiLU, final_norm=False)
        self.conv3 = conv_1x1_bn(dim, channel)
        self.conv4 = conv_nxn_bn(2 * channel, channel, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        x = self.conv2(self.conv1(x))
        x = unfold_patches(x, self.ph, self.pw, self.nh, self.nw)      # b, ph*pw, h*w, dim
        # Attention over (b*ph*pw) independent sequences: keeps q/k/v at rank 4 (ONNX's SDPA lowering and
        # Core ML want 4-D attention), same result as attending per (b, ph*pw) group.
        x = self.transformer(x.flatten(0, 1))                           # b*ph*pw, h*w, dim
        x = fold_patches(x.unflatten(0, (-1, self.ph * self.pw)), self.ph, self.pw, self.nh, self.nw)
        x = self.conv3(x)
        return self.conv4(torch.cat((x, y), dim=1))


class MobileViT(nn.Module):
    """MobileViT image classifier (Mehta & Rastegari, arXiv 2110.02178).

    Args (as ``vit_pytorch.mobile_vit.MobileViT``):
        image_size: (H, W); after the five stride-2 stages (each ceil(n / 2)) the feature maps entering the
            three MobileViT blocks (about H/8, H/16, H/32) must be divisible by ``patch_size``; e.g. any
            multiple of 64 with the default 2x2 patches. Non-square sizes are supported.
        dims: 3 transformer widths, one per MobileViT block.
        channels: 11 conv widths; ``channels[2] == channels[3]``, ``channels[4] == channels[5]``,
            ``channels[6] == channels[7]`` and ``channels[8] == channels[9]`` (as the reference wiring
            requires); ``channels[-1]`` is the width before the classifier.
        num_classes: logits size. expansion: MV2 expansion factor. kernel_size: odd conv kernel of the
            MobileViT blocks. patch_size: (ph, pw). depths: 3 transformer depths.

    Input: float32 (B, 3, H, W) with exactly the constructor's (H, W); B is free (symbolic under tracing
    and export). Output: float32 logits (B, num_classes).

    Raises:
        ValueError: wrong lengths of ``dims``/``depths``/``channels``, inconsistent ``channels``, an image or
            feature-map size not divisible by the patch size, an even kernel size; in ``forward``, an input that
            is not (B, 3, H, W) at ``image_size`` (:func:`~vitedge.models.layers.check_image`).
    """

    def __init__(self, image_size, dims, channels, num_classes, expansion=4, kernel_size=3,
                 patch_size=(2, 2), depths=(2, 4, 3)):
        super().__init__()
        if len(dims) != 3:
            raise ValueError(f"dims must be a tuple of 3, got {dims!r}")
        if len(depths) != 3:
            raise ValueError(f"depths must be a tuple of 3, got {depths!r}")
        if len(channels) != 11:
            raise ValueError(f"channels must be a tuple of 11, got {len(channels)}: {channels!r}")
        for a, b in ((2, 3), (4, 5), (6, 7), (8, 9)):
            if channels[a] != channels[b]:
                raise ValueError(f"channels[{a}] must equal channels[{b}], got {channels[a]} and {channels[b]}")
        ih, iw = image_size
        ph, pw = patch_size
        if ih % ph or iw % pw:
            raise ValueError(f"image size {(ih, iw)} must be divisible by patch size {(ph, pw)}")
        self.image_size = (ih, iw)
        self.patch_size = (ph, pw)

        # Static feature-map sizes: conv1 and stem[1] halve, then each trunk MV2 block halves.
        fh, fw = _down(_down(ih)), _down(_down(iw))
        fmaps = []
        for _ in range(3):
            fh, fw = _down(fh), _down(fw)
            fmaps.append((fh, fw))

        init_dim, last_dim = channels[0], channels[-1]
        self.conv1 = conv_nxn_bn(3, init_dim, stride=2)
        self.stem = nn.ModuleList([
            MV2Block(channels[0], channels[1], 1, expansion),
            MV2Block(channels[1], channels[2], 2, expansion),
            MV2Block(channels[2], channels[3], 1, expansion),
            MV2Block(channels[2], channels[3], 1, expansion),
        ])
        mlp_mults = (2, 4, 4)
        self.trunk = nn.ModuleList(
            nn.ModuleList([
                MV2Block(channels[3 + 2 * i], channels[4 + 2 * i], 2, expansion),
                MobileViTBlock(dims[i], depths[i], channels[5 + 2 * i], kernel_size, patch_size,
                               int(dims[i] * mlp_mults[i]), fmap_size=fmaps[i]),
            ])
            for i in range(3)
        )
        self.to_logits = nn.Sequential(
            conv_1x1_bn(channels[-2], last_dim),
            GlobalAvgPool(),
            nn.Linear(last_dim, num_classes, bias=False),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone: (B, 3, H, W) -> (B, channels[9], ~H/32, ~W/32) float32, before the classifier.

        Raises:
            ValueError: ``x`` is not (B, 3, H, W) at the constructor's ``image_size``
                (:func:`~vitedge.models.layers.check_image`; vit-pytorch runs other multiples of 32, vitedge's
                static unfold sizes do not).
        """
        check_image(self, x, 3, self.image_size)
        x = self.conv1(x)
        for block in self.stem:
            x = block(x)
        for mv2, mvit in self.trunk:
            x = mvit(mv2(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_logits(self.features(x))
