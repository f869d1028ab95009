"""ATS ViT (arXiv 2111.15667): relation to vit-pytorch's ``ats_vit.ViT``, determinism, static-shape export.

* Where sampling does not change anything (no layer has more tokens than its budget) the logits match the
  reference on real photos (<= 1e-5).
* The stochastic path (training, or eval with ``deterministic=False``) reproduces the reference draw for
  draw from the same RNG state: same kept token ids, same logits.
* The deterministic eval path is repeatable, batch-independent, and exports (TorchScript trace, ONNX dynamo
  with a dynamic batch) with parity on photos that keep different numbers of tokens.
* On a checkpoint trained on real data (scikit-learn digits), our deterministic eval agrees with the
  reference's stochastic eval about as well as two reference runs agree with each other
  (``benchmarks/ats_vs_reference.py`` runs the longer version and records the numbers).

The training and comparison helpers below are imported by the benchmark script.
"""
from __future__ import annotations

import time
import warnings

import pytest
import torch
import torch.nn.functional as F

from oracle import oracle
from vitedge.models.ats import ATSViT, fixed_quantile_sample

SMALL = dict(image_size=64, patch_size=8, num_classes=10, dim=64, depth=4, max_tokens_per_depth=(48, 32, 16, 8),
             heads=4, mlp_dim=128, dim_head=16)
# non-square image and patches: 8 x 8 = 64 patch tokens
EXPORT = dict(image_size=(32, 48), patch_size=(4, 6), num_classes=10, dim=32, depth=3,
              max_tokens_per_depth=(32, 16, 8), heads=2, mlp_dim=64, dim_head=16)
# the digits model of the fast test (the benchmark trains DIGITS_BENCH for longer)
DIGITS_TEST = dict(image_size=32, patch_size=4, num_classes=10, dim=32, depth=3, max_tokens_per_depth=(32, 16, 8),
                   heads=2, mlp_dim=64, dim_head=16)
DIGITS_BENCH = dict(image_size=32, patch_size=4, num_classes=10, dim=64, depth=4,
                    max_tokens_per_depth=(32, 16, 8, 4), heads=4, mlp_dim=128, dim_head=16)
# vit-pytorch README's ATS example (the reference has no paper preset)
README_EXAMPLE = dict(image_size=256, patch_size=16, num_classes=1000, dim=1024, depth=6,
                      max_tokens_per_depth=(256, 128, 64, 32, 16, 8), heads=16, mlp_dim=2048, dropout=0.1,
                      emb_dropout=0.1)


def _hw(kw):
    s = kw["image_size"]
    return s if isinstance(s, tuple) else (s, s)


def build_pair(kw, seed=0, sharpen=1.0):
    """Seeded reference and ours with the same weights (strict load), both in eval mode.

    ``sharpen`` scales every ``to_qkv`` weight so the random-init attention is peaky and the deterministic
    sampler keeps different numbers of tokens for different photos.
    """
    torch.manual_seed(seed)
    ref = oracle("ats_vit").ViT(**kw)
    with torch.no_grad():
        for attn, _ in ref.transformer.layers:
            attn.to_qkv.weight.mul_(sharpen)
    ours = ATSViT(**kw)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref.eval(), ours.eval()


def kept_counts(model, x):
    with torch.no_grad():
        _, ids = model(x, return_sampled_token_ids=True)
    return (ids >= 0).sum(1).tolist()


# -- (a) state_dict ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [SMALL, EXPORT], ids=["small", "non_square"])
def test_state_dict_matches_reference(kw):
    ref = oracle("ats_vit").ViT(**kw)
    ours = ATSViT(**kw)
    a, b = ref.state_dict(), ours.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    ours.load_state_dict(a, strict=True)
    ATSViT(**kw, deterministic=False).load_state_dict(a, strict=True)   # the extra kwarg adds no state


