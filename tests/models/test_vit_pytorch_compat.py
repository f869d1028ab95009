"""vit-pytorch's own wrappers on vitedge models, and the input checks (issue 21, "Drop-in for vit-pytorch users").

* ``Recorder`` / ``Extractor`` / ``DistillWrapper`` from vit-pytorch (through the oracle loader) wrap vitedge
  models: on every family, ours does what the wrapper does on the vit-pytorch model loaded with the same
  ``state_dict`` (same outputs to 1e-5 on real photos where vit-pytorch's works, the same exception type where
  it does not), plus the usage examples of vit-pytorch's README.
* The classes those wrappers test with ``isinstance`` derive from vit-pytorch's (``compat_base``) without a
  single parameter from it; ``VITEDGE_VIT_PYTORCH_COMPAT=0`` turns that off; a fake ``vit_pytorch`` package is
  registered only where the real one does not import.
* Every family refuses an input it cannot take with a one-line ``ValueError`` naming the model and both sizes,
  and the families that read their size from the input accept what vit-pytorch accepts, with its outputs.
"""
from __future__ import annotations

import sys
import warnings

import pytest
import torch
from torch import nn

from oracle import oracle
from helpers import SMALL, oracle_kwargs as _oracle_kwargs
from vitedge.data import digits_batch, digits_split, make_preprocessing
from vitedge.models import upstream
from vitedge.models.cct import CCT
from vitedge.models.distill import DistillableViT
from vitedge.models.layers import Attention, hooked
from vitedge.models.t2t import T2TViT
from vitedge.models.vit import ViT
from vitedge.models.zoo import FAMILIES, family_class, size_arg

VIT = dict(image_size=(32, 48), patch_size=(8, 16), num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64, dim_head=8)


def _pair(family: str, kw: dict | None = None):
    """Seeded vit-pytorch model of ``family`` (SMALL config unless ``kw``) and ours with its state_dict, eval."""
    mod, cls, small_kw, _ = SMALL[family]
    kw = _oracle_kwargs(family, small_kw if kw is None else kw)
    torch.manual_seed(0)
    ref = getattr(oracle(mod), cls)(**kw).eval()
    ours = family_class(family)(**kw).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _run(wrapper, x):
    """(output, None) or (None, exception) of ``wrapper(x)`` without grad."""
    try:
        with torch.no_grad():
            return wrapper(x), None
    except Exception as e:  # noqa: BLE001 - compared with the reference's
        return None, e


