"""The package's import structure, read from the source with ``ast`` (nothing is imported).

(a) The graph of module-level imports between vitedge modules is acyclic, and so is the graph with the imports
    inside functions added (no cycle hidden behind a function-level import).
(b) Every import inside a function is an optional or heavy runtime (:data:`LAZY_RUNTIMES`), a platform module
    (:data:`PLATFORM_ONLY`), or keeps torch out of a module that must not import it (:data:`TORCH_FREE`); what
    other modules still do is listed, temporarily, in :data:`OWNED_ELSEWHERE`.
(c) Layering: vitedge.models imports nothing from targets, export or cli; targets import nothing from cli;
    nothing imports cli; the CLI's remaining imports of target modules are listed in :data:`CLI_TARGET_INTERNALS`.

``python tests/test_architecture.py`` prints the graph, its cycles and every import inside a function.
"""
from __future__ import annotations

import ast
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vitedge"

# Imports allowed inside functions anywhere: runtimes that are optional extras, or heavy to import and needed by
# one code path only. Top-level package name -> why it is imported where it is used.
LAZY_RUNTIMES = {
    "onnx": "heavy (protobuf schemas); only for ONNX export, graph checks and artifact scans",
    "onnxruntime": "heavy; only when an ONNX graph is quantized or run",
    "onnxscript": "heavy; only for the ONNX export's graph rewrites",
    "onnx_ir": "heavy; only for the ONNX / OpenVINO graph rewrites",
    "openvino": "optional extra [openvino]",
    "nncf": "optional extra [openvino] (int8 quantization)",
    "coremltools": "optional extra [coreml]",
    "executorch": "optional extra [executorch]",
    "torchao": "comes with the [executorch] extra (its pt2e quantization)",
    "tensorrt": "optional extra [tensorrt] (no wheel on CPU machines; import may raise OSError)",
    "model_signing": "heavy (sigstore stack); only for --sign / --key / verify",
    "cryptography": "only for --sign / --key / keygen / verify",
    "jsonschema": "about 0.13 s of import; only when a manifest is read (not for vitedge zoo or --help)",
    "skimage": "heavy (about 0.5 s); only to locate its bundled photos",
    "sklearn": "heavy (about 1 s); only for the digits dataset",
    "ray": "optional extra [ray]; only for vitedge sweep --executor ray",
    "matplotlib": "heavy (about 0.3 s); only when vitedge sweep draws its plot",
    # Hard dependencies, imported where used so that the CLI starts fast (vitedge --help, vitedge zoo):
    "rich": "CLI start-up: only when a table is printed",
    "tqdm": "CLI start-up: only when a progress bar is drawn",
}
PLATFORM_ONLY = {
    "fcntl": "POSIX only (the artifact lock; Windows has none)",
}

# Modules that must not import torch at module level, directly or through other vitedge modules: `vitedge zoo`
# and `vitedge --help` stay fast (tests/test_cli.py), and validating or benchmarking an ONNX Runtime or OpenVINO
# artifact on a synthetic input never pays torch's second of import (vitedge.machine.default_threads). Inside
# their functions they may import torch, or a vitedge module that imports it, where a code path needs it.
TORCH_FREE = frozenset({
    "vitedge", "vitedge.errors", "vitedge.files", "vitedge.timing", "vitedge.cli", "vitedge.progress", "vitedge.report", "vitedge.machine",
    "vitedge.models", "vitedge.models.zoo", "vitedge.manifest", "vitedge.safety", "vitedge.signing",
    "vitedge.device", "vitedge.runtime", "vitedge.bench", "vitedge.targets", "vitedge.targets.onnx",
    "vitedge.targets.openvino", "vitedge.targets.onnx_graph", "vitedge.targets.speed",
})

# Function-level imports that no rule above allows, each with why it must stay for now: none left. An entry here
# that is no longer needed fails the test, so the list always shows exactly what is left.
OWNED_ELSEWHERE: dict[tuple[str, str], str] = {
}

# The CLI goes through vitedge.targets (the registry), never into one target's module: no exceptions.
CLI_TARGET_INTERNALS: dict[str, str] = {}

