"""Every code block in README.md and docs/*.md is run or checked, so the documentation stays true.

The markdown is read as a doctest-style script (`tests/mdblocks.py` splits it):

- ``python`` blocks run, in order, in one namespace per file, in a temporary working folder (they may write
  ``artifacts/...``, ``levit.safetensors``): what a reader pasting them would get.
- ``bash`` blocks: the shell parses them (``bash -n``); every ``vitedge ...`` command is parsed by the real CLI
  parser (an unknown flag or a bad choice fails the test); every ``make TARGET`` names a Makefile target; every
  repository path a command names (``benchmarks/x.py``, ``scripts/x.sh``) exists.
- ``text`` blocks whose lines start with ``vitedge``: the usage synopsis; every ``--flag`` must exist on that
  subcommand's parser.
- ``cpp`` blocks compile against ``cpp/include`` (``g++ -fsyntax-only``); fragments are wrapped in a function
  that declares what they use.
- ``json`` blocks parse.
- Inline ``vitedge ...`` code spans in prose and tables: their flags must exist on the subcommand.
- Relative links ``[..](path)`` point to files that exist.

A block that cannot run here says why in an HTML comment on the line before its fence:
``<!-- doctest: skip REASON -->``; the reason is required.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mdblocks import Block, code_spans, doc_files, links, read_blocks
from vitedge.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = doc_files(ROOT)
BLOCKS = [b for f in DOCS for b in read_blocks(f)]


def _id(b: Block) -> str:
    return f"{b.path.relative_to(ROOT)}:{b.line}:{b.lang or 'plain'}"


def _subparsers():
    ap = build_parser()
    for action in ap._actions:  # argparse keeps subparsers here; no public accessor
        if action.__class__.__name__ == "_SubParsersAction":
            return ap, action.choices
    raise AssertionError("vitedge's parser has no subcommands")


PARSER, SUBCOMMANDS = _subparsers()


def _flags(sub: str) -> set[str]:
    return {s for a in SUBCOMMANDS[sub]._actions for s in a.option_strings}


def check_vitedge_flags(words: list[str], where: str) -> None:
    """Every ``--flag`` / ``-x`` in a vitedge command (usage syntax allowed) exists on its subcommand."""
    if len(words) >= 2 and words[1] in ("--help", "-h", "--version"):
        return
    assert len(words) >= 2 and words[1] in SUBCOMMANDS, f"{where}: unknown vitedge subcommand in {' '.join(words)!r}"
    known = _flags(words[1])
    for w in words[2:]:
        for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", w):
            assert flag in known, f"{where}: vitedge {words[1]} has no flag {flag} ({' '.join(words)!r})"


def _commands(script: str) -> list[list[str]]:
    """Simple commands of a shell script: split on newlines, ``&&``, ``||``, ``;`` and ``|``; comments dropped."""
    out = []
    for line in script.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        for part in re.split(r"&&|\|\||;|\|", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                continue
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value cmd
                words = words[1:]
            if words:
                out.append(words)
    return out


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+):", text, flags=re.M))


def _check_repo_paths(words: list[str], where: str) -> None:
    for w in words:
        if re.fullmatch(r"(benchmarks|scripts|tests|cpp)/[\w./-]+\.(py|sh)", w):
            assert (ROOT / w).exists(), f"{where}: {w} does not exist"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang in ("bash", "sh", "shell", "console")], ids=_id)
def test_shell_block(block: Block):
    if block.skip is not None:
        pytest.skip(block.skip)
    script = "\n".join(line[2:] if line.startswith("$ ") else line for line in block.code.splitlines()
                       if not (block.lang == "console" and line and not line.startswith("$ ")))
    r = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert r.returncode == 0, f"{_id(block)}: bash cannot parse it: {r.stderr}"
    targets = _make_targets()
    for words in _commands(script):
        where = _id(block)
        if words[0] == "vitedge":
            check_vitedge_flags(words, where)
            if "|" not in " ".join(words) and "[" not in " ".join(words) and words[1] in SUBCOMMANDS:
                try:
                    PARSER.parse_args(words[1:])
                except SystemExit as e:
                    raise AssertionError(f"{where}: the CLI refuses {' '.join(words)!r}") from e
        elif words[0] == "make":
            for t in words[1:]:
                if not t.startswith("-") and "=" not in t:
                    assert t in targets, f"{where}: the Makefile has no target {t!r}"
        _check_repo_paths(words, where)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "text" and "\nvitedge " in "\n" + b.code],
                         ids=_id)
def test_usage_block(block: Block):
    for line in block.code.splitlines():
        if line.startswith("vitedge "):
            check_vitedge_flags(line.split("#")[0].split(), _id(block))
    listed = {line.split()[1] for line in block.code.splitlines() if line.startswith("vitedge ")}
    if len(listed) > 3:  # the synopsis: it must list every subcommand
        assert listed == set(SUBCOMMANDS), f"{_id(block)}: synopsis lists {sorted(listed)}, CLI has {sorted(SUBCOMMANDS)}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_inline_vitedge_commands_and_links(path: Path):
    for line, span in code_spans(path):
        if span.startswith("vitedge ") and len(span.split()) > 1 and span.split()[1] in SUBCOMMANDS:
            check_vitedge_flags(span.split(), f"{path.relative_to(ROOT)}:{line}")
    for line, target in links(path):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file = target.split("#")[0]
        assert (path.parent / file).exists(), f"{path.relative_to(ROOT)}:{line}: link to missing {target}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "json"], ids=_id)
def test_json_block(block: Block):
    if block.skip is not None:
        pytest.skip(block.skip)
    json.loads(block.code)


CPP_PRELUDE = """#include <vitedge/runner.h>
#include <vitedge/vitedge.h>
#include <string>
"""


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang in ("cpp", "c++")], ids=_id)
def test_cpp_block(block: Block, tmp_path):
    if block.skip is not None:
        pytest.skip(block.skip)
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    code = block.code
    if "int main" not in code:  # a fragment: the names README fragments use, declared
        code = (CPP_PRELUDE + "void fragment(const std::string& artifact_dir, const vitedge::Options& options) {\n"
                + code + "\n}\n")
    src = tmp_path / "block.cpp"
    src.write_text(code)
    r = subprocess.run([cxx, "-std=c++17", "-fsyntax-only", f"-I{ROOT / 'cpp' / 'include'}", str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"{_id(block)} does not compile:\n{r.stderr[-3000:]}"


PY_FILES = sorted({b.path for b in BLOCKS if b.lang == "python"})


@pytest.mark.parametrize("path", PY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(path: Path, tmp_path, monkeypatch):
    """All python blocks of one file, in order, in one namespace, in an empty working folder."""
    blocks = [b for b in BLOCKS if b.path == path and b.lang == "python"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    ns: dict = {"__name__": "__doc__"}
    ran = 0
    for b in blocks:
        if b.skip is not None:
            continue
        try:
            exec(compile(b.code, f"{_id(b)}", "exec"), ns)  # noqa: S102 - the docs' own examples
        except Exception as e:  # name the block, not this test
            raise AssertionError(f"{_id(b)} fails as written: {type(e).__name__}: {e}") from e
        ran += 1
    if ran == 0:
        pytest.skip("every python block here is marked doctest: skip")


def test_every_block_has_a_checker_or_a_reason():
    """No code block is silently ignored: a language we do not check needs a skip reason or no language (plain
    text output, a folder listing)."""
    checked = {"python", "bash", "sh", "shell", "console", "text", "cpp", "c++", "json", ""}
    for b in BLOCKS:
        assert b.lang in checked or b.skip is not None, f"{_id(b)}: ```{b.lang} blocks are not checked by this test"
        if b.skip is not None:
            assert b.skip.strip(), f"{_id(b)}: doctest: skip needs a reason"


def test_readme_is_a_guide():
    """The README stays a user guide (<= 300 lines) whose first bash block is the two set-up commands."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move detail to docs/"
    first = next(b for b in BLOCKS if b.path.name == "README.md" and b.lang == "bash")
    assert [c[:2] for c in _commands(first.code)] == [["make", "demo"], ["make", "test"]]


def test_no_reference_outside_the_repository():
    """The project's files stand alone: none cites the planning notes that live outside the repository."""
    r = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("not a git checkout")
    bad = re.compile(r"\.\./shared|\b(ENVIRONMENT|DESIGN|ANCHORS)\.md\b")
    hits = []
    for name in r.stdout.splitlines():
        p = ROOT / name
        if p.suffix in (".py", ".md", ".txt", ".toml", ".cmake", ".cpp", ".h", ".sh", ".cfg", ".in") or p.name in (
                "Makefile", "CMakeLists.txt"):
            if p.name == "test_docs.py":
                continue
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
                if bad.search(line):
                    hits.append(f"{name}:{n}: {line.strip()[:100]}")
    assert not hits, "files cite something outside the repository:\n" + "\n".join(hits)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
