"""Zoo presets: every preset builds and runs; counted params match the papers where the architecture is the paper's."""
import json

import pytest
import torch

from vitedge.cli import main
from vitedge.errors import UsageError
from vitedge.models.zoo import PRESETS, create_model, get_preset, model_stats

REQUIRED = ["deit_tiny", "deit_small", "mobilevit_xxs", "mobilevit_xs", "mobilevit_s", "levit_128s", "levit_128",
            "levit_192", "levit_256"]


def test_required_presets_exist_with_citations():
    for name in REQUIRED:
        p = get_preset(name)
        assert "arXiv" in p.paper and p.citation


STATED = sorted(n for n, p in PRESETS.items() if p.paper_params_m and p.params_comparable)


@pytest.mark.parametrize("name", STATED)
def test_params_match_the_paper_within_2_percent(name):
    """Every preset whose paper states a parameter count, and whose vit-pytorch architecture is the paper's."""
    p = get_preset(name)
    s = model_stats(create_model(name), p.input_size)
    assert abs(s["params_m"] - p.paper_params_m) / p.paper_params_m <= 0.02, (s["params_m"], p.paper_params_m)


def test_presets_not_comparable_say_why():
    for n, p in PRESETS.items():
        if p.paper_params_m and not p.params_comparable:
            assert "vit-pytorch" in p.note, n


@pytest.mark.parametrize("name", ["deit_tiny", "deit_small"])
def test_deit_flops_match_paper(name):
    """The full ViT pass counts the paper's multiply-adds; our forward counts about 7% fewer, since after the last
    attention it computes only the class token the head reads (``Transformer.forward_first``)."""
    p = get_preset(name)
    model = create_model(name)

    class FullPass(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.head(self.m.transformer(self.m.embed(x)))
    paper_gmacs = {"deit_tiny": 1.3, "deit_small": 4.6}[name]
    full = model_stats(FullPass(model), p.input_size)["gmacs"]
    ours = model_stats(model, p.input_size)["gmacs"]
    assert abs(full - paper_gmacs) / paper_gmacs <= 0.05
    assert 0.90 * full <= ours <= 0.95 * full


@pytest.mark.parametrize("name", REQUIRED)
def test_preset_forward_shape(name):
    p = get_preset(name)
    m = create_model(name)
    with torch.no_grad():
        y = m(torch.zeros(1, 3, *p.input_size))
    assert y.shape == (1, 1000)


def test_seeded_presets_are_reproducible():
    a, b = create_model("levit_128s", seed=3), create_model("levit_128s", seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_unknown_preset_suggests_close_match():
    with pytest.raises(UsageError, match="did you mean mobilevit_xs"):
        get_preset("mobilevit_x")


def test_every_family_has_a_preset():
    from vitedge.models.zoo import FAMILIES
    assert {p.family for p in PRESETS.values()} == set(FAMILIES)


def test_zoo_cli_json(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("VITEDGE_CACHE_DIR", str(tmp_path))
    assert main(["zoo", "--json", "--family", "mobilevit", "--count"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["preset"] for r in rows} == {n for n, p in PRESETS.items() if p.family == "mobilevit"}
    assert all(r["params"] > 0 and r["gflops"] > 0 for r in rows)
    assert main(["zoo", "--json", "--family", "mobilevit"]) == 0  # without --count: the registry only
    assert all("params" not in r for r in json.loads(capsys.readouterr().out))


def test_zoo_counts_are_counted_then_cached(tmp_path, monkeypatch):
    """--count's numbers are model_stats on the built model; the second time they come from the cache, which a
    change to the model sources invalidates."""
    import vitedge.models.zoo as zoo
    monkeypatch.setenv("VITEDGE_CACHE_DIR", str(tmp_path))
    names = ["deit_tiny", "levit_128s", "mobilevit_xxs"]
    built = []
    first = zoo.preset_counts(names, on_count=lambda n, i, k: built.append((n, i, k)))
    assert built == [(n, i, 3) for i, n in enumerate(names, 1)]
    for n in names:
        assert first[n] == model_stats(create_model(n), get_preset(n).input_size)
    assert (tmp_path / "zoo-counts.json").is_file()

    def no_build(*a, **k):
        raise AssertionError("counted again")
    with monkeypatch.context() as m:
        m.setattr(zoo, "model_stats", no_build)
        assert zoo.preset_counts(names[::-1]) == {n: first[n] for n in names[::-1]}
    monkeypatch.setattr(zoo, "_sources_digest", lambda: "other model code")
    built.clear()
    again = zoo.preset_counts(names[:1], on_count=lambda n, i, k: built.append(n))
    assert built == ["deit_tiny"] and again["deit_tiny"] == first["deit_tiny"]


def test_zoo_count_cache_that_cannot_be_read_or_written_is_ignored(tmp_path, monkeypatch):
    import vitedge.models.zoo as zoo
    (tmp_path / "zoo-counts.json").write_text("{not json")
    monkeypatch.setenv("VITEDGE_CACHE_DIR", str(tmp_path))
    a = zoo.preset_counts(["levit_128s"])
    monkeypatch.setenv("VITEDGE_CACHE_DIR", str(tmp_path / "zoo-counts.json" / "sub"))  # under a file: unwritable
    assert zoo.preset_counts(["levit_128s"]) == a


def test_cct_presets_equal_the_constructor_functions():
    from vitedge.models import cct
    for n in (2, 4, 6, 7, 8, 14, 16):
        p = PRESETS[f"cct_{n}"]
        kw = {k: v for k, v in p.kwargs.items() if k not in ("embedding_dim", "num_layers", "num_heads", "mlp_ratio")}
        torch.manual_seed(0)
        a = getattr(cct, f"cct_{n}")(**kw)
        torch.manual_seed(0)
        b = create_model(f"cct_{n}", seed=None)
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