def test_invalid_arguments():
    base = dict(SMALL)
    with pytest.raises(ValueError, match="divisible"):
        ATSViT(**dict(base, image_size=60))
    with pytest.raises(ValueError, match="one entry per layer"):
        ATSViT(**dict(base, max_tokens_per_depth=(48, 32, 16)))
    with pytest.raises(ValueError, match="decreasing"):
        ATSViT(**dict(base, max_tokens_per_depth=(16, 32, 16, 8)))
    with pytest.raises(ValueError, match="at least 1"):
        ATSViT(**dict(base, max_tokens_per_depth=(48, 32, 16, 0)))


# -- (b) identical to the reference where sampling is irrelevant ---------------------------------------------

@pytest.mark.parametrize("kw", [
    dict(SMALL, max_tokens_per_depth=(64, 64, 64, 64)),                  # budget == token count: no sampling
    dict(SMALL, max_tokens_per_depth=(100, 80, 64, 64)),
    dict(EXPORT, max_tokens_per_depth=(64, 64, 64)),                     # non-square
], ids=["equal", "larger", "non_square"])
def test_matches_reference_when_nothing_is_sampled(kw, photo_batch):
    ref, ours = build_pair(kw)
    x = photo_batch(_hw(kw))
    with torch.no_grad():
        a, ia = ref(x, return_sampled_token_ids=True)
        b, ib = ours(x, return_sampled_token_ids=True)
    diff = (a - b).abs().max().item()
    print(f"max abs diff {diff:.3g}")
    assert a.std() > 1e-3 and diff <= 1e-5
    assert torch.equal(ia, ib) and ib.shape == (len(x), 64)


# -- the stochastic path is the reference, draw for draw ------------------------------------------------------

@pytest.mark.parametrize("kw", [SMALL, EXPORT], ids=["small", "non_square"])
def test_stochastic_eval_matches_reference_draw_for_draw(kw, photo_batch):
    ref, ours = build_pair(kw, sharpen=3.0)
    ours.deterministic = False
    x = photo_batch(_hw(kw))
    with torch.no_grad():
        for seed in range(4):
            torch.manual_seed(seed)
            a, ia = ref(x, return_sampled_token_ids=True)
            torch.manual_seed(seed)
            b, ib = ours(x, return_sampled_token_ids=True)
            assert (a - b).abs().max().item() <= 1e-5
            n = ia.shape[1]                               # the reference's padded length varies with the draw
            assert torch.equal(ib[:, :n], ia) and (ib[:, n:] == -1).all()


def test_training_mode_matches_reference_with_attention_dropout(photo_batch):
    """Train mode, attention dropout 0.2: same dropout masks and Gumbel draws, same logits and gradients.

    Exact while the attention matrices have the reference's shape: here the first layer keeps all 64
    tokens and the second samples 16 (afterwards the reference's padded length varies with the draw).
    """
    kw = dict(SMALL, depth=2, max_tokens_per_depth=(64, 16))
    ref, ours = build_pair(kw, sharpen=2.0)
    for attn, _ in ref.transformer.layers:
        attn.dropout.p = 0.2                              # attention dropout only (to_out / FF keep p = 0)
    for attn, _ in ours.transformer.layers:
        attn.attn_dropout = 0.2
    ref.train(), ours.train()
    x = photo_batch((64, 64))
    for seed in range(3):
        torch.manual_seed(seed)
        a = ref(x)
        torch.manual_seed(seed)
        b = ours(x)
        assert (a - b).abs().max().item() <= 1e-5
    a.square().sum().backward()
    b.square().sum().backward()
    ga, gb = dict(ref.named_parameters()), dict(ours.named_parameters())
    for k in ga:
        assert torch.allclose(ga[k].grad, gb[k].grad, atol=1e-5, rtol=1e-4), k


def test_training_mode_is_stochastic(photo_batch):
    _, ours = build_pair(SMALL, sharpen=3.0)
    ours.train()
    x = photo_batch((64, 64))
    with torch.no_grad():
        outs = [ours(x) for _ in range(3)]
    assert any((outs[0] - o).abs().max() > 1e-4 for o in outs[1:])


# -- (c) deterministic eval ---------------------------------------------------------------------------------

