"""The documentation: the site builds with warnings as errors, offline; the CLI reference lists every
command and option; every command or snippet in README.md and docs/ is run here, checked against the
CLI, or marked as not runnable here; the README stays a short front door.

A code block is marked not runnable with an HTML comment on the line before its fence:
`<!-- not-run: why -->` (the real Hub, Ollama, installing packages). `mythos-convert` lines are
checked against the CLI in every block, marked or not: a marker only excuses the other programs.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
TEST_COMMAND = (
    'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e ".[test]" '
    "&& python -m pytest"
)
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
MARKER = re.compile(r"<!--\s*not-run:\s*(?P<why>[^>]*?)\s*-->\s*$")
COMMAND_LANGS = {"bash", "sh", "shell", "console"}


def _hook():
    spec = importlib.util.spec_from_file_location("cli_reference", DOCS / "hooks" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _root_command():
    import typer

    from mythos_convert.cli import app

    return typer.main.get_command(app)


def _all_commands(command=None, path=("mythos-convert",)):
    """Every command of the typer app, walked here independently of the hook that writes the page."""
    command = command or _root_command()
    found = [(path, command)]
    if hasattr(command, "list_commands"):
        ctx = command.context_class(command)
        for name in command.list_commands(ctx):
            found += _all_commands(command.get_command(ctx, name), (*path, name))
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """`mkdocs build --strict` into a temporary folder, offline (as CI runs it)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1", "HTTPS_PROXY": "http://127.0.0.1:9"}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-4000:]
    print(f"mkdocs build --strict: {seconds:.1f} s")
    return out


def test_the_site_builds_with_every_page(site: Path):
    for page in (
        "index.html",
        "getting-started/index.html",
        "parity/index.html",
        "quantization/index.html",
        "performance/index.html",
        "troubleshooting/index.html",
        "reference/cli/index.html",
        "reference/api/index.html",
        *(f"commands/{c}/index.html" for c in ("train", "hf", "gguf", "imatrix", "verify", "eval", "card")),
        *(f"commands/{c}/index.html" for c in ("push", "space", "serving")),
    ):
        assert (site / page).is_file(), page
    quantization = (site / "quantization" / "index.html").read_text()
    assert 'src="../assets/gguf-quality.png"' in quantization
    assert (site / "assets" / "gguf-quality.png").read_bytes().startswith(b"\x89PNG")
    # the API reference is rendered from docstrings, not written by hand
    api = (site / "reference" / "api" / "index.html").read_text()
    assert "export_hf" in api and "Raises" in api


def test_the_site_fetches_nothing_from_the_web(site: Path):
    """No web fonts or CDN scripts: the pages render offline as they were built."""
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert "fonts.googleapis.com" not in text and "fonts.gstatic.com" not in text, page


def test_the_cli_reference_lists_every_command_and_option(site: Path):
    html = (site / "reference" / "cli" / "index.html").read_text()
    markdown = _hook().cli_markdown()
    checked = 0
    for path, command in _all_commands():
        title = " ".join(path)
        assert f"## {title}\n" in markdown, title
        assert f">{title}<" in html or f">{title}<a" in html or title in html, title
        for param in command.params:
            names = param.opts + param.secondary_opts if param.param_type_name == "option" else [param.name.upper()]
            for name in names:
                assert f"`{name}`" in markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0], (title, name)
                assert f"<code>{name}</code>" in html, (title, name)
                checked += 1
    assert checked > 100  # every command's options, not a handful
    assert {" ".join(p) for p, _ in _all_commands()} >= {"mythos-convert tokenizer train", "mythos-convert demo"}


def test_the_cli_reference_fails_when_an_option_is_missing(monkeypatch):
    """The check above can fail: a reference that drops an option is caught."""
    hook = _hook()
    real = hook._param_row
    monkeypatch.setattr(hook, "_param_row", lambda p, ctx: "" if "--outtype" in p.opts else real(p, ctx))
    assert "`--outtype`" not in hook.cli_markdown()
    assert "`--outtype`" in _hook().cli_markdown()


# --- code blocks -------------------------------------------------------------------------------


