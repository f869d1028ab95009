"""Transformer building blocks shared by the ViT-style families.

Every block keeps the parameter names of its `vit-pytorch` 1.x counterpart (``norm``, ``to_qkv``,
``to_out``, ``net``) so a vit-pytorch ``state_dict`` loads unchanged, but the forward pass is written for
export: attention goes through :func:`torch.nn.functional.scaled_dot_product_attention`, heads are split
with ``unflatten``/``transpose`` on the trailing dimensions only (so any leading batch dimensions stay
symbolic), and there is no einops, lambda or data-dependent control flow in ``forward``.

It also holds the two input/observation helpers every family uses: :func:`check_image` (refuse an input of the
wrong rank, channel count or size with a one-line ``ValueError``) and :func:`hooked` (whether a vit-pytorch
wrapper such as ``Recorder`` / ``Extractor`` has hooks on a module, so a forward pass must run every module
as vit-pytorch would).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .upstream import compat_base

__all__ = ["Attention", "FeedForward", "Transformer", "split_heads", "merge_heads", "pair", "patch_grid",
           "ChannelLayerNorm", "ChanLayerNorm", "GlobalAvgPool", "check_image", "hooked"]


def check_image(model: nn.Module, img: torch.Tensor, channels: int, size: tuple[int, int] | None = None) -> None:
    """Refuse an input ``model`` cannot take, before it reaches a reshape that would fail obscurely (or worse,
    fold a wrong size into the batch dimension).

    ``img`` must be a 4-D (B, channels, H, W) tensor, with (H, W) == ``size`` unless ``size`` is None (families
    that read the spatial size from the input and check it themselves). B is never read, so it stays symbolic
    under ``torch.export``; (C, H, W) are static there, so the check adds no graph node. Under ``torch.jit.trace``
    the shapes are traced values and the check is skipped (no TracerWarning, the traced graph is unchanged).

    Raises:
        ValueError: one line naming the model class, what it was built for and what it got, e.g.
            ``ViT was built for 256x256 input, got 256x128 (input shape (1, 3, 256, 128)); resize the image to
            256x256``.
    """
    if torch.jit.is_tracing():
        return
    name = type(model).__name__
    shape = tuple(img.shape)
    if len(shape) != 4:
        raise ValueError(f"{name} takes a batch of images (B, {channels}, H, W), got a tensor of shape {shape}")
    if shape[1] != channels:
        raise ValueError(f"{name} was built for {channels}-channel input, got {shape[1]} channel"
                         f"{'' if shape[1] == 1 else 's'} (input shape {shape})")
    if size is not None and (shape[2], shape[3]) != tuple(size):
        h, w = size
        raise ValueError(f"{name} was built for {h}x{w} input, got {shape[2]}x{shape[3]} (input shape {shape}); "
                         f"resize the image to {h}x{w}")


def hooked(module: nn.Module) -> bool:
    """True when a forward hook, forward pre-hook or backward hook is registered on ``module`` or on any of its
    submodules, as vit-pytorch's ``Recorder`` (on each attention's ``attend``) and ``Extractor`` (on
    ``transformer``) register them. A model then skips the shortcuts that would leave a hooked module uncalled
    or call it on fewer tokens (:meth:`Transformer.forward_first`, the SDPA kernel instead of ``attend``).

    Only hooks registered on the modules count: global hooks
    (``torch.nn.modules.module.register_module_forward_hook``, which ``torch.utils.flop_counter.FlopCounterMode``
    installs to track modules) leave the fast paths on.
    """
    stack = [module]  # a plain walk, about 3x faster than module.modules() (no memo set)
    while stack:
        m = stack.pop()
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return True
        stack.extend(c for c in m._modules.values() if c is not None)
    return False


def pair(t):
    """``t`` if it is a tuple, else ``(t, t)``."""
    return t if isinstance(t, tuple) else (t, t)


def patch_grid(image_size, patch_size) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Parse a ViT-style image and patch size (each an int or an (H, W) tuple).

    Returns ``((H, W), (ph, pw), (H // ph, W // pw))``: image size, patch size and the patch grid.

    Raises:
        ValueError: the image size is not divisible by the patch size.
    """
    (ih, iw), (ph, pw) = pair(image_size), pair(patch_size)
    if ih % ph or iw % pw:
        raise ValueError(f"image size {(ih, iw)} must be divisible by patch size {(ph, pw)}")
    return (ih, iw), (ph, pw), (ih // ph, iw // pw)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., N, heads*D) -> (..., heads, N, D); leading dimensions are untouched."""
    return x.unflatten(-1, (heads, -1)).transpose(-2, -3)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(..., heads, N, D) -> (..., N, heads*D), the inverse of :func:`split_heads`.

    The transposed tensor is copied to a contiguous layout before flattening: ``torch.export`` otherwise records
    the flatten as a view, which the ONNX exporter can no longer express once it rewrites the attention before it
    (seen as "Cannot view a tensor ... as (..., heads, D)" and a fall back to the legacy exporter).
    """
    return x.transpose(-2, -3).clone(memory_format=torch.contiguous_format).flatten(-2)


class Attention(compat_base("vit", "Attention")):
    """Pre-norm multi-head self-attention (Vaswani et al. 2017; ViT, arXiv 2010.11929).

    Matches ``vit_pytorch.vit.Attention`` (and ``vit_pytorch.mobile_vit.Attention``): LayerNorm, a bias-free
    ``to_qkv`` Linear, softmax(QK^T / sqrt(dim_head)) V, then ``to_out`` (Linear + Dropout), which is an
    Identity when ``heads == 1 and dim_head == dim`` unless ``project_out`` says otherwise.

    Input and output: float tensor (..., N, dim), any number of leading dimensions (B for ViT,
    (B, P) for MobileViT's patch groups).

    Attention runs through SDPA, except when ``attend`` (a parameter-free ``nn.Softmax``, as vit-pytorch's) has
    a forward hook or pre-hook: then it is computed as vit-pytorch does, ``attend(QK^T * scale)`` -> dropout ->
    ``@ V``, so the hook sees the (..., heads, N, N) post-softmax weights (what ``vit_pytorch.recorder.Recorder``
    records). Where vit-pytorch is installed the class also derives from ``vit_pytorch.vit.Attention``
    (:func:`~vitedge.models.upstream.compat_base`), which ``Recorder`` looks for; no parameter comes from it.
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0,
                 project_out: bool | None = None):
        nn.Module.__init__(self)  # not super(): a vit-pytorch base (compat_base) must build nothing
        inner_dim = dim_head * heads
        if project_out is None:
            project_out = not (heads == 1 and dim_head == dim)
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.attn_dropout = dropout
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(dropout)) if project_out else nn.Identity()
        self.attend = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        q, k, v = (split_heads(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        return self.to_out(merge_heads(self.attention(q, k, v)))

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T * scale) v, with dropout on the weights in training: (..., heads, n, d) queries and
        (..., heads, N, d) keys/values -> (..., heads, n, d). SDPA, or explicitly through ``self.attend`` when it
        is hooked (see the class docstring)."""
        attend = self._modules.get("attend")  # absent in a module pickled before it existed
        p = self.attn_dropout if self.training else 0.0
        if attend is None or not (attend._forward_hooks or attend._forward_pre_hooks):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=self.scale)
        attn = attend(torch.matmul(q, k.transpose(-1, -2)) * self.scale)
        return torch.matmul(F.dropout(attn, p), v)

    def forward_first(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """``forward(x)[..., :n, :]`` without computing the other queries: (..., N, dim) -> (..., n, dim).

        Keys and values still come from all N tokens; only the first ``n`` rows of Q (and of the attention output,
        ``to_out``) are computed, by splitting ``to_qkv``'s weight into its query and key/value rows. A model
        that reads only its class token(s) after the last block uses this there (:meth:`Transformer.forward_first`).
        """
        x = self.norm(x)
        w = getattr(self.to_qkv, "weight", None)
        if isinstance(w, torch.Tensor):  # a float nn.Linear (bias-free): q from the first n rows only
            inner = w.shape[0] // 3
            q = split_heads(F.linear(x[..., :n, :], w[:inner]), self.heads)
            k, v = (split_heads(t, self.heads) for t in F.linear(x, w[inner:]).chunk(2, dim=-1))
        else:  # a swapped-in module (e.g. torch.ao dynamic int8 Linear, whose weight is a method): all rows
            q, k, v = (split_heads(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
            q = q[..., :n, :]
        return self.to_out(merge_heads(self.attention(q, k, v)))

    def forward_with_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Like ``forward``, also returning the softmax attention weights (..., heads, N, N) that vit-pytorch's
        ``Recorder`` records (post-softmax, pre-dropout). Explicit matmuls instead of SDPA, eval use only."""
        x = self.norm(x)
        q, k, v = (split_heads(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        return self.to_out(merge_heads(attn @ v)), attn


class FeedForward(nn.Module):
    """Pre-norm MLP: LayerNorm -> Linear(dim, hidden) -> activation -> Linear(hidden, dim), with dropouts.

    Same layout and parameter names (``net.0``, ``net.1``, ``net.4``) as ``vit_pytorch.vit.FeedForward``
    (GELU) and ``vit_pytorch.mobile_vit.FeedForward`` (SiLU). Shape (..., N, dim) -> (..., N, dim).
    """

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0, activation: type[nn.Module] = nn.GELU):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden_dim), activation(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, dim), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Transformer(nn.Module):
    """Stack of ``depth`` residual (Attention, FeedForward) pairs, optionally closed by a LayerNorm.

    ``final_norm=True`` matches ``vit_pytorch.vit.Transformer``; ``False`` matches MobileViT's transformer
    (no ``norm`` parameter). Shape (..., N, dim) -> (..., N, dim).
    """

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float = 0.0,
                 activation: type[nn.Module] = nn.GELU, final_norm: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, heads, dim_head, dropout), FeedForward(dim, mlp_dim, dropout, activation)])
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim) if final_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)

    def forward_first(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """``forward(x)[..., :n, :]``, (..., N, dim) -> (..., n, dim), with the last block run for the first ``n``
        tokens only (its attention still reads all N): every token's output after the last attention is otherwise
        computed and dropped by a class-token head. For DeiT-Ti at 224x224 that is 7% of the model's FLOPs
        (the last MLP, output projection and 196 queries). Hooks on the last block see n tokens (a hooked
        ``attend`` the (..., heads, n, N) weights): a model runs :meth:`forward` instead when anything in the
        transformer is hooked (:func:`hooked`)."""
        for attn, ff in self.layers[:-1]:
            x = attn(x) + x
            x = ff(x) + x
        if len(self.layers):
            attn, ff = self.layers[-1]
            x = attn.forward_first(x, n) + x[..., :n, :]
            x = ff(x) + x
        return self.norm(x[..., :n, :])


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a feature map, with vit-pytorch's conv-model parameter layout ``g``, ``b``:
    (1, dim, 1, 1) (its CvT / Twins-SVT ``LayerNorm``, CrossFormer / NesT / RegionViT ``ChanLayerNorm``).

    ``forward`` takes float (B, dim, H, W) and computes ``(x - mean_c) / sqrt(var_c + eps) * g + b`` over
    dim 1 (biased variance, ``eps`` inside the square root); :meth:`forward_last` applies the same
    normalisation to channel-last (..., dim) tensors through ``F.layer_norm``.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.b = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        centered = x - mean
        var = centered.square().mean(dim=1, keepdim=True)
        return centered / (var + self.eps).sqrt() * self.g + self.b

    def forward_last(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., dim), normalised over the last dimension."""
        return F.layer_norm(x, (self.dim,), self.g.reshape(-1), self.b.reshape(-1), self.eps)


ChanLayerNorm = ChannelLayerNorm  # vit-pytorch's name in CrossFormer, NesT and RegionViT


class GlobalAvgPool(nn.Module):
    """Mean over the spatial dimensions: (B, C, H, W) -> (B, C). Parameter-free."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))