def test_deterministic_eval_is_repeatable_and_batch_independent(photo_batch):
    _, ours = build_pair(SMALL, sharpen=3.0)
    x = photo_batch((64, 64))
    with torch.no_grad():
        torch.manual_seed(0)
        a, ia = ours(x, return_sampled_token_ids=True)
        torch.manual_seed(1)
        b, ib = ours(x, return_sampled_token_ids=True)
        assert torch.equal(a, b) and torch.equal(ia, ib)
        for i in range(len(x)):                           # an image's result does not depend on its batch
            c, ic = ours(x[i:i + 1], return_sampled_token_ids=True)
            assert (c - a[i:i + 1]).abs().max().item() <= 1e-5 and torch.equal(ic, ia[i:i + 1])


def _naive_fixed_quantile(scores, valid, k):
    """Loop version: searchsorted on the CDF at (i + 0.5) / k, unique, keep-all when <= k valid tokens."""
    out = []
    m = scores.shape[1]
    for s, v in zip(scores, valid):
        if int(v.sum()) <= k:
            ids = torch.nonzero(v).flatten()
        else:
            cdf = s.double().cumsum(0)
            r = (torch.arange(k, dtype=torch.float64) + 0.5) / k * cdf[-1]
            ids = torch.unique(torch.searchsorted(cdf, r).clamp(max=m - 1))
            ids = ids[v[ids]]
        out.append(torch.cat([ids, torch.full((k - len(ids),), m)]))
    return torch.stack(out)


def test_fixed_quantile_sampler_matches_naive_searchsorted():
    g = torch.Generator().manual_seed(0)
    m, k = 40, 12
    for trial in range(20):
        scores = torch.rand(6, m, generator=g).pow(6)     # peaky: many duplicates
        n_valid = torch.randint(5, m + 1, (6,), generator=g)
        valid = torch.arange(m)[None] < n_valid[:, None]
        scores = scores * valid
        scores = scores / scores.sum(-1, keepdim=True)
        got = fixed_quantile_sample(scores, valid, k)
        assert torch.equal(got, _naive_fixed_quantile(scores, valid, k)), trial
        kept = got < m
        assert (kept.sum(1) >= 1).all()
        assert (got[:, 1:][kept[:, 1:]] > got[:, :-1][kept[:, 1:]]).all()   # ascending, distinct


# -- (e) sampled token ids ----------------------------------------------------------------------------------

def test_sampled_token_ids_are_padded_with_minus_one(photo_batch):
    _, ours = build_pair(SMALL, sharpen=3.0)
    x = photo_batch((64, 64))
    with torch.no_grad():
        logits, ids = ours(x, return_sampled_token_ids=True)
    assert ours.num_output_tokens == 8
    assert logits.shape == (8, 10) and ids.shape == (8, 8) and ids.dtype == torch.int64
    n = (ids >= 0).sum(1)
    assert len(set(n.tolist())) > 1, "photos should keep different numbers of tokens"
    for row, c in zip(ids, n):
        assert (row[c:] == -1).all() and (row[:c] >= 0).all() and (row[:c] < 64).all()
        assert (row[1:c] > row[:c - 1]).all()             # ascending, distinct patch indices


# -- (d) export ----------------------------------------------------------------------------------------------

