"""vitedge as a Python package: `pip install .` from a clean copy gives a working `vitedge` command, the extras
carry the pins they need, every install hint names an extra that exists, and the main job changes no tracked file.

The install test builds the wheel from a clean copy of the checkout (its tracked and untracked-but-not-ignored
files, as a fresh clone has them) with the running interpreter's setuptools (`pip wheel --no-deps
--no-build-isolation`), installs it into a new virtualenv (`--no-deps --no-index`), and gives that venv the
already-installed dependencies through a .pth line (the running environment's site-packages, added after the
venv's own; .pth files there are not run, so its editable vitedge stays out). It then checks that the console
script runs from the venv's own copy of the package, that the wheel holds every module of the source, and that
the venv's vitedge metadata (core + each installed extra, with every transitive requirement) is satisfied by the
installed versions. It downloads nothing; resolving from the registry (torch included) is done by hand
(docs/install.md).
"""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
CORE = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]


def constraint_pins() -> dict[str, Version]:
    """constraints.txt as {canonical name: pinned version} (every line is NAME==VERSION, comments aside)."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


# -- the extras and constraints.txt ----------------------------------------------------------------------------

def test_every_declared_pin_admits_the_tested_version():
    """`make setup` installs constraints.txt; `pip install '.[EXTRA]'` resolves pyproject alone. Every requirement
    in pyproject (core and extras) must admit the version constraints.txt pins, so both give a tested set."""
    pins = constraint_pins()
    reqs = [("core", r) for r in CORE] + [(e, Requirement(r)) for e, rs in EXTRAS.items() for r in rs]
    bad = [f"{where}: {r} excludes {pins[canonicalize_name(r.name)]}" for where, r in reqs
           if canonicalize_name(r.name) in pins
           and not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)]
    assert not bad, bad


# What each extra must keep out, measured: pip resolves an extra without constraints.txt, so these pins live there.
KNOWN_BAD = {
    "coreml": ["numpy==2.4.0"],  # coremltools 9.0 conversion: TypeError in its _cast
    "executorch": ["numpy==2.4.0",  # executorch 1.5.1 installs coremltools 9.0 on Linux x86_64
                   "torch==2.14.0"],  # its runtime module links libtorch (C++ ABI of one torch release)
}


@pytest.mark.parametrize("extra", sorted(KNOWN_BAD))
def test_extras_carry_their_own_limits(extra):
    reqs = [Requirement(r) for r in EXTRAS[extra]]
    for bad in KNOWN_BAD[extra]:
        name, version = bad.split("==")
        limits = [r for r in reqs if canonicalize_name(r.name) == name]
        assert limits and not all(r.specifier.contains(version) for r in limits), f"[{extra}] admits {bad}"


# -- install hints ---------------------------------------------------------------------------------------------

# Packages a hint may name bare (not through an extra). Everything an extra declares is named through the extra,
# which carries its pins (a bare `pip install coremltools==9.0` could leave numpy 2.4 in place).
BARE_OK = {
    "vit-pytorch": "the oracle's model files, installed --no-deps (its package pulls torchvision)",
    "einops": "vit-pytorch's one runtime import",
    "pip": "", "setuptools": "",
}
OPTS_WITH_ARG = {"-c", "--constraint", "-r", "--requirement", "-i", "--index-url", "--extra-index-url", "-f",
                 "--find-links", "-t", "--target", "--prefix", "--root", "--python"}
STOP_WORDS = {"on", "in", "from", "where", "with", "for", "and", "or", "then", "to", "if", "inside"}
REQ_SHAPE = re.compile(r"^(\.|[A-Za-z0-9][A-Za-z0-9._-]*)(\[[A-Za-z0-9_,-]+\])?([<>=!~]=?[A-Za-z0-9.*+,<>=!~]+)?$")


def string_constants(path: Path):
    """Every string literal in a Python file, f-strings joined with `{}` for their fields: (line, text)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    inner = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            yield node.lineno, "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inner:
            yield node.lineno, node.value