def _documents() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def code_blocks(path: Path) -> list[tuple[int, str, str, str | None]]:
    """(line, language, body, not-run reason) of every fenced block of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        indent = len(match["indent"])
        body = "\n".join(line_[indent:] for line_ in match["body"].splitlines())
        blocks.append((line, match["lang"], body, marker["why"] if marker else None))
    return blocks


def shell_commands(body: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    commands, pending = [], ""
    for raw in body.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def mythos_invocations(command: str) -> list[list[str]]:
    """The argument lists after each `mythos-convert` (or `python -m mythos_convert`) in a command line."""
    words = shlex.split(command, comments=True)
    found, i = [], 0
    while i < len(words):
        if words[i] == "mythos-convert":
            start = i + 1
        elif words[i : i + 3] == ["-m", "mythos_convert", *words[i + 2 : i + 3]] and words[i + 1] == "mythos_convert":
            start = i + 2
        else:
            i += 1
            continue
        end = next((j for j in range(start, len(words)) if words[j] in ("&&", "||", ";", "|")), len(words))
        found.append(words[start:end])
        i = end
    return found


def check_invocation(args: list[str]) -> list[str]:
    """What is wrong with `mythos-convert ARGS` against the real CLI: unknown commands and options."""
    command, path = _root_command(), ["mythos-convert"]
    problems: list[str] = []
    options = {o for p in command.params for o in p.opts + p.secondary_opts} | {"--help", "-h"}
    for arg in args:
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            if name not in options:
                problems.append(f"{' '.join(path)}: no option {name}")
            continue
        if hasattr(command, "list_commands"):
            sub = command.get_command(command.context_class(command), arg)
            if sub is None:
                return [*problems, f"{' '.join(path)}: no command {arg}"]
            command, path = sub, [*path, arg]
            options = {o for p in command.params for o in p.opts + p.secondary_opts} | {"--help", "-h"}
    if hasattr(command, "list_commands") and "--help" not in args and "--version" not in args:
        problems.append(f"{' '.join(path)}: a command group, not a command")
    return problems


def _all_blocks():
    for path in _documents():
        for line, lang, body, why in code_blocks(path):
            yield path.relative_to(ROOT), line, lang, body, why


def test_every_code_block_is_checked_or_marked():
    """Shell blocks: every line is a `mythos-convert` command (checked below) unless marked.
    Python blocks are run (next test) unless marked. Any other language must be plain text."""
    unmarked = []
    for path, line, lang, body, why in _all_blocks():
        if why is not None:
            assert why, f"{path}:{line}: a not-run marker says why"
            continue
        if lang in COMMAND_LANGS:
            for command in shell_commands(body):
                if not mythos_invocations(command):
                    unmarked.append(f"{path}:{line}: {command}")
        elif lang not in ("python", "text", "yaml", "json", "toml", "bibtex", "markdown", ""):
            unmarked.append(f"{path}:{line}: a {lang} block")
    assert not unmarked, "run these, or mark them <!-- not-run: why -->:\n" + "\n".join(unmarked)


def test_every_mythos_convert_command_in_the_docs_names_real_commands_and_options():
    problems, checked = [], 0
    for path, line, lang, body, _why in _all_blocks():
        if lang not in COMMAND_LANGS:
            continue
        for command in shell_commands(body):
            for args in mythos_invocations(command):
                problems += [f"{path}:{line}: {p}" for p in check_invocation(args)]
                checked += 1
    assert checked >= 40
    assert not problems, "\n".join(problems)


def test_the_cli_check_can_fail():
    assert check_invocation(["gguf", "out/", "--outtype", "q8_0"]) == []
    assert check_invocation(["gguf", "out/", "--out-type", "q8_0"]) == ["mythos-convert gguf: no option --out-type"]
    assert check_invocation(["publish", "out/"]) == ["mythos-convert: no command publish"]
    assert check_invocation(["tokenizer", "train", "--vocab-size", "512"]) == []
    assert mythos_invocations("torchrun --nproc_per_node 8 -m mythos_convert train --preset x") == [
        ["train", "--preset", "x"]
    ]


def test_help_commands_in_the_docs_run():
    """The cheap commands (`--help`, `--version`) are run as written."""
    ran = 0
    for path, line, lang, body, why in _all_blocks():
        if lang not in COMMAND_LANGS or why is not None:
            continue
        for command in shell_commands(body):
            for args in mythos_invocations(command):
                if "--help" in args or args == ["--version"]:
                    proc = subprocess.run(
                        [sys.executable, "-m", "mythos_convert", *args], capture_output=True, text=True, timeout=120
                    )
                    assert proc.returncode == 0, f"{path}:{line}: {proc.stderr[-2000:]}"
                    ran += 1
    assert ran >= 1


@pytest.mark.slow
def test_python_snippets_run(tmp_path: Path, tiny_ckpt: Path):
    """Each unmarked Python block runs as written, in a fresh folder holding `runs/tiny/` (a tiny
    checkpoint); all in one interpreter, each in a namespace of its own, so imports are paid once."""
    import json
    import shutil

    snippets = []
    for path, line, lang, body, why in _all_blocks():
        if lang != "python" or why is not None:
            continue
        cwd = tmp_path / f"{path.stem}-{line}"
        run = cwd / "runs" / "tiny"
        run.mkdir(parents=True)
        shutil.copy(tiny_ckpt, run / "ckpt.pt")
        shutil.copy(tiny_ckpt.parent / "tokenizer.json", run / "tokenizer.json")
        snippets.append({"name": f"{path}:{line}", "cwd": str(cwd), "code": body})
    driver = (
        "import json, os, sys\n"
        "for s in json.loads(sys.argv[1]):\n"
        "    os.chdir(s['cwd'])\n"
        "    print('running', s['name'], flush=True)\n"
        "    exec(compile(s['code'], s['name'], 'exec'), {'__name__': '__main__'})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", driver, json.dumps(snippets)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-500:] + proc.stderr[-3000:]
    assert proc.stdout.count("running ") == len(snippets) >= 3


# --- the README --------------------------------------------------------------------------------


def test_the_readme_is_a_short_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert TEST_COMMAND in text
    for page in ("getting-started.md", "parity.md", "quantization.md", "performance.md", "troubleshooting.md"):
        assert f"docs/{page}" in text, page
    assert "TGI" not in text.split("## Supported runtimes", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)
    assert len(links) >= 15
    assert [link for link in links if not (ROOT / link).exists()] == []


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.strip().splitlines()[-1] == TEST_COMMAND


def test_docs_say_nothing_of_how_the_project_was_made():
    """Results, not a lab notebook: no sessions, rounds of work or goals met/missed in the documents."""
    pattern = re.compile(
        r"\b(this|a later|an earlier|the next|previous) session\b|\bsessions?\b.*\bmeasured\b|"
        r"\bgoal (is |was )?(not )?(met|missed)\b|\brounds? of work\b|\bearlier attempts?\b",
        re.I,
    )
    documents = [*_documents(), ROOT / "CHANGELOG.md", *sorted((ROOT / "examples").glob("*.md"))]
    found = [f"{p.relative_to(ROOT)}: {m[0]}" for p in documents for m in pattern.finditer(p.read_text())]
    assert not found, found


def _generated_page_is_current(script: str) -> None:
    """A generated page's script, run with --check, finds the page as it would write it."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_performance_page_is_rendered_from_the_results():
    """docs/performance.md is what benchmarks/render_docs.py makes of benchmarks/results/*.json."""
    _generated_page_is_current("render_docs.py")


