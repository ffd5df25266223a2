"""The command surface: every command is listed, help stays in sync, and start-up stays light."""

import subprocess
import sys

from typer.testing import CliRunner

from mythos_convert.cli import app
from mythos_convert.cli.gguf_cmd import OUTTYPE_HELP
from mythos_convert.convert.gguf import ALL, OUTTYPES

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