def install_hints(text: str):
    """Each `pip install ...` in a message: (the hint, the requirements it names). The command runs to a closing
    parenthesis, the end of the line, or the first word of prose after it ('... on a machine with a GPU')."""
    for m in re.finditer(r"pip install((?:\s+[^\s)]+)*)", text):
        try:
            tokens = shlex.split(m.group(1))
        except ValueError:
            tokens = m.group(1).split()
        reqs, it = [], iter(tokens)
        for tok in it:
            if tok in OPTS_WITH_ARG:
                next(it, None)
            elif tok.startswith("-"):
                continue
            elif tok.lower() in STOP_WORDS or not REQ_SHAPE.match(tok):
                break
            else:
                reqs.append(tok)
        yield m.group(0), reqs


def hint_sources():
    files = sorted((ROOT / "vitedge").rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    return [f for f in files if f.name != Path(__file__).name]


def hint_problems(hint: str, reqs: list[str], message: str) -> list[str]:
    if not reqs:
        return [f"{hint!r} names nothing to install"]
    problems = []
    declared = {canonicalize_name(Requirement(r).name): e for e, rs in EXTRAS.items() for r in rs}
    core = {canonicalize_name(r.name) for r in CORE}
    for tok in reqs:
        req = Requirement("vitedge" + tok[1:]) if tok.startswith(".") else Requirement(tok)
        name = canonicalize_name(req.name)
        if name == "vitedge":
            problems += [f"{hint!r}: no extra {e!r} in pyproject.toml" for e in req.extras if e not in EXTRAS]
            # 'openvino is not installed (pip install 'vitedge[X]')': X must be an extra that installs openvino
            for missing in re.findall(r"([\w.-]+) is not installed", message):
                m = canonicalize_name(missing)
                if m in declared and not any(canonicalize_name(Requirement(r).name) == m
                                             for e in req.extras if e in EXTRAS for r in EXTRAS[e]):
                    problems.append(f"{hint!r}: {missing} comes with the extra {declared[m]!r}, not {req.extras}")
        elif name in BARE_OK or name in core:
            continue
        elif name in declared:
            problems.append(f"{hint!r}: {req.name} comes with the extra {declared[name]!r}: pip install "
                            f"'vitedge[{declared[name]}]' (its pins come along)")
        else:
            problems.append(f"{hint!r}: {req.name} is neither a dependency of vitedge nor a known bare install")
    return problems


def test_install_hints_name_extras_that_exist():
    """Every `pip install ...` in a message of vitedge (and in the tests' skip reasons) names an extra that
    pyproject.toml declares (`'vitedge[EXTRA]'` or `'.[EXTRA]'`), a core dependency, or a listed bare package."""
    found, problems = [], []
    for path in hint_sources():
        for line, text in string_constants(path):
            for hint, reqs in install_hints(text):
                found.append(hint)
                problems += [f"{path.relative_to(ROOT)}:{line}: {p}" for p in hint_problems(hint, reqs, text)]
    assert not problems, "\n".join(problems)
    assert len(found) >= 8, found  # the parser still finds the hints (executorch, onnx, coreml, tensorrt, ...)
    assert any("vitedge[tensorrt]" in h for h in found) and any("vitedge[coreml]" in h for h in found)


@pytest.mark.parametrize("hint, text, ok", [
    ("pip install 'vitedge[tensorrt]' on a machine with an NVIDIA GPU", "TensorRT is not installed (H)", True),
    ("pip install 'vitedge[openvino]'", "nncf is not installed (H): e", True),
    ("pip install '.[openvino,test]'", "", True),
    ("pip install -q --no-deps vit-pytorch einops", "", True),
    ("pip install onnxruntime", "onnxruntime is not installed (H)", True),
    ("pip install 'vitedge[tensorrt10]'", "", False),            # no such extra
    ("pip install coremltools==9.0", "", False),                 # bare: skips the coreml extra's numpy limit
    ("pip install 'vitedge[coreml]'", "openvino is not installed (H)", False),  # the wrong extra
    ("pip install", "", False),
    ("pip install timm", "", False),
])
def test_hint_parser(hint, text, ok):
    ((h, reqs),) = list(install_hints(hint))
    assert (not hint_problems(h, reqs, text.replace("H", hint))) == ok


def test_extras_named_in_the_docs_and_build_exist():
    """`vitedge[x]` and `'.[x]'` in the Makefile, README, docs and scripts name extras that exist (an upper-case
    name, `vitedge[EXTRA]`, is a placeholder)."""
    files = [ROOT / "Makefile", ROOT / "README.md", ROOT / "CONVENTIONS.md", ROOT / ".ci/run",
             *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "scripts").iterdir())]
    named, problems = 0, []
    for path in (f for f in files if f.is_file()):
        for m in re.finditer(r"(?:\bvitedge|['\"`]\.)\[([A-Za-z0-9_, -]+)\]", path.read_text(errors="replace")):
            named += 1
            problems += [f"{path.relative_to(ROOT)}: {m.group(0)}: no extra {e.strip()!r}"
                         for e in m.group(1).split(",")
                         if e.strip() not in EXTRAS and not e.strip().isupper()]  # EXTRA, X: placeholders
    assert not problems, problems
    assert named >= 3


