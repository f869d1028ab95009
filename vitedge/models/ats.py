"""Adaptive Token Sampling ViT (Fayyaz et al., "Adaptive Token Sampling For Efficient Vision Transformers",
ECCV 2022, arXiv 2111.15667), as a deterministic, fixed-capacity, exportable variant.

Constructor- and ``state_dict``-compatible with ``vit_pytorch.ats_vit.ViT`` (vit-pytorch 1.x): the same
keyword arguments (``max_tokens_per_depth`` included), the same parameter names and shapes (strict load),
``forward(img, return_sampled_token_ids=False)``.

What is identical to the reference: the weights, the attention math (pre-norm multi-head attention, padded
tokens masked out as keys), the significance scores (the CLS token's attention to each token times the
L2 norm of that token's value, summed over heads, normalised to 1), which layers may sample (a layer
samples only when it holds more than ``max_tokens_per_depth[i]`` non-CLS tokens), the token bookkeeping
(sampled tokens carry their residual and their rows of the attention; duplicates are removed; the kept ids
are sorted ascending and padded on the right; padded slots report id -1).

What differs is *which* tokens are sampled, and only in eval mode with ``deterministic=True`` (the default):

* **Reference** (vit-pytorch): Gumbel-max sampling, K = ``max_tokens_per_depth[i]`` i.i.d. draws from the
  categorical distribution of the scores, with fresh ``uniform_`` noise on every call, even in eval; the
  number of kept tokens (and so the tensor shapes) depends on the draws and on the other images of the batch.
* **Here, deterministic**: inverse-transform sampling with fixed, stratified quantiles. The CDF of the scores
  is built over the non-CLS tokens in their current (ascending token id) order; the quantiles are the K
  mid-points ``r_i = (i + 0.5) / K``, i = 0..K-1 (our choice: the paper's official code uses a related fixed,
  evenly spaced grid on score-sorted tokens with nearest-CDF matching); quantile ``r_i`` picks the first
  token whose CDF value is >= ``r_i * total`` (a count of CDF values below it: ``searchsorted`` without a
  ``searchsorted`` op, so it exports to any runtime). The picks come out sorted, so duplicates are
  neighbours: a duplicate becomes a padding slot, and one sort moves the padding to the end. Every layer
  that samples therefore outputs exactly ``1 + K`` slots (CLS + K) with a boolean mask; padded slots are
  masked out of attention (boolean ``attn_mask`` of SDPA) and out of the next layer's sampling (their score
  is exactly 0, so no quantile lands on them). When an image has no more than K valid tokens left, it keeps
  them all (per image, so an image's result does not depend on its batch; the reference decides this once
  for the whole batch from its padded length). Everything is static: the graph traces and exports with a
  dynamic batch, and gives the same tokens on every run.

  Every token whose score mass is >= 1/K is always kept (i.i.d. sampling keeps it only with probability
  >= 1 - (1 - 1/K)^K ~ 63%), and the stratified picks cover the distribution evenly, so this variant usually
  keeps *more* distinct tokens than the reference does for the same K.

* **Training mode** (and eval with ``deterministic=False``): the reference's stochastic Gumbel-max sampling,
  draw for draw. The noise is drawn with the reference's shape and call (``torch.empty(B, K, n).uniform_``
  with n the reference's padded token count), so from the same RNG state this path picks the same tokens
  and gives the same logits as ``vit_pytorch.ats_vit.ViT`` (tested). This path reads n from the data (one
  host sync per sampling layer) and is not meant for export. With attention dropout > 0 in training, the
  attention matrix is computed explicitly (the scores use the dropped-out attention, as in the reference);
  the dropout masks then come from a different RNG stream than the reference's (ours covers the fixed
  capacity), same distribution.

Measured relation to the reference on real data (``benchmarks/ats_vs_reference.py``, results in
``benchmarks/results/ats_vs_reference.json``): a tiny ATS ViT (32x32 input, patch 4 -> 64 tokens, dim 64, depth
4, ``max_tokens_per_depth=(32, 16, 8, 4)``) trained 600 steps (77 s, one thread) in train mode on scikit-learn's
digits (8x8 upsampled to 32x32, stratified 75/25 split), evaluated on the 450 held-out digits, the reference
run 10 times:

* top-1 accuracy: ours (deterministic) 0.973; reference (stochastic) 0.971 mean, 0.962-0.978 over the runs;
  the same weights without any token sampling 0.969;
* top-1 agreement: ours vs reference 0.984 mean (0.976 worst run); reference vs reference (run to run) 0.986;
* tokens kept by the last layer (budget 4): ours 3.75, reference 2.50 (means).

So the deterministic variant agrees with the reference as closely as the reference agrees with itself, is as
accurate, and keeps more tokens for the same budget (the compute is that of the fixed capacity anyway).
The fast test (``tests/models/test_ats.py``, a smaller model trained 400 steps) measured accuracy 0.940 (ours) vs
0.925 (reference, 3 runs) and agreement 0.967 (ours vs reference) vs 0.955 (reference vs reference).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FeedForward, check_image, merge_heads, patch_grid, split_heads
from .vit import linear_patch_embedding

__all__ = ["ATSViT", "ATSAttention", "ATSTransformer", "fixed_quantile_sample", "gumbel_sample"]

EPS = 1e-6  # the reference's eps (score normalisation, log, Gumbel noise)


def _log(t: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    return torch.log(t + eps)


def _is_exporting() -> bool:
    f = getattr(torch.compiler, "is_exporting", None)
    return bool(f()) if f is not None else False


def fixed_quantile_sample(scores: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """Deterministic inverse-transform sampling of at most ``k`` distinct tokens, static shapes.

    Args:
        scores: float (B, M) non-negative significance scores of the non-CLS tokens (0 on padding).
        valid: bool (B, M), True on real tokens; the valid tokens must form a prefix of each row (they do:
            sampled ids are compacted to the front).
        k: number of quantiles (the layer's ``max_tokens_per_depth`` entry), 1 <= k < M.
    Returns:
        int64 (B, k): the picked token positions in [0, M), distinct and ascending, then ``M`` for padding.
    """
    m = scores.shape[-1]
    cdf = scores.cumsum(-1)                                                     # B, M (non-decreasing)
    r = (torch.arange(k, device=scores.device, dtype=scores.dtype) + 0.5) / k  # fixed mid-point quantiles
    target = r * cdf[:, -1:]                                                   # B, k
    # first position whose CDF reaches the target = number of CDF values below it (a searchsorted)
    idx = (cdf.unsqueeze(1) < target.unsqueeze(-1)).sum(-1).clamp(max=m - 1)   # B, k, ascending
    keep = valid.gather(1, idx)
    dup = F.pad(idx[:, 1:] == idx[:, :-1], (1, 0), value=False)                # equal to the previous pick
    key = torch.where(keep & ~dup, idx, torch.full_like(idx, m))
    key = key.sort(dim=-1).values                                              # padding (m) to the end
    # an image with <= k valid tokens keeps them all (they are the first k slots)
    first = torch.arange(k, device=idx.device).expand_as(key)
    first = torch.where(valid[:, :k], first, torch.full_like(first, m))
    keep_all = valid.sum(-1, keepdim=True) <= k
    return torch.where(keep_all, first, key)


def gumbel_sample(scores: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """The reference's stochastic sampler (Gumbel-max over log scores, ``k`` draws, duplicates removed).

    Same inputs and output format as :func:`fixed_quantile_sample`. Draws ``torch.empty(B, k, n).uniform_``
    with n the largest number of valid tokens in the batch (the reference's padded length), exactly as
    ``vit_pytorch.ats_vit.AdaptiveTokenSampling`` does, so the same RNG state gives the same picks; when
    n <= k the reference does not sample (and draws nothing), and every image keeps all its tokens.
    Reads n from the data: not for export (raises RuntimeError under ``torch.jit.trace`` / ``torch.export``).
    """
    if torch.jit.is_tracing() or _is_exporting():
        raise RuntimeError("stochastic ATS sampling (training mode, or deterministic=False) has data-dependent "
                           "shapes and cannot be traced or exported; export the model in eval mode with "
                           "deterministic=True")
    b, m = scores.shape
    n = int(valid.sum(-1).max())
    if n <= k:
        first = torch.arange(k, device=scores.device).expand(b, k)
        return torch.where(valid[:, :k], first, torch.full_like(first, m))
    logits = _log(scores[:, :n]).masked_fill(~valid[:, :n], -torch.finfo(scores.dtype).max / 2)
    u = torch.empty((b, k, n), device=scores.device, dtype=scores.dtype).uniform_(0, 1)
    noise = -_log(-_log(u))
    idx = (logits.unsqueeze(1) + noise).argmax(-1).sort(dim=-1).values         # B, k
    dup = F.pad(idx[:, 1:] == idx[:, :-1], (1, 0), value=False)
    key = torch.where(dup, torch.full_like(idx, m), idx)
    return key.sort(dim=-1).values


class ATSAttention(nn.Module):
    """Pre-norm multi-head attention followed by adaptive token sampling of its output tokens.

    Parameter names as ``vit_pytorch.ats_vit.Attention`` (``norm``, ``to_qkv``, ``to_out.0``).

    Args:
        dim, heads, dim_head, dropout: as the reference.
        output_num_tokens: K, the most non-CLS tokens this layer outputs.
        input_capacity: the number of non-CLS token slots this layer receives (static); the layer samples
            only when it exceeds K (the reference samples when its current token count exceeds K).

    ``forward(x, mask, token_ids, stochastic)``: x float (B, 1 + input_capacity, dim), mask bool (B, 1 +
    input_capacity) (slot 0 = CLS, always True), token_ids int64 (B, 1 + input_capacity) (0 = CLS / padding,
    p + 1 = patch p). Returns (attention output, residual x, mask, token_ids), each with 1 +
    ``output_capacity`` slots.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float, output_num_tokens: int,
                 input_capacity: int):
        super().__init__()
        inner_dim = heads * dim_head
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.attn_dropout = dropout
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(dropout))
        self.output_num_tokens = output_num_tokens
        self.input_capacity = input_capacity
        self.samples = input_capacity > output_num_tokens
        self.output_capacity = output_num_tokens if self.samples else input_capacity

    def forward(self, x: torch.Tensor, mask: torch.Tensor, token_ids: torch.Tensor, stochastic: bool):
        q, k, v = (split_heads(t, self.heads) for t in self.to_qkv(self.norm(x)).chunk(3, dim=-1))  # B, h, N, d
        key_mask = mask[:, None, None, :]                                                           # B, 1, 1, N
        explicit = self.training and self.attn_dropout > 0
        neg = -torch.finfo(q.dtype).max
        attn = None
        if explicit:   # the reference's order: softmax, dropout, then scores from the dropped-out attention
            dots = (q @ k.transpose(-1, -2) * self.scale).masked_fill(~key_mask, neg)
            attn = F.dropout(dots.softmax(-1), self.attn_dropout, training=True)
            cls_attn = attn[:, :, 0, 1:]
        elif self.samples:
            dots = (q[:, :, :1] @ k.transpose(-1, -2) * self.scale).masked_fill(~key_mask, neg)
            cls_attn = dots.softmax(-1)[:, :, 0, 1:]                                                # B, h, N-1

        if self.samples:
            scores = (cls_attn * v[:, :, 1:].norm(dim=-1)).sum(1)                                   # B, N-1
            scores = scores / (scores.sum(-1, keepdim=True) + EPS)
            valid = mask[:, 1:]
            sampler = gumbel_sample if stochastic else fixed_quantile_sample
            key = sampler(scores, valid, self.output_num_tokens)                                    # B, K
            kept = key < self.input_capacity
            sel = torch.where(kept, key + 1, torch.zeros_like(key))     # slot to gather; padding -> slot 0
            sel = F.pad(sel, (1, 0), value=0)                           # CLS first: B, 1+K
            mask = F.pad(kept, (1, 0), value=True)
            x = x.gather(1, sel.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            token_ids = token_ids.gather(1, sel)
            rows = sel[:, None, :, None]
            if explicit:
                attn = attn.gather(2, rows.expand(-1, attn.shape[1], -1, attn.shape[-1]))
            else:
                q = q.gather(2, rows.expand(-1, q.shape[1], -1, q.shape[-1]))

        if explicit:
            out = attn @ v
        else:
            p = self.attn_dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=p, scale=self.scale)
        return self.to_out(merge_heads(out)), x, mask, token_ids


