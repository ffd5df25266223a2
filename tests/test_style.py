"""The codebase stays ruff clean (lint and format), checked the way CI sees it."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_clean(args):
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    proc = subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


PACKAGE = ROOT / "mythos_convert"
KQUANT_REFERENCE = PACKAGE / "quant" / "kquants.py"  # llama.cpp's reference quantizers, kept close to ggml-quants.c


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p != KQUANT_REFERENCE)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_no_module_over_400_lines_nor_function_over_60():
    long_files = [str(p.relative_to(ROOT)) for p in _modules() if len(p.read_text().splitlines()) > 400]
    long_functions = [
        f"{p.relative_to(ROOT)}:{node.lineno} {node.name}"
        for p in _modules()
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60
    ]
    assert long_files == [] and long_functions == []


def test_commands_are_thin_and_nothing_imports_them():
    """A command module is its signature, one library call and printing; the library never imports the CLI."""
    commands = sorted((PACKAGE / "cli").glob("*_cmd.py"))
    assert commands and [p.name for p in commands if len(p.read_text().splitlines()) > 42] == []
    outside = [p for p in _modules() if PACKAGE / "cli" not in p.parents and p.name != "__main__.py"]
    assert [
        str(p.relative_to(ROOT)) for p in outside if any(n.startswith("mythos_convert.cli") for n in _imports(p))
    ] == []


def test_evaluate_and_card_import_no_verifier():
    """They read verify.json through verify/record.py; the verifiers (and their engines' use) stay in verify/."""
    readers = [*(PACKAGE / "evaluate").glob("*.py"), *(PACKAGE / "card").glob("*.py")]
    reached = {
        f"{p.relative_to(ROOT)}: {n}"
        for p in readers
        for n in _imports(p)
        if n.startswith("mythos_convert.verify") and not n.startswith("mythos_convert.verify.record")
    }
    assert reached == set()