def test_performance_tables_put_machines_side_by_side_with_ratios_to_their_own_baseline():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import render_docs

    def document(cpu: str, flags: list[str], floor: float, ours: float) -> dict:
        rows = [
            {"name": "ours", "best": ours, "spread": [ours, ours * 1.1]},
            {"name": "floor", "best": floor, "baseline": True},
        ]
        return {
            "machine": {"cpu": cpu, "cores": 2, "flags": flags},
            "benchmarks": {"hf_export": {"title": "Export", "metric": "s", "better": "lower", "rows": rows}},
        }

    intel = document("Intel Xeon", ["avx2", "avx512f", "amx_tile"], 0.2, 0.8)
    page = render_docs.render([intel, document("AMD EPYC", ["avx2"], 0.4, 2.0)])
    header = next(line for line in page.splitlines() if line.startswith("| variant"))
    assert header.index("AMD EPYC (AVX2)") < header.index("Intel Xeon (AVX-512, AMX)")
    assert "| ours | 2 | 2-2.2 | 5.00x | 0.8 | 0.8-0.88 | 4.00x |" in page
    assert "| floor | 0.4 | - | 1 (baseline) | 0.2 | - | 1 (baseline) |" in page
    assert "date" in page and "not recorded" in page


def test_quantization_figures_are_rendered_from_their_results():
    """docs/quantization.md's table is what benchmarks/render_quantization.py makes of its results file."""
    _generated_page_is_current("render_quantization.py")


def test_a_benchmarks_own_result_rows_reach_the_side_by_side_table(tmp_path, monkeypatch):
    """What a benchmark emits under run.py (results rows and settings) is what the results file keeps
    and the page puts beside the same rows of another machine, with the ratio to its own floor."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _shared
    import render_docs
    import results

    jsonl = tmp_path / "run.jsonl"
    monkeypatch.setenv(_shared.JSON_ENV, str(jsonl))
    monkeypatch.setattr(sys, "argv", ["bench_hf_export.py"])
    rows = [{"name": "ours", "best": 0.9, "spread": [0.9, 1.2]}, {"name": "floor", "best": 0.3, "baseline": True}]
    _shared.emit("Export", ["variant", "s"], [["ours", 0.9]], results=rows, settings="tiny, 3 runs")
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    document = results.results_document(records, [])
    assert document["benchmarks"]["hf_export"]["rows"] == rows
    assert document["benchmarks"]["hf_export"]["settings"] == "tiny, 3 runs"
    other = {
        "machine": {"cpu": "AMD EPYC", "cores": 2, "flags": ["avx2"]},
        "benchmarks": {
            "hf_export": {"title": "Export", "rows": [{"name": "ours", "best": 2.0}, {**rows[1], "best": 0.4}]}
        },
    }
    document["machine"] = {"cpu": "Intel Xeon", "cores": 2, "flags": ["avx2", "avx512f", "amx_tile"]}
    page = render_docs.render([document, other])
    assert "| ours | 2 | - | 5.00x | 0.9 | 0.9-1.2 | 3.00x |" in page
    assert "- Intel Xeon (AVX-512, AMX): tiny, 3 runs." in page