def _close(a, b, atol=1e-5):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(_close(p, q, atol) for p, q in zip(a, b))
    return a.shape == b.shape and a.dtype == b.dtype and torch.allclose(a, b, atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Recorder and Extractor on every family, against vit-pytorch's model with the same weights


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("wrapper", ["recorder", "extractor"])
def test_wrapper_like_vit_pytorch(wrapper, family, photo_batch):
    """vit-pytorch's Recorder (attention maps) / Extractor (transformer output) on our model == on its own
    (photos); where vit-pytorch's model has no ``transformer`` the wrapper fails on both the same way."""
    ref, ours = _pair(family)
    cls = oracle(wrapper).Recorder if wrapper == "recorder" else oracle(wrapper).Extractor
    x = photo_batch(SMALL[family][3], 3)
    (want, err_ref), (got, err) = _run(cls(ref), x), _run(cls(ours), x)
    if err_ref is not None:
        assert type(err) is type(err_ref), (err_ref, err)
        return
    assert err is None, err
    assert _close(want[0], got[0]), "predictions differ"
    assert _close(want[1], got[1]), f"{wrapper} outputs differ"


# where vit-pytorch's Recorder finds attention (its ``vit.Attention`` under ``transformer``): the families whose
# transformer is vitedge's layers.Transformer
RECORDED = {"vit": 2, "distillable_vit": 2, "t2t": 2}


@pytest.mark.parametrize("family", sorted(RECORDED))
def test_recorder_shapes_and_eject(family, photo_batch):
    """(B, layers, heads, N, N) maps whose rows sum to 1; after ``eject()`` the hooks are gone and the model is
    back on its fast path with the same logits."""
    _, ours = _pair(family)
    x = photo_batch(SMALL[family][3], 2)
    with torch.no_grad():
        plain = ours(x)
        rec = oracle("recorder").Recorder(ours)
        logits, attns = rec(x)
    n = ours.pos_embedding.shape[-2]  # tokens: (N, dim) in ViT, (1, N, dim) in T2T
    heads = ours.transformer.layers[0][0].heads
    assert attns.shape == (2, RECORDED[family], heads, n, n)
    assert torch.allclose(attns.sum(-1), torch.ones(()), atol=1e-5)
    assert torch.allclose(logits, plain, atol=1e-5)
    assert rec.eject() is ours and not hooked(ours)
    with torch.no_grad():
        assert torch.equal(ours(x), plain)


def test_readme_recorder_extractor_example_small(photo_batch):
    """vit-pytorch README "attention maps" / "embeddings" examples at a smaller width (the full one is slow)."""
    Recorder, Extractor = oracle("recorder").Recorder, oracle("extractor").Extractor
    torch.manual_seed(0)
    v = ViT(image_size=64, patch_size=16, num_classes=1000, dim=64, depth=3, heads=4, mlp_dim=128, dropout=0.1,
            emb_dropout=0.1)
    img = photo_batch((64, 64), 1)
    v = Recorder(v)
    preds, attns = v(img)
    assert preds.shape == (1, 1000) and attns.shape == (1, 3, 4, 17, 17)  # one extra token: the CLS token
    v = v.eject()
    assert isinstance(v, ViT) and not hooked(v)
    v = Extractor(v)
    logits, embeddings = v(img)
    assert logits.shape == (1, 1000) and embeddings.shape == (1, 17, 64)


@pytest.mark.slow
def test_readme_recorder_extractor_example_full_size():
    """The README's examples verbatim (dim 1024, depth 6, 16 heads, 256x256; about 40M parameters)."""
    Recorder, Extractor = oracle("recorder").Recorder, oracle("extractor").Extractor
    kw = dict(image_size=256, patch_size=32, num_classes=1000, dim=1024, depth=6, heads=16, mlp_dim=2048,
              dropout=0.1, emb_dropout=0.1)
    img = torch.randn(1, 3, 256, 256)
    preds, attns = Recorder(ViT(**kw))(img)
    assert preds.shape == (1, 1000) and attns.shape == (1, 6, 16, 65, 65)
    logits, embeddings = Extractor(ViT(**kw))(img)
    assert logits.shape == (1, 1000) and embeddings.shape == (1, 65, 1024)


@pytest.mark.parametrize("options", [dict(layer_save_input=True), dict(return_embeddings_only=True), "last_ff"])
def test_extractor_options(options, photo_batch):
    """Extractor's other modes on ViT (class-token head): the transformer's input, embeddings only, and a hook
    on the last block's MLP (which the class-token shortcut would otherwise run on one token)."""
    Extractor = oracle("extractor").Extractor
    ref, ours = _pair("vit")
    x = photo_batch(SMALL["vit"][3], 2)
    make = (lambda m: Extractor(m, layer=m.transformer.layers[-1][1])) if options == "last_ff" else \
        (lambda m: Extractor(m, **options))
    want, got = _run(make(ref), x)[0], _run(make(ours), x)[0]
    assert _close(want, got)


def test_hooks_switch_the_fast_paths(photo_batch):
    """No hook: the class-token shortcut and SDPA (``attend`` is never called). A hook anywhere in the transformer
    switches the shortcut off; a hook on ``attend`` switches SDPA off in that layer only. Global module hooks
    (FlopCounterMode installs one) leave both on."""
    _, ours = _pair("vit")
    x = photo_batch(SMALL["vit"][3], 2)
    with torch.no_grad():
        want = ours(x)
    assert ours.class_token_only()
    called = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: called.append(type(m)))
    try:
        assert ours.class_token_only()
        with torch.no_grad():
            ours(x)
    finally:
        handle.remove()
    assert nn.Softmax not in called and Attention in called
    seen = []
    handle = ours.transformer.layers[0][0].attend.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert not ours.class_token_only()
    with torch.no_grad():
        assert torch.allclose(ours(x), want, atol=1e-5)
    handle.remove()
    assert seen == [(2, 4, 13, 13)] and ours.class_token_only()


# ---------------------------------------------------------------------------------------------------------------
# DistillWrapper


def _digits(n: int, size=(32, 32)):
    train, _ = digits_split(0)
    return digits_batch(train[:n], make_preprocessing(size))