class ATSTransformer(nn.Module):
    """``depth`` residual (ATSAttention, FeedForward) pairs; no final norm (as ``vit_pytorch.ats_vit.Transformer``).

    ``num_patches`` (keyword): the number of patch tokens the first layer receives (static capacity).
    ``forward(x, stochastic)``: x float (B, 1 + num_patches, dim) -> (x (B, 1 + C, dim), token_ids int64
    (B, 1 + C)), C = the static output capacity (``self.output_capacity``).

    Raises:
        ValueError: ``max_tokens_per_depth`` is not ``depth`` long, not non-increasing, or has an entry < 1.
    """

    def __init__(self, dim: int, depth: int, max_tokens_per_depth, heads: int, dim_head: int, mlp_dim: int,
                 dropout: float = 0.0, *, num_patches: int):
        super().__init__()
        max_tokens = tuple(max_tokens_per_depth)
        if len(max_tokens) != depth:
            raise ValueError(f"max_tokens_per_depth must have one entry per layer (depth={depth}), got {max_tokens}")
        if sorted(max_tokens, reverse=True) != list(max_tokens):
            raise ValueError(f"max_tokens_per_depth must be in decreasing order, got {max_tokens}")
        if min(max_tokens) < 1:
            raise ValueError(f"max_tokens_per_depth must keep at least 1 token at every layer, got {max_tokens}")
        capacity = num_patches
        layers = []
        for k in max_tokens:
            attn = ATSAttention(dim, heads, dim_head, dropout, k, capacity)
            capacity = attn.output_capacity
            layers.append(nn.ModuleList([attn, FeedForward(dim, mlp_dim, dropout)]))
        self.layers = nn.ModuleList(layers)
        self.output_capacity = capacity

    def forward(self, x: torch.Tensor, stochastic: bool = False):
        mask = torch.ones_like(x[..., 0], dtype=torch.bool)                                  # B, N
        token_ids = torch.arange(x.shape[1], device=x.device).expand_as(mask)               # B, N
        for attn, ff in self.layers:
            out, x, mask, token_ids = attn(x, mask, token_ids, stochastic)
            x = x + out
            x = ff(x) + x
        return x, token_ids


