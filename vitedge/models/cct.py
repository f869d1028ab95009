"""Compact Convolutional Transformer (Hassani et al., "Escaping the Big Data Paradigm with Compact
Transformers", 2021, arXiv 2104.05704).

Constructor- and ``state_dict``-compatible with ``vit_pytorch.cct.CCT`` and its ``cct_2`` ... ``cct_16``
constructor functions (vit-pytorch 1.x): the same arguments, the same parameter names, the same logits.
Written for export:

* the convolutional tokenizer's output length is computed at construction from the conv/max-pool
  arithmetic (the reference runs a dummy forward pass);
* attention is :func:`torch.nn.functional.scaled_dot_product_attention` on rank-4 (B, heads, N, d) tensors;
* sequence pooling is a softmax over a static token axis and a batched matmul; no einops, lambdas,
  ``**kwargs`` or data-dependent control flow in ``forward``, the batch dimension stays symbolic.

Differences from the reference: ``CCT`` takes the ``TransformerClassifier`` options (``num_layers``,
``num_heads``, ``mlp_ratio``, ``num_classes``, ``positional_embedding``) as explicit keyword-only
arguments, so a misspelt option raises ``TypeError`` instead of being silently swallowed by ``**kwargs``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import check_image, merge_heads, pair, split_heads

__all__ = ['CCT', 'CCTAttention', 'CCTEncoderLayer', 'DropPath', 'Tokenizer', 'TransformerClassifier',
           'sinusoidal_embedding', 'cct_2', 'cct_4', 'cct_6', 'cct_7', 'cct_8', 'cct_14', 'cct_16']


# ----------------------------------------------------------------------------------------------------------
# constructor functions (same signatures and defaults as vit_pytorch.cct)

def cct_2(*args, **kwargs) -> 'CCT':
    """CCT-2: 2 layers, 2 heads, mlp ratio 1, width 128. Keyword arguments as :func:`_cct` / :class:`CCT`."""
    return _cct(num_layers=2, num_heads=2, mlp_ratio=1, embedding_dim=128, *args, **kwargs)


def cct_4(*args, **kwargs) -> 'CCT':
    """CCT-4: 4 layers, 2 heads, mlp ratio 1, width 128. Keyword arguments as :func:`_cct` / :class:`CCT`."""
    return _cct(num_layers=4, num_heads=2, mlp_ratio=1, embedding_dim=128, *args, **kwargs)


def cct_6(*args, **kwargs) -> 'CCT':
    """CCT-6: 6 layers, 4 heads, mlp ratio 2, width 256. Keyword arguments as :func:`_cct` / :class:`CCT`."""
    return _cct(num_layers=6, num_heads=4, mlp_ratio=2, embedding_dim=256, *args, **kwargs)


def cct_7(*args, **kwargs) -> 'CCT':
    """CCT-7: 7 layers, 4 heads, mlp ratio 2, width 256. Keyword arguments as :func:`_cct` / :class:`CCT`."""
    return _cct(num_layers=7, num_heads=4, mlp_ratio=2, embedding_dim=256, *args, **kwargs)


def cct_8(*args, **kwargs) -> 'CCT':
    """CCT-8: 8 layers, 4 heads, mlp ratio 2, width 256. Keyword arguments as :func:`_cct` / :class:`CCT`."""
    return _cct(num_layers=8, num_heads=4, mlp_ratio=2, embedding_dim=256, *args, **kwargs)


def cct_14(*args, **kwargs) -> 'CCT':
    """CCT-14: 14 layers, 6 heads, mlp ratio 3, width 384. Keyword arguments as :func:`_cct` / :class:`CCT`."""
    return _cct(num_layers=14, num_heads=6, mlp_ratio=3, embedding_dim=384, *args, **kwargs)


def cct_16(*args, **kwargs) -> 'CCT':
    """CCT-16: 16 layers, 6 heads, mlp ratio 3, width 384. Keyword arguments as :func:`_cct` / :class:`CCT`."""
    return _cct(num_layers=16, num_heads=6, mlp_ratio=3, embedding_dim=384, *args, **kwargs)


def _cct(num_layers, num_heads, mlp_ratio, embedding_dim, kernel_size=3, stride=None, padding=None,
         *args, **kwargs) -> 'CCT':
    """Build a :class:`CCT`; ``stride`` defaults to max(1, kernel_size // 2 - 1), ``padding`` to
    max(1, kernel_size // 2) (e.g. 3x3 -> stride 1, padding 1; 7x7 -> stride 2, padding 3)."""
    stride = max(1, (kernel_size // 2) - 1) if stride is None else stride
    padding = max(1, (kernel_size // 2)) if padding is None else padding
    return CCT(num_layers=num_layers, num_heads=num_heads, mlp_ratio=mlp_ratio, embedding_dim=embedding_dim,
               kernel_size=kernel_size, stride=stride, padding=padding, *args, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# positional embedding

def sinusoidal_embedding(n_channels: int, dim: int) -> torch.Tensor:
    """Fixed sine/cosine table (1, n_channels, dim), float32: angle p / 10000**(2*(i//2)/dim), computed in
    float64 and rounded to float32, then sin on even and cos on odd columns (as the reference)."""
    pe = torch.tensor([[p / (10000 ** (2 * (i // 2) / dim)) for i in range(dim)] for p in range(n_channels)],
                      dtype=torch.float64).float()
    pe[:, 0::2] = torch.sin(pe[:, 0::2])
    pe[:, 1::2] = torch.cos(pe[:, 1::2])
    return pe.unsqueeze(0)


# ----------------------------------------------------------------------------------------------------------
# modules

class CCTAttention(nn.Module):
    """Multi-head self-attention without an inner norm: ``qkv`` (bias-free Linear) -> SDPA with scale
    (dim // num_heads)**-0.5 -> ``proj`` (Linear) -> Dropout. Shape (B, N, dim) -> (B, N, dim), float32.

    Raises:
        ValueError: ``dim`` not divisible by ``num_heads``.
    """

    def __init__(self, dim: int, num_heads: int = 8, attention_dropout: float = 0.1, projection_dropout: float = 0.1):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding_dim {dim} must be divisible by num_heads {num_heads}")
        self.heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.attention_dropout = attention_dropout
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(projection_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        p = self.attention_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=self.scale)
        return self.proj_drop(self.proj(merge_heads(out)))


class DropPath(nn.Module):
    """Stochastic depth per sample (training only; the identity in eval mode). Shape-preserving."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob <= 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        mask = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) < keep_prob
        return x.div(keep_prob) * mask.to(x.dtype)


class CCTEncoderLayer(nn.Module):
    """CCT encoder layer (``vit_pytorch.cct.TransformerEncoderLayer``): x = x + attn(pre_norm(x));
    x = norm1(x); x = x + linear2(gelu(linear1(x))), with dropouts and stochastic depth.

    Shape (B, N, d_model) -> (B, N, d_model), float32.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 attention_dropout: float = 0.1, drop_path_rate: float = 0.1):
        super().__init__()
        self.pre_norm = nn.LayerNorm(d_model)
        self.self_attn = CCTAttention(d_model, nhead, attention_dropout, dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout2 = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path_rate)
        self.activation = nn.GELU()

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        src = src + self.drop_path(self.self_attn(self.pre_norm(src)))
        src = self.norm1(src)
        src2 = self.linear2(self.dropout1(self.activation(self.linear1(src))))
        return src + self.drop_path(self.dropout2(src2))


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class Tokenizer(nn.Module):
    """Convolutional tokenizer: ``n_conv_layers`` x [Conv2d(bias=conv_bias) -> activation -> MaxPool2d],
    then (B, C, h, w) -> (B, h*w, C). Channels: n_input_channels -> in_planes ... -> n_output_channels.

    Input float32 (B, n_input_channels, H, W); output float32 (B, h*w, n_output_channels).
    """

    def __init__(self, kernel_size, stride, padding, pooling_kernel_size=3, pooling_stride=2, pooling_padding=1,
                 n_conv_layers=1, n_input_channels=3, n_output_channels=64, in_planes=64, activation=None,
                 max_pool=True, conv_bias=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.pooling = (pooling_kernel_size, pooling_stride, pooling_padding) if max_pool else None
        self.n_conv_layers = n_conv_layers
        chans = [n_input_channels] + [in_planes] * (n_conv_layers - 1) + [n_output_channels]
        self.conv_layers = nn.Sequential(*[
            nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=(kernel_size, kernel_size), stride=(stride, stride),
                          padding=(padding, padding), bias=conv_bias),
                nn.Identity() if activation is None else activation(),
                nn.MaxPool2d(kernel_size=pooling_kernel_size, stride=pooling_stride, padding=pooling_padding)
                if max_pool else nn.Identity(),
            )
            for c_in, c_out in zip(chans[:-1], chans[1:])
        ])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Feature-map size (h, w) for an (height, width) input, by conv / max-pool arithmetic.

        Raises:
            ValueError: a layer would produce an empty map, or max-pool padding exceeds half its kernel.
        """
        h, w = height, width
        for i in range(self.n_conv_layers):
            h, w = (_conv_out(s, self.kernel_size, self.stride, self.padding) for s in (h, w))
            if self.pooling is not None:
                pk, ps, pp = self.pooling
                if 2 * pp > pk:
                    raise ValueError(f"pooling_padding {pp} must be at most half of pooling_kernel_size {pk}")
                h, w = (_conv_out(s, pk, ps, pp) for s in (h, w))
            if h < 1 or w < 1:
                raise ValueError(f"image size {(height, width)} is too small for tokenizer layer {i} "
                                 f"(kernel {self.kernel_size}, stride {self.stride}, padding {self.padding})")
        return h, w

    def sequence_length(self, n_channels: int = 3, height: int = 224, width: int = 224) -> int:
        """Number of tokens for an (n_channels, height, width) input (computed, no forward pass)."""
        h, w = self.output_size(height, width)
        return h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_layers(x).flatten(2).transpose(1, 2)


class TransformerClassifier(nn.Module):
    """CCT's transformer with sequence pooling: (+ positional embedding) -> encoder layers -> LayerNorm ->
    attention pooling (softmax over tokens of ``attention_pool`` scores, weighted sum) -> ``fc``.

    Sequence pooling is always on (``vit_pytorch.cct.CCT`` passes ``seq_pool=True``).
    Input float32 (B, sequence_length, embedding_dim); output float32 (B, num_classes).

    Raises:
        ValueError: unknown ``positional_embedding``, or ``sequence_length`` missing for 'sine'/'learnable'.
    """

    def __init__(self, embedding_dim=768, num_layers=12, num_heads=12, mlp_ratio=4.0, num_classes=1000,
                 dropout_rate=0.1, attention_dropout=0.1, stochastic_depth_rate=0.1, positional_embedding='sine',
                 sequence_length=None):
        super().__init__()
        if positional_embedding not in ('sine', 'learnable', 'none'):
            raise ValueError(f"positional_embedding must be 'sine', 'learnable' or 'none', got {positional_embedding!r}")
        if sequence_length is None and positional_embedding != 'none':
            raise ValueError(f"positional_embedding is {positional_embedding!r} but no sequence_length was given")
        dim_feedforward = int(embedding_dim * mlp_ratio)
        self.embedding_dim = embedding_dim
        self.sequence_length = sequence_length

        self.attention_pool = nn.Linear(embedding_dim, 1)
        if positional_embedding == 'none':
            self.positional_emb = None
        elif positional_embedding == 'learnable':
            self.positional_emb = nn.Parameter(torch.zeros(1, sequence_length, embedding_dim))
            nn.init.trunc_normal_(self.positional_emb, std=0.2)
        else:
            self.positional_emb = nn.Parameter(sinusoidal_embedding(sequence_length, embedding_dim),
                                               requires_grad=False)
        self.dropout = nn.Dropout(p=dropout_rate)
        rates = torch.linspace(0, stochastic_depth_rate, num_layers, device="cpu").tolist()  # cpu: builds on meta too
        self.blocks = nn.ModuleList([
            CCTEncoderLayer(embedding_dim, num_heads, dim_feedforward, dropout_rate, attention_dropout, rate)
            for rate in rates
        ])
        self.norm = nn.LayerNorm(embedding_dim)
        self.fc = nn.Linear(embedding_dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.positional_emb is not None:
            x = x + self.positional_emb
        x = self.dropout(x)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        weights = self.attention_pool(x).softmax(dim=1)                   # B, N, 1
        x = torch.matmul(weights.transpose(1, 2), x).squeeze(1)           # B, dim
        return self.fc(x)


class CCT(nn.Module):
    """Compact Convolutional Transformer classifier: convolutional tokenizer + transformer with sequence
    pooling.

    Args (as ``vit_pytorch.cct.CCT``): img_size int or (H, W); embedding_dim; n_input_channels;
    n_conv_layers; kernel_size, stride, padding of the tokenizer convs (ReLU, no bias, 64 channels between
    conv layers); pooling_kernel_size, pooling_stride, pooling_padding of the max-pools; dropout_rate;
    attention_dropout; stochastic_depth_rate; keyword-only: num_layers, num_heads, mlp_ratio, num_classes,
    positional_embedding ('sine' fixed, 'learnable', or 'none').

    Input: float32 (B, n_input_channels, H, W) at the constructor's size (any size with
    positional_embedding='none'). Output: float32 logits (B, num_classes).
    ``forward`` raises ValueError for any other input (:func:`~vitedge.models.layers.check_image`).

    Raises:
        ValueError: unknown positional embedding, embedding_dim not divisible by num_heads, an image too
            small for the tokenizer, or max-pool padding above half its kernel.
    """

    def __init__(self, img_size=224, embedding_dim=768, n_input_channels=3, n_conv_layers=1, kernel_size=7,
                 stride=2, padding=3, pooling_kernel_size=3, pooling_stride=2, pooling_padding=1, dropout_rate=0.,
                 attention_dropout=0.1, stochastic_depth_rate=0.1, *, num_layers=12, num_heads=12, mlp_ratio=4.0,
                 num_classes=1000, positional_embedding='sine'):
        super().__init__()
        img_height, img_width = pair(img_size)
        self.image_size = (img_height, img_width)
        self.in_channels = n_input_channels
        self.tokenizer = Tokenizer(kernel_size=kernel_size, stride=stride, padding=padding,
                                   pooling_kernel_size=pooling_kernel_size, pooling_stride=pooling_stride,
                                   pooling_padding=pooling_padding, n_conv_layers=n_conv_layers,
                                   n_input_channels=n_input_channels, n_output_channels=embedding_dim,
                                   activation=nn.ReLU, max_pool=True, conv_bias=False)
        self.classifier = TransformerClassifier(
            embedding_dim=embedding_dim, num_layers=num_layers, num_heads=num_heads, mlp_ratio=mlp_ratio,
            num_classes=num_classes, dropout_rate=dropout_rate, attention_dropout=attention_dropout,
            stochastic_depth_rate=stochastic_depth_rate, positional_embedding=positional_embedding,
            sequence_length=self.tokenizer.sequence_length(n_input_channels, img_height, img_width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # with a position embedding the token grid is fixed: the constructor's size only (vit-pytorch also runs
        # any size giving the same token count, e.g. the transposed one, against the same embeddings)
        fixed = self.classifier.positional_emb is not None
        check_image(self, x, self.in_channels, self.image_size if fixed else None)
        return self.classifier(self.tokenizer(x))