class WithTokenIds(torch.nn.Module):
    """``model(x, return_sampled_token_ids=True)`` as a one-input module (for tracing)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, return_sampled_token_ids=True)


def test_trace_parity_when_kept_token_count_changes(photo_batch):
    """A trace taken at batch 2 reproduces eager for single photos and a batch of 8 with other token counts."""
    _, ours = build_pair(EXPORT, sharpen=3.0)
    x = photo_batch(_hw(EXPORT))
    counts = kept_counts(ours, x)
    assert len(set(counts)) > 1, counts
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning, TorchScript deprecation
        traced = torch.jit.trace(ours, x[:2], check_trace=False)
        assert (traced(x) - ours(x)).abs().max().item() <= 1e-5
        for i in range(len(x)):
            assert (traced(x[i:i + 1]) - ours(x[i:i + 1])).abs().max().item() <= 1e-5, (i, counts[i])
        traced_ids = torch.jit.trace(WithTokenIds(ours), x[:2], check_trace=False)
        for i in (0, 3, 5):
            assert torch.equal(traced_ids(x[i:i + 1])[1], ours(x[i:i + 1], return_sampled_token_ids=True)[1])


def test_stochastic_mode_refuses_to_trace_or_export(photo_batch):
    _, ours = build_pair(EXPORT, sharpen=3.0)
    ours.deterministic = False
    x = photo_batch(_hw(EXPORT))[:2]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="deterministic=True"):
            torch.jit.trace(ours, x, check_trace=False)
        with pytest.raises(RuntimeError, match="deterministic=True"):
            torch.export.export(ours, (x,))


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
def test_export_dynamic_batch(target, tmp_path, photo_batch):
    import vitedge.data
    import vitedge.export
    _, ours = build_pair(EXPORT, sharpen=3.0)
    hw = _hw(EXPORT)
    assert len(set(kept_counts(ours, photo_batch(hw)))) > 1
    art = vitedge.export.export(ours, torch.zeros(2, 3, *hw), target, tmp_path / target,
                                preprocessing=vitedge.data.make_preprocessing(hw))
    parity = art.manifest["parity"]
    for b in (1, 3, 8):
        assert parity[f"batch_{b}"]["max_abs"] <= 1e-4 and parity[f"batch_{b}"]["top1_agreement"] == 1.0
    assert art.manifest["inputs"][0]["shape"] == [-1, 3, *hw]
    if target == "onnx":
        assert "dynamo" in art.manifest["export"]["method"] and "legacy" not in art.manifest["export"]["method"]


# -- (f) trained on real data: deterministic eval vs the reference's stochastic eval --------------------------

def digits_split(size: int = 32):
    """scikit-learn's digits, 8x8 upsampled (bilinear) to size x size, 3 channels, in [-1, 1].

    Returns (x_train, y_train, x_test, y_test): float32 (N, 3, size, size) and int64 (N,); a fixed, stratified
    75/25 split (random_state=0): 1347 train, 450 test images.
    """
    datasets = pytest.importorskip("sklearn.datasets")
    from sklearn.model_selection import train_test_split
    d = datasets.load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = ((x - 0.5) / 0.5).repeat(1, 3, 1, 1).contiguous()
    y = torch.tensor(d.target, dtype=torch.int64)
    tr, te = train_test_split(torch.arange(len(y)).numpy(), test_size=0.25, random_state=0, stratify=d.target)
    return x[tr], y[tr], x[te], y[te]


def train_digits_ats(kw: dict, steps: int, seed: int = 0, batch: int = 64, lr: float = 3e-3,
                     threads: int = 1) -> tuple[ATSViT, dict]:
    """Train ``ATSViT(**kw)`` on the digits train split in train mode (the reference's stochastic sampling).

    AdamW (weight decay 0.05) with a one-cycle schedule, ``steps`` steps of ``batch`` images, seeded.
    Returns (model in eval mode, info with the wall time and final loss).
    """
    xtr, ytr, _, _ = digits_split(kw["image_size"])
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = ATSViT(**kw)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
        g = torch.Generator().manual_seed(seed)
        model.train()
        t0, step, loss = time.perf_counter(), 0, torch.tensor(float("nan"))
        while step < steps:
            perm = torch.randperm(len(ytr), generator=g)
            for i in range(0, len(perm) - batch + 1, batch):
                idx = perm[i:i + batch]
                loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if step >= steps:
                    break
        info = {"steps": steps, "batch": batch, "train_seconds": round(time.perf_counter() - t0, 1),
                "final_loss": round(loss.item(), 4), "threads": threads}
    finally:
        torch.set_num_threads(old_threads)
    return model.eval(), info


def compare_with_reference(model: ATSViT, kw: dict, runs: int = 5, seed: int = 1000) -> dict:
    """Deterministic eval of ``model`` vs ``runs`` stochastic evals of the reference with the same weights.

    On the digits test split: top-1 accuracy of each, top-1 agreement ours-vs-reference (per reference run)
    and reference-vs-reference (all pairs: the reference's own run-to-run agreement), the same model with
    no sampling at all (every budget = number of patches), and the mean number of tokens the last layer keeps.
    """
    _, _, x, y = digits_split(kw["image_size"])
    ref = oracle("ats_vit").ViT(**kw).eval()
    ref.load_state_dict(model.state_dict(), strict=True)
    n_patches = model.num_patches
    full = ATSViT(**dict(kw, max_tokens_per_depth=(n_patches,) * kw["depth"])).eval()
    full.load_state_dict(model.state_dict(), strict=True)
    model = model.eval()
    with torch.no_grad():
        logits, ids = model(x, return_sampled_token_ids=True)
        ours = logits.argmax(1)
        pf = full(x).argmax(1)
        refs, ref_kept = [], []
        for r in range(runs):
            torch.manual_seed(seed + r)
            rl, rids = ref(x, return_sampled_token_ids=True)
            refs.append(rl.argmax(1))
            ref_kept.append((rids >= 0).sum(1).float().mean().item())

    def acc(p):
        return (p == y).float().mean().item()

    def agree(p, q):
        return (p == q).float().mean().item()

    agreements = [agree(ours, p) for p in refs]
    pairs = [agree(refs[i], refs[j]) for i in range(runs) for j in range(i + 1, runs)]
    res = {
        "test_images": len(y),
        "reference_runs": runs,
        "accuracy_ours_deterministic": acc(ours),
        "accuracy_reference_stochastic_mean": sum(map(acc, refs)) / runs,
        "accuracy_reference_stochastic_min": min(map(acc, refs)),
        "accuracy_reference_stochastic_max": max(map(acc, refs)),
        "accuracy_no_sampling": acc(pf),
        "agreement_ours_vs_reference_mean": sum(agreements) / runs,
        "agreement_ours_vs_reference_min": min(agreements),
        "agreement_reference_vs_reference_mean": sum(pairs) / len(pairs),
        "agreement_ours_vs_no_sampling": agree(ours, pf),
        "agreement_reference_vs_no_sampling_mean": sum(agree(p, pf) for p in refs) / runs,
        "last_layer_kept_tokens_ours_mean": (ids >= 0).sum(1).float().mean().item(),
        "last_layer_kept_tokens_reference_mean": sum(ref_kept) / runs,
        "last_layer_budget": kw["max_tokens_per_depth"][-1],
    }
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}


def test_trained_on_digits_agrees_with_reference():
    """~13 s of training (one thread). Measured: accuracy ours 0.940, reference 0.925 (mean of 3 runs), no
    sampling 0.922; top-1 agreement ours-vs-reference 0.967, reference-vs-reference 0.955."""
    model, info = train_digits_ats(DIGITS_TEST, steps=400, batch=32, lr=5e-3)
    res = compare_with_reference(model, DIGITS_TEST, runs=3)
    print(info, res)
    assert res["accuracy_no_sampling"] >= 0.85
    assert res["accuracy_ours_deterministic"] >= 0.85
    assert res["agreement_ours_vs_reference_mean"] >= 0.9
    assert res["agreement_ours_vs_reference_mean"] >= res["agreement_reference_vs_reference_mean"] - 0.03


# -- slow: the reference's README configuration at full size ---------------------------------------------------

@pytest.mark.slow
def test_readme_example_full_size(photo_batch):
    ref, ours = build_pair(README_EXAMPLE)
    n = sum(p.numel() for p in ours.parameters())
    print(f"README example: {n} params")
    x = photo_batch((256, 256))
    ours.deterministic = False
    with torch.no_grad():
        torch.manual_seed(0)
        a = ref(x)
        torch.manual_seed(0)
        b = ours(x)
        assert (a - b).abs().max().item() <= 1e-5
        ours.deterministic = True
        c, ids = ours(x, return_sampled_token_ids=True)
        assert torch.isfinite(c).all() and ids.shape == (8, 8)
        assert torch.equal(ours(x), c)