class ATSViT(nn.Module):
    """ViT with Adaptive Token Sampling (Fayyaz et al. 2022, arXiv 2111.15667), deterministic when deployed.

    Args (as ``vit_pytorch.ats_vit.ViT``, all keyword-only): image_size int or (H, W); patch_size int or
    (ph, pw) dividing it; num_classes; dim; depth; max_tokens_per_depth (``depth`` non-increasing ints: the
    most non-CLS tokens each layer outputs); heads; mlp_dim; channels=3; dim_head=64; dropout=0.;
    emb_dropout=0.
    Extra keyword: deterministic=True: in eval mode use fixed-quantile sampling (static shapes, exportable,
    same tokens every run); False reproduces the reference's stochastic eval. Training mode always samples
    stochastically as the reference does. A plain attribute (not in the ``state_dict``); can be changed
    after construction.

    ``forward(img, return_sampled_token_ids=False)``: img float32 (B, channels, H, W) at the constructor's
    size -> logits float32 (B, num_classes); with ``return_sampled_token_ids`` also the ids int64 (B, C) of the
    patches kept by the last layer (ascending, 0-based patch index, -1 = padding), C =
    ``self.num_output_tokens`` (the last sampling layer's K, or num_patches if no layer samples).

    Raises:
        ValueError: image size not divisible by the patch size, or a bad ``max_tokens_per_depth``; in
            ``forward``, an input that is not (B, channels, H, W) at the constructor's size
            (:func:`~vitedge.models.layers.check_image`).
        RuntimeError: traced (``torch.jit.trace``) or exported (``torch.export`` / ONNX dynamo) while sampling
            stochastically (training mode or ``deterministic=False``).
    """

    def __init__(self, *, image_size, patch_size, num_classes, dim, depth, max_tokens_per_depth, heads, mlp_dim,
                 channels=3, dim_head=64, dropout=0., emb_dropout=0., deterministic=True):
        super().__init__()
        self.image_size, self.patch_size, (nh, nw) = patch_grid(image_size, patch_size)
        num_patches = nh * nw
        self.deterministic = bool(deterministic)
        self.in_channels = channels

        self.to_patch_embedding = linear_patch_embedding(channels, self.image_size, self.patch_size, dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(emb_dropout)
        self.transformer = ATSTransformer(dim, depth, max_tokens_per_depth, heads, dim_head, mlp_dim, dropout,
                                          num_patches=num_patches)
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))
        self.num_patches = num_patches
        self.num_output_tokens = self.transformer.output_capacity

    def forward(self, img: torch.Tensor, return_sampled_token_ids: bool = False):
        check_image(self, img, self.in_channels, self.image_size)
        x = self.to_patch_embedding(img)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = self.dropout(torch.cat((cls, x), dim=1) + self.pos_embedding)
        x, token_ids = self.transformer(x, self.training or not self.deterministic)
        logits = self.mlp_head(x[:, 0])
        if return_sampled_token_ids:
            return logits, token_ids[:, 1:] - 1
        return logits
