"""The `mythos-convert` command: registers thin commands; one place turns errors into one line.

Each command lives in its own module under `mythos_convert/cli/` and only parses arguments and
calls the library. A `MythosError` becomes one line on stderr and exit code 2; anything else is a
bug and says so (with the traceback under `--debug` or `MYTHOS_DEBUG=1`).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from mythos_convert import __version__
from mythos_convert.errors import MythosError

app = typer.Typer(
    name="mythos-convert",
    help="Train a Mythos model, export it to transformers and GGUF, verify parity, publish it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_state = {"debug": os.environ.get("MYTHOS_DEBUG", "") not in ("", "0")}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mythos-convert {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or chatter.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    from mythos_convert.ui import set_quiet

    set_quiet(quiet)
    _state["debug"] = _state["debug"] or debug


def _register() -> None:
    """Import each command module and attach its function; modules stay independent."""
    from mythos_convert.cli import (
        card_cmd,
        demo_cmd,
        generate_cmd,
        gguf_cmd,
        hf_cmd,
        native_cmd,
        push_cmd,
        tokenizer_cmd,
        train_cmd,
        verify_cmd,
    )

    app.command("train")(train_cmd.train)
    app.command("generate")(generate_cmd.generate)
    app.add_typer(tokenizer_cmd.app, name="tokenizer")
    app.command("hf")(hf_cmd.hf)
    app.command("verify")(verify_cmd.verify)
    app.command("native")(native_cmd.native)
    app.command("gguf")(gguf_cmd.gguf)
    app.command("card")(card_cmd.card)
    app.command("push")(push_cmd.push)
    app.command("demo")(demo_cmd.demo)


_register()


def main() -> None:
    """Console entry point."""
    if "--debug" in sys.argv:
        _state["debug"] = True
    try:
        app(standalone_mode=True)
    except MythosError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: say so in one line unless debugging
        if _state["debug"]:
            raise
        typer.echo(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)