def _teacher() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10)).eval()


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_distill_wrapper_trains_ours_as_vit_pytorch_student(pool, hard):
    """vit-pytorch's DistillWrapper takes our DistillableViT as student: the same loss and the same student
    gradients as with its own student of the same weights (digits, one training step)."""
    d = oracle("distill")
    kw = dict(image_size=32, patch_size=8, num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64, dim_head=8,
              pool=pool)
    torch.manual_seed(0)
    ref_student = d.DistillableViT(**kw)
    ours = DistillableViT(**kw)
    ours.load_state_dict(ref_student.state_dict(), strict=True)
    teacher = _teacher()
    wrappers = []
    for student in (ref_student, ours):
        torch.manual_seed(1)  # the same distillation token and distillation head
        wrappers.append(d.DistillWrapper(teacher=teacher, student=student, temperature=3, alpha=0.5, hard=hard))
    img, labels = _digits(16)
    losses = []
    for w in wrappers:
        loss = w(img, labels)
        loss.backward()
        losses.append(loss)
    assert torch.isfinite(losses[0]) and abs(losses[0].item() - losses[1].item()) <= 1e-5
    ref_grads = dict(ref_student.named_parameters())
    for name, p in ours.named_parameters():
        if p.numel() == 0:  # pool='mean': the empty cls_token (vit-pytorch concatenates it, so it gets a grad)
            continue
        assert torch.allclose(p.grad, ref_grads[name].grad, atol=1e-5), name
    assert torch.allclose(wrappers[0].distillation_token.grad, wrappers[1].distillation_token.grad, atol=1e-5)


def test_readme_distillation_example():
    """vit-pytorch README's distillation example (a small teacher instead of torchvision's ResNet-50, a smaller
    width): train one step, predict, then ``to_vit()``, which is also a ``vit_pytorch.vit.ViT``."""
    d = oracle("distill")
    torch.manual_seed(0)
    v = DistillableViT(image_size=32, patch_size=8, num_classes=10, dim=64, depth=2, heads=4, mlp_dim=128,
                       dropout=0.1, emb_dropout=0.1)
    distiller = d.DistillWrapper(student=v, teacher=_teacher(), temperature=3, alpha=0.5, hard=False)
    img, labels = _digits(8)
    loss = distiller(img, labels)
    loss.backward()
    assert torch.isfinite(loss) and v.to_patch_embedding[2].weight.grad is not None
    v.eval()
    with torch.no_grad():
        pred = v(img)
    assert pred.shape == (8, 10)
    plain = v.to_vit().eval()
    assert isinstance(plain, ViT) and isinstance(plain, oracle("vit").ViT)
    with torch.no_grad():
        assert torch.allclose(plain(img), pred, atol=1e-5)


def test_distillable_t2t_is_broken_upstream_and_t2t_is_not_a_student():
    """vit-pytorch's DistillableT2TViT cannot run (its mixin repeats a 3-D class token as 'n d'), so there is no
    vitedge counterpart; like vit-pytorch's own T2TViT, ours is refused as a DistillWrapper student."""
    d = oracle("distill")
    kw = SMALL["t2t"][2]
    with pytest.raises(Exception, match="n d -> b n d"):
        d.DistillableT2TViT(**kw)(torch.zeros(1, 3, 32, 32))
    for student in (oracle("t2t").T2TViT(**kw), T2TViT(**kw)):
        with pytest.raises(AssertionError, match="student must be a vision transformer"):
            d.DistillWrapper(teacher=_teacher(), student=student)


# ---------------------------------------------------------------------------------------------------------------
# compat_base: isinstance without parameters, the switch, the package resolution


def test_compat_classes_are_vit_pytorch_classes_without_their_parameters():
    vit, distill, t2t = oracle("vit"), oracle("distill"), oracle("t2t")
    assert issubclass(Attention, vit.Attention)
    assert issubclass(ViT, vit.ViT) and issubclass(DistillableViT, distill.DistillableViT)
    assert issubclass(T2TViT, t2t.T2TViT)
    for ours, ref_cls, kw in [(ViT(**VIT), vit.ViT, VIT), (DistillableViT(**VIT), distill.DistillableViT, VIT),
                              (T2TViT(**SMALL["t2t"][2]), t2t.T2TViT, SMALL["t2t"][2])]:
        ref = ref_cls(**kw)
        assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
        ref.load_state_dict(ours.state_dict(), strict=True)
        assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def test_compat_base_switch_and_fallbacks(monkeypatch):
    monkeypatch.setenv(upstream.COMPAT_ENV, "0")
    assert upstream.compat_base("vit", "ViT") is nn.Module
    monkeypatch.setenv(upstream.COMPAT_ENV, "1")
    assert upstream.compat_base("vit", "ViT") is oracle("vit").ViT
    assert upstream.compat_base("vit", "NoSuchClass") is nn.Module
    assert upstream.compat_base("vit", "pair") is nn.Module          # not a class
    assert upstream.compat_base("no_such_module", "ViT") is nn.Module


@pytest.fixture
def fresh_vit_pytorch(tmp_path, monkeypatch):
    """An empty ``sys.modules`` for vit_pytorch / torchvision and ``tmp_path`` first on sys.path; restored after."""
    names = [k for k in sys.modules if k.split(".")[0] in ("vit_pytorch", "torchvision")]
    saved = {k: sys.modules.pop(k) for k in names}
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for k in [k for k in sys.modules if k.split(".")[0] in ("vit_pytorch", "torchvision")]:
        del sys.modules[k]
    sys.modules.update(saved)