# The layers of docs/architecture-layers.md: a module imports from its own layer or lower ones (module prefix ->
# layer; the longest prefix wins).
LAYERS = {
    "vitedge": 0, "vitedge.errors": 0, "vitedge.machine": 0, "vitedge.progress": 0, "vitedge.safety": 0,
    "vitedge.device": 0, "vitedge.signing": 0, "vitedge.files": 0, "vitedge.timing": 0,
    "vitedge.data": 1, "vitedge.manifest": 1, "vitedge.checkpoint": 1, "vitedge.report": 1,
    "vitedge.models": 2,
    "vitedge.parity": 3,
    "vitedge.targets": 4, "vitedge.quantize": 4,
    "vitedge.runtime": 5, "vitedge.export": 5, "vitedge.validate": 5, "vitedge.train": 5, "vitedge.bench": 5,
    "vitedge.remote": 5,
    "vitedge.sweep": 5,
    "vitedge.cli": 6,
}


@dataclass(frozen=True)
class Import:
    module: str     # the importing module
    target: str     # what it imports: a vitedge module, or a third-party / stdlib dotted name
    line: int
    lazy: bool      # inside a function (or a lambda)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> list[str]:
    """What ``node`` imports: vitedge modules by their module name (``from . import x`` -> ``vitedge.x`` when x is
    a module, else the package), other names as written."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        pkg = ".".join(base + ([node.module] if node.module else []))
    else:
        pkg = node.module or ""
    out = []
    for a in node.names:
        sub = f"{pkg}.{a.name}"
        out.append(sub if sub in MODULES else pkg)
    return out


def _is_type_checking(node: ast.AST) -> bool:
    t = node.test if isinstance(node, ast.If) else None
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


@functools.lru_cache(maxsize=None)
def imports() -> tuple[Import, ...]:
    """Every import statement of the package (``if TYPE_CHECKING:`` blocks left out: they never run)."""
    found = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"

        def visit(node, lazy):
            for child in ast.iter_child_nodes(node):
                if _is_type_checking(child):
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in dict.fromkeys(_resolve(name, is_package, child)):
                        found.append(Import(name, target, child.lineno, lazy))
                visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

        visit(tree, False)
    return tuple(found)


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def graph(lazy: bool = False) -> dict[str, set[str]]:
    """vitedge module -> the vitedge modules its import statements run: module-level ones (and with ``lazy``,
    those inside functions too). Importing ``a.b.c`` also runs the packages ``a.b`` (and ``a``) unless the
    importer is inside them already, so those are edges too."""
    g: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in imports():
        if imp.target not in MODULES or (imp.lazy and not lazy):
            continue
        own = set(_ancestors(imp.module)) | {imp.module}
        for t in [*_ancestors(imp.target), imp.target]:
            if t in MODULES and t not in own:
                g[imp.module].add(t)
    return g


def find_cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The cycles of ``g`` as paths (first module repeated at the end): for each module on a cycle, a shortest
    cycle through it, each cycle once."""
    index, low, stack, on, comps = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in g[v]:
                comps.append(set(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(g):
        if v not in index:
            strong(v)
    cycles, seen = [], set()
    for comp in comps:  # for each module of a component, a shortest cycle through it (each cycle once)
        for start in sorted(comp):
            prev, order = {start: None}, [start]
            for v in order:  # breadth first; `order` grows while it is walked
                for w in sorted(g[v] & comp):
                    if w not in prev:
                        prev[w] = v
                        order.append(w)
            path = [next(v for v in order if start in g[v])]
            while prev[path[-1]] is not None:
                path.append(prev[path[-1]])
            path.reverse()
            i = path.index(min(path))
            key = tuple(path[i:] + path[:i])
            if key not in seen:
                seen.add(key)
                cycles.append(list(key) + [key[0]])
    return cycles


def imports_torch() -> set[str]:
    """vitedge modules that import torch at module level, directly or through other vitedge modules."""
    g = graph()
    heavy = {i.module for i in imports() if not i.lazy and i.target.split(".")[0] == "torch"}
    changed = True
    while changed:
        grown = heavy | {m for m, deps in g.items() if deps & heavy}
        changed, heavy = grown != heavy, grown
    return heavy


def lazy_violations() -> tuple[list[str], set[tuple[str, str]]]:
    """(imports inside functions that no rule allows, OWNED_ELSEWHERE entries in use)."""
    torch_heavy = imports_torch()
    bad, used = [], set()
    for imp in imports():
        if not imp.lazy:
            continue
        top = imp.target.split(".")[0]
        if top in LAZY_RUNTIMES or top in PLATFORM_ONLY:
            continue
        pulls_torch = top == "torch" or imp.target in torch_heavy or any(
            a in torch_heavy for a in _ancestors(imp.target) if a in MODULES)
        if imp.module in TORCH_FREE and pulls_torch:
            continue
        key = (imp.module, imp.target if imp.target in MODULES or top == "vitedge" else top)
        if key in OWNED_ELSEWHERE:
            used.add(key)
            continue
        bad.append(f"{MODULES[imp.module].relative_to(ROOT)}:{imp.line}: {imp.module} imports {imp.target} "
                   "inside a function")
    return bad, used


# ---------------------------------------------------------------------------------------------------------------


def test_module_level_imports_are_acyclic():
    cycles = find_cycles(graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_cycle_hidden_in_function_level_imports():
    cycles = find_cycles(graph(lazy=True))
    assert not cycles, "import cycles through imports inside functions: " + "; ".join(
        " -> ".join(c) for c in cycles)


def test_cycle_finder_reports_a_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(find_cycles(g)) == [["a", "b", "c", "a"], ["e", "e"]]


def test_function_level_imports_are_allow_listed():
    bad, used = lazy_violations()
    assert not bad, "imports inside functions that are not optional runtimes (move them to module level):\n" + \
        "\n".join(bad)
    stale = sorted(set(OWNED_ELSEWHERE) - used)
    assert not stale, f"OWNED_ELSEWHERE entries no longer needed (remove them): {stale}"


def test_torch_free_modules_do_not_import_torch():
    heavy = imports_torch() & TORCH_FREE
    assert not heavy, f"modules that must stay torch-free import torch at module level: {sorted(heavy)}"


def test_resolution_of_relative_imports():
    found = {(i.module, i.target) for i in imports() if not i.lazy}
    assert ("vitedge.export", "vitedge.progress") in found       # from . import progress
    assert ("vitedge.manifest", "vitedge") in found              # from . import __version__
    assert ("vitedge.models.vit", "vitedge.models.layers") in found
    assert ("vitedge.targets.onnx", "vitedge.errors") in found   # from ..errors import ...
    assert ("vitedge.models.zoo", "torch") not in found          # under `if TYPE_CHECKING:`


@pytest.mark.parametrize("importer, forbidden", [
    ("vitedge.models", ("vitedge.targets", "vitedge.export", "vitedge.cli")),
    ("vitedge.targets", ("vitedge.cli",)),
    ("vitedge", ("vitedge.cli",)),
])
def test_layering(importer, forbidden):
    """Lower layers never import higher ones, at module level or inside functions; nothing imports the CLI."""
    bad = []
    for imp in imports():
        inside = imp.module == importer or imp.module.startswith(importer + ".")
        if inside and imp.module != "vitedge.cli" and any(
                imp.target == f or imp.target.startswith(f + ".") for f in forbidden):
            bad.append(f"{imp.module}:{imp.line} imports {imp.target}")
    assert not bad, f"{importer} must not import {', '.join(forbidden)}: " + "; ".join(bad)


def _layer(module: str) -> int:
    return LAYERS[max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)]


def test_every_module_has_a_layer():
    """A new top-level module must be placed (a subpackage's modules take the package's layer)."""
    assert not [m for m in MODULES if m.count(".") == 1 and m not in LAYERS], "add new modules to LAYERS"


def test_imports_go_down_the_layers():
    """At module level and inside functions, except the backward imports listed in OWNED_ELSEWHERE."""
    up = [f"{i.module}:{i.line} (layer {_layer(i.module)}) imports {i.target} (layer {_layer(i.target)})"
          for i in imports() if i.target in MODULES and _layer(i.target) > _layer(i.module)
          and (i.module, i.target) not in OWNED_ELSEWHERE]
    assert not up, "imports up the layers: " + "; ".join(up)


def test_cli_reaches_targets_only_through_their_api():
    used = {i.target for i in imports() if i.module == "vitedge.cli" and i.target.startswith("vitedge.targets.")}
    assert used <= set(CLI_TARGET_INTERNALS), f"the CLI imports target modules: {sorted(used)}"
    assert not set(CLI_TARGET_INTERNALS) - used, f"CLI_TARGET_INTERNALS entries no longer needed: " \
        f"{sorted(set(CLI_TARGET_INTERNALS) - used)}"


if __name__ == "__main__":
    for lazy in (False, True):
        g = graph(lazy)
        print("# module-level imports" if not lazy else "# with imports inside functions")
        for m in sorted(g):
            print(f"{m} -> {', '.join(sorted(g[m])) or '-'}")
        print("cycles:", [" -> ".join(c) for c in find_cycles(g)] or "none", "\n")
    print("# imports inside functions")
    for i in imports():
        if i.lazy:
            print(f"{i.module}:{i.line} {i.target}")
    bad, used = lazy_violations()
    print("\n# not allowed:\n" + "\n".join(bad))
