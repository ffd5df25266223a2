"""The command surface: every command is listed, help stays in sync, and start-up stays light."""

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mythos_convert.cli import app
from mythos_convert.cli.options import OUTTYPE_HELP
from mythos_convert.export.gguf_plan import ALL, OUTTYPES

COMMANDS = ("train", "generate", "tokenizer", "hf", "verify", "native", "gguf", "eval", "card", "push", "space", "demo")


def test_help_lists_every_command():
    out = CliRunner().invoke(app, ["--help"]).output
    for command in COMMANDS:
        assert command in out


def test_gguf_help_names_exactly_the_writable_types():
    assert OUTTYPE_HELP.split(" | ") == [*OUTTYPES, ALL]


def test_cli_start_does_not_import_torch():
    """`--help`, `card` and `push` should not pay for importing torch (about 2 s)."""
    code = "import sys, mythos_convert.cli; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_the_heap_is_frozen_when_the_process_exits_not_when_the_command_returns():
    """hf, verify and eval skip the exit collection; inside another process (CliRunner) its heap stays collectable."""
    code = (
        "import atexit, gc\n"
        "from mythos_convert.cli.common import skip_exit_collection\n"
        "atexit.register(lambda: print('at exit', gc.get_freeze_count() > 0))\n"  # runs after the freeze (LIFO)
        "skip_exit_collection()\n"
        "print('returned', gc.get_freeze_count())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines() == ["returned 0", "at exit True"]


def test_quiet_works_before_and_after_the_command_name():
    """--quiet is one option (cli.options.QuietOpt) whose callback silences the console wherever it is given."""
    from mythos_convert.support.ui import is_quiet, set_quiet

    try:
        for args, quiet in (
            (["-q", "card", "missing"], True),
            (["card", "missing"], False),
            (["card", "missing", "-q"], True),
        ):
            CliRunner().invoke(app, args)
            assert is_quiet() is quiet, args
    finally:
        set_quiet(False)


# Each command's path validation, as a user meets it: a path that does not exist (or a file where a
# folder goes). Every one must end as one `error: ` line (the CLI's one formatter), exit 2, nothing written.
PATH_ERRORS = {
    "train": ["train", "--data", "missing/", "--max-steps", "1"],
    "train-preset": ["train", "--preset", "missing.yaml"],
    "generate": ["generate", "missing.pt", "hello"],
    "tokenizer": ["tokenizer", "train", "--data", "missing", "--out", "t.json"],
    "hf": ["hf", "missing.pt", "out"],
    "verify": ["verify", "missing"],
    "native": ["native", "missing", "back.pt"],
    "gguf": ["gguf", "missing"],
    "imatrix": ["imatrix", "missing.pt", "--out", "im.gguf"],
    "mlx": ["mlx", "missing"],
    "eval": ["eval", "missing"],
    "card": ["card", "missing"],
    "push": ["push", "missing", "--repo", "owner/name", "--dry-run"],
    "space": ["space", "a-file", "--repo", "owner/name-demo", "--dry-run"],
    "demo": ["demo", "a-file"],
}


def test_every_command_is_in_the_path_error_table():
    registered = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert registered == {name.split("-")[0] for name in PATH_ERRORS}


@pytest.mark.parametrize("case", sorted(PATH_ERRORS))
def test_path_errors_are_one_lowercase_error_line(case, tmp_path):
    (tmp_path / "a-file").write_text("not a folder\n")
    env = {**os.environ, "HF_TOKEN": "hf_" + "x" * 34, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "mythos_convert", *PATH_ERRORS[case]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "missing" in lines[0] or "a-file" in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"], "a refused command wrote something"