def _fake_install(root, torchvision_init: str):
    (root / "vit_pytorch").mkdir()
    (root / "vit_pytorch" / "__init__.py").write_text("import torchvision\nREAL = True\n")
    (root / "vit_pytorch" / "vit.py").write_text("from torch import nn\nclass ViT(nn.Module):\n    pass\n")
    (root / "torchvision").mkdir()
    (root / "torchvision" / "__init__.py").write_text(torchvision_init)


def test_real_package_is_used_where_it_imports(fresh_vit_pytorch):
    _fake_install(fresh_vit_pytorch, "")
    module = upstream.upstream_module("vit")
    assert getattr(sys.modules["vit_pytorch"], "REAL", False) and module is sys.modules["vit_pytorch.vit"]


def test_loader_package_only_where_the_real_one_fails(fresh_vit_pytorch):
    _fake_install(fresh_vit_pytorch, "raise RuntimeError('operator torchvision::nms does not exist')\n")
    module = upstream.upstream_module("vit")
    pkg = sys.modules["vit_pytorch"]
    assert not hasattr(pkg, "REAL") and pkg.__path__ == [str(fresh_vit_pytorch / "vit_pytorch")]
    assert module.__name__ == "vit_pytorch.vit"


# ---------------------------------------------------------------------------------------------------------------
# input checks on every family

def _fixed_size(family: str) -> bool:
    """Families built for one input size (position embeddings or static grids); the others take any size the
    reference takes (cvt, twins_svt, crossformer, regionvit: no size argument)."""
    return size_arg(family)[1] != "none"


def _message(family: str, x: torch.Tensor) -> str:
    ours = family_class(family)(**SMALL[family][2]).eval()
    with pytest.raises(ValueError) as e, torch.no_grad():
        ours(x)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(type(ours).__name__), msg
    return msg


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_wrong_channels_or_rank_refused(family):
    h, w = SMALL[family][3]
    msg = _message(family, torch.randn(2, 1, h, w))
    assert "built for 3-channel input, got 1 channel " in msg and f"(2, 1, {h}, {w})" in msg
    assert "got 4 channels" in _message(family, torch.randn(2, 4, h, w))
    assert "shape (3, " in _message(family, torch.randn(3, h, w))


@pytest.mark.parametrize("family", sorted(f for f in FAMILIES if _fixed_size(f)))
def test_fixed_size_families_refuse_other_sizes(family):
    """Every other size, including the ones vit-pytorch runs against the first position embeddings (smaller or
    transposed grids) and the ones it fails on with a reshape error."""
    h, w = SMALL[family][3]
    for size in {(w, h), (h, w // 2), (2 * h, 2 * w), (h + 1, w)} - {(h, w)}:
        msg = _message(family, torch.randn(2, 3, *size))
        assert f"was built for {h}x{w} input, got {size[0]}x{size[1]} " in msg, msg


# a second size each size-free family's vit-pytorch counterpart runs
OTHER_SIZE = {"cvt": (96, 64), "twins_svt": (48, 32), "crossformer": (128, 128), "regionvit": (128, 64)}


@pytest.mark.parametrize("family", sorted(f for f in FAMILIES if not _fixed_size(f)))
def test_size_free_families_accept_what_vit_pytorch_accepts(family, photo_batch):
    ref, ours = _pair(family)
    x = photo_batch(OTHER_SIZE[family], 2)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-5)


def test_every_family_has_a_size_rule():
    assert set(OTHER_SIZE) == {f for f in FAMILIES if not _fixed_size(f)}


def test_cct_without_position_embedding_takes_any_size(photo_batch):
    kw = dict(SMALL["cct"][2], positional_embedding="none")
    ref, ours = _pair("cct", kw)
    assert isinstance(ours, CCT)
    for size in [(32, 48), (48, 32), (40, 40)]:
        x = photo_batch(size, 2)
        with torch.no_grad():
            assert torch.allclose(ours(x), ref(x), atol=1e-5)


def test_size_check_adds_nothing_to_traced_or_exported_graphs():
    """No TracerWarning under torch.jit.trace; torch.export with a dynamic batch keeps SDPA and no softmax."""
    model = ViT(**VIT).eval()
    x = torch.randn(2, 3, 32, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        torch.jit.trace(model, x, check_trace=False)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=16)},),
                             strict=False)
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count("aten.scaled_dot_product_attention.default") == 2
    assert not [t for t in targets if "softmax" in t]
    with torch.no_grad():
        assert ep.module()(torch.randn(5, 3, 32, 48)).shape == (5, 10)
