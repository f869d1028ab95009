"""The family registry (issue 20, "no single place to add a family"): a family declared in one place, here a toy
family registered by the test itself (class, one preset, export recipes), is listed by `vitedge zoo`, exported by
`vitedge export`, validated from its manifest, and gets its recipes in every target; the built-in family specs are
complete, and bad registrations fail at registration."""
import json

import pytest
import torch
from torch import nn

from vitedge.cli import main
from vitedge.errors import UsageError
from vitedge.models import registry
from vitedge.models.registry import DEFAULT_RECIPES, FAMILIES, PRESETS, family_recipe, register_family, register_preset
from vitedge.models.zoo import create_model, family_class, size_arg
from vitedge.targets import default_int8_options


class ToyNet(nn.Module):
    """Patch embedding, one GELU MLP, mean pool, head: the smallest model the targets treat like a ViT."""

    def __init__(self, image_size=16, patch_size=4, dim=8, num_classes=3):
        super().__init__()
        assert image_size % patch_size == 0
        self.embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        return self.head((t + self.mlp(t)).mean(1))


@pytest.fixture
def toy():
    """The toy family and its preset, registered for the test only."""
    register_family("toy", ToyNet, size_arg=("image_size", "square"), small_config=dict(image_size=8),
                    small_input_size=(8, 8),
                    recipes={"onnx": {"fusions": ("gelu",)}, "onnx_int8": {"mode": "dynamic"},
                             "executorch_int8": {"mode": "dynamic"}})
    register_preset("toy_16", "toy", dict(image_size=16, patch_size=4, dim=8, num_classes=3), (16, 16),
                    "Toy, a test 2024", "Nobody. A toy family.", note="registered by tests/models/test_registry.py")
    yield "toy"
    registry.unregister_family("toy")
    assert "toy" not in FAMILIES and "toy_16" not in PRESETS


def test_toy_family_is_listed_by_vitedge_zoo(toy, capsys):
    assert main(["zoo", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["preset"] for r in rows] == list(PRESETS) and rows[-1]["preset"] == "toy_16"
    assert main(["zoo", "--json", "--family", "toy"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["family"] == "toy" and row["input_size"] == [16, 16] and row["source"] == "Toy"
    with pytest.raises(SystemExit):
        main(["zoo", "--help"])
    assert "toy" in capsys.readouterr().out


def test_toy_family_exports_and_validates(toy, tmp_path, capsys):
    out = tmp_path / "toy-onnx"
    assert main(["export", "toy_16", "--target", "onnx", "-o", str(out), "-q"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["family"] == "toy" and m["model"]["preset"] == "toy_16"
    assert m["onnxruntime"]["graph_optimizer"]["fusions"] == ["gelu"]  # the toy's "onnx" recipe
    capsys.readouterr()
    assert main(["validate", str(out), "--json", "-"]) == 0  # rebuilds the eager model from the registry
    assert "max_abs" in capsys.readouterr().out


def test_toy_family_recipes_reach_every_target(toy):
    assert default_int8_options("onnx", "toy") == {"mode": "dynamic"}
    assert default_int8_options("executorch", "toy") == {"mode": "dynamic"}
    from vitedge.targets import openvino
    assert openvino.default_int8_recipe("toy") == dict(DEFAULT_RECIPES["openvino_int8"])  # not declared: default
    assert size_arg("toy") == ("image_size", "square") and family_class("toy") is ToyNet
    with torch.no_grad():
        assert create_model("toy_16")(torch.zeros(2, 3, 16, 16)).shape == (2, 3)


def test_recipes_default_for_families_that_declare_none():
    for family, spec in FAMILIES.items():
        for kind, default in DEFAULT_RECIPES.items():
            assert family_recipe(family, kind) == spec.recipes.get(kind, default)
    for kind, default in DEFAULT_RECIPES.items():  # a model outside the zoo
        assert family_recipe(None, kind) == family_recipe("not_a_family", kind) == default
    r = family_recipe("mobilevit", "onnx_int8")
    r["mode"] = "changed"  # a copy
    assert family_recipe("mobilevit", "onnx_int8")["mode"] == "dynamic"


def test_builtin_families_are_declared_by_their_spec_modules():
    """Every built-in family: a spec module of its own name in vitedge/models/families/, a class in
    vitedge.models (named, not imported, by the spec), at least one preset."""
    from pathlib import Path

    import vitedge.models.families as fams
    specs = {p.stem for p in Path(fams.__file__).parent.glob("*.py") if not p.stem.startswith("_")}
    assert specs == set(FAMILIES)
    for family, spec in FAMILIES.items():
        assert spec.module == f"vitedge.models.families.{family}", (family, spec.module)
        assert spec.class_path.startswith("vitedge.models."), family
        assert any(p.family == family for p in PRESETS.values()), family


def test_class_paths_are_imported_only_when_a_model_is_built():
    register_family("lazy_toy", "no_such_module_for_vitedge:Net")
    try:
        register_preset("lazy_toy_1", "lazy_toy", {}, (8, 8), "p", "c")
        assert FAMILIES["lazy_toy"].class_path == "no_such_module_for_vitedge:Net"
        with pytest.raises(ModuleNotFoundError):
            family_class("lazy_toy")
    finally:
        registry.unregister_family("lazy_toy")
    assert "lazy_toy_1" not in PRESETS


@pytest.mark.parametrize("kwargs, needle", [
    (dict(name="vit", cls=ToyNet), "already registered"),
    (dict(name="Bad-Name", cls=ToyNet), "is not [a-z]"),
    (dict(name="toy2", cls=ToyNet, recipes={"tensorrt_int8": {}}), "unknown recipe kinds"),
    (dict(name="toy2", cls=ToyNet, size_arg=(None, "tuple")), "size_arg"),
    (dict(name="toy2", cls="no colon"), "module:Class"),
    (dict(name="toy2", cls=ToyNet()), "not a class"),
])
def test_bad_registrations_fail_at_registration(kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace("[", r"\[")):
        register_family(kwargs.pop("name"), kwargs.pop("cls"), **kwargs)
    assert "toy2" not in FAMILIES


def test_presets_need_a_registered_family_and_a_new_name():
    with pytest.raises(ValueError, match="not registered"):
        register_preset("x_1", "no_family", {}, (8, 8), "p", "c")
    with pytest.raises(ValueError, match="already registered"):
        register_preset("deit_tiny", "vit", {}, (8, 8), "p", "c")


def test_unknown_family_is_a_usage_error():
    from vitedge.models.upstream import upstream_class
    for fn in (family_class, size_arg, upstream_class):
        with pytest.raises(UsageError, match="unknown model family 'bogus'"):
            fn("bogus")