# -- the main job writes no tracked file -----------------------------------------------------------------------

def load_main_job():
    spec = importlib.util.spec_from_file_location("main_job", ROOT / "benchmarks/main_job.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_main_job_writes_under_artifacts_unless_recording():
    job = load_main_job()
    default = job.results_dir(job.parse_args([]))
    assert default.resolve().is_relative_to(ROOT / "artifacts"), default
    assert Path(job.parse_args([]).out).resolve().is_relative_to(ROOT / "artifacts")
    assert job.KEY.resolve().is_relative_to(ROOT / "artifacts")
    assert "artifacts/" in (ROOT / ".gitignore").read_text().split()
    assert job.results_dir(job.parse_args(["--record"])) == ROOT / "benchmarks/results"
    assert job.results_dir(job.parse_args(["--results", "/tmp/x"])) == Path("/tmp/x")
    with pytest.raises(SystemExit):
        job.parse_args(["--record", "--results", "/tmp/x"])
    assert "--record" in (ROOT / "Makefile").read_text()  # `make demo RECORD=1`


# -- pip install . from a clean copy ---------------------------------------------------------------------------

def run(cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert p.returncode == 0, f"{cmd}: exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


GIT = ["git", "-c", "user.name=vitedge-test", "-c", "user.email=test@invalid", "-c", "commit.gpgsign=false"]


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory):
    """The checkout's tracked and untracked-not-ignored files (what a clone of a commit of them holds), copied and
    committed to a new git repository so that `git status` can tell what a run leaves behind."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
    dst = tmp_path_factory.mktemp("clone") / "vitedge"
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    run(["git", "init", "-q", dst])
    run(GIT + ["-C", dst, "add", "-A"])
    run(GIT + ["-C", dst, "commit", "-q", "-m", "clean copy"])
    return dst


def git_status(repo: Path) -> str:
    return run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=all"]).stdout


CHECK_DEPS = r'''
import json, sys
from importlib.metadata import distribution, PackageNotFoundError
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

def dist(name):
    try:
        return distribution(name)
    except PackageNotFoundError:
        return None

me = distribution("vitedge")
reqs = [Requirement(r) for r in me.requires or []]
extras = sorted(me.metadata.get_all("Provides-Extra") or [])
report = {"location": str(me.locate_file("")), "checked": [], "skipped": [], "problems": []}

def satisfied(req, seen, path):
    d = dist(req.name)
    if d is None:
        report["problems"].append(f"{' <- '.join(path)}: {req} is not installed")
        return
    if not req.specifier.contains(d.version, prereleases=True):
        report["problems"].append(f"{' <- '.join(path)}: {req} but {d.version} is installed")
    key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
    if key in seen:
        return
    seen.add(key)
    for sub in d.requires or []:
        sub = Requirement(sub)
        envs = [{"extra": e} for e in (req.extras or [""])] + [{"extra": ""}]
        if sub.marker is None or any(sub.marker.evaluate(env) for env in envs):
            satisfied(sub, seen, path + [req.name])

seen = set()
for r in reqs:
    if r.marker is None or r.marker.evaluate({"extra": ""}):
        satisfied(r, seen, ["vitedge"])
report["checked"].append("core")
for e in extras:
    mine = [r for r in reqs if r.marker is not None and r.marker.evaluate({"extra": e})]
    if not any(dist(r.name) for r in mine):
        report["skipped"].append(e)  # none of it installed here (tensorrt on a machine without it)
        continue
    for r in mine:
        satisfied(r, seen, [f"vitedge[{e}]"])
    report["checked"].append(e)
print(json.dumps(report))
'''


@pytest.fixture(scope="module")
def installed(clean_copy, tmp_path_factory):
    """A new venv with vitedge installed from the clean copy's wheel; its dependencies come from the running
    environment through a .pth line."""
    setuptools = Version(importlib.metadata.version("setuptools"))
    assert setuptools >= Version("77"), f"pyproject's build-system needs setuptools>=77, this has {setuptools}"
    tmp = tmp_path_factory.mktemp("venv")
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PIP_FIND_LINKS", None)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", tmp / "wheel", clean_copy], env=env)
    (wheel,) = (tmp / "wheel").glob("vitedge-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin/python"
    run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel], env=env)
    site = Path(run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    deps = dict.fromkeys(p for p in sys.path if Path(p).name in ("site-packages", "dist-packages"))
    assert sysconfig.get_path("purelib") in deps, sys.path
    (site / "zz_vitedge_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    return venv, site


def test_pip_install_gives_a_working_vitedge_command(clean_copy, installed, tmp_path):
    venv, site = installed
    exe = venv / "bin/vitedge"
    assert exe.is_file(), "the console script [project.scripts] vitedge was not installed"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = run([venv / "bin/python", "-c", "import vitedge.cli; print(vitedge.cli.__file__)"], cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout  # the venv's copy, not the checkout's
    shipped = {p.relative_to(site).as_posix() for p in (site / "vitedge").rglob("*.py")}
    source = {p.relative_to(clean_copy).as_posix() for p in (clean_copy / "vitedge").rglob("*.py")}
    assert shipped == source, f"missing from the wheel: {sorted(source - shipped)}"
    data = {p.relative_to(clean_copy).as_posix() for p in (clean_copy / "vitedge").rglob("*.json")}
    assert data and all((site / d).is_file() for d in data), "package data (the manifest JSON Schema) not in the wheel"
    schema = run([venv / "bin/python", "-c", "from vitedge.manifest import manifest_schema; "
                  "print(manifest_schema()['$schema'])"], cwd=tmp_path, env=env).stdout.strip()
    assert schema == "https://json-schema.org/draft/2020-12/schema", schema
    out = run([exe, "--help"], cwd=tmp_path, env=env).stdout
    assert "usage: vitedge" in out and "export" in out
    assert run([exe, "--version"], cwd=tmp_path, env=env).stdout.strip() == f"vitedge {PYPROJECT['project']['version']}"
    zoo = json.loads(run([exe, "zoo", "--family", "vit", "--json"], cwd=tmp_path, env=env).stdout)
    assert {"deit_tiny", "deit_small", "deit_base"} <= {z["preset"] for z in zoo}
    assert git_status(clean_copy) == ""  # building the wheel left nothing that is not ignored


def test_installed_metadata_is_satisfied(installed, tmp_path):
    """The dependencies the wheel declares (core, every installed extra, transitively) are what is installed."""
    venv, site = installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    report = json.loads(run([venv / "bin/python", "-c", CHECK_DEPS], cwd=tmp_path, env=env).stdout)
    assert Path(report["location"]).resolve() == site.resolve(), report["location"]
    assert not report["problems"], "\n".join(report["problems"])
    assert "core" in report["checked"]
    assert set(report["checked"]) | set(report["skipped"]) == {"core", *EXTRAS}


@pytest.mark.slow
def test_main_job_in_a_clean_copy_changes_no_tracked_file(clean_copy):
    """`make demo`'s job (ONNX only, so no C++ build; few timed runs) leaves `git status` clean and writes its
    table under artifacts/."""
    run([sys.executable, clean_copy / "benchmarks/main_job.py", "--presets", "deit_tiny", "--targets", "onnx",
         "--warmup", "1", "--iters", "3"], cwd=clean_copy)
    assert git_status(clean_copy) == ""
    table = clean_copy / "artifacts/main/main_job.md"
    assert table.is_file() and "deit_tiny-onnx" in table.read_text()
