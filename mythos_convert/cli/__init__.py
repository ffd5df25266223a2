"""The `mythos-convert` command: registers thin commands; one place turns errors into one line.

Each command lives in its own module under `mythos_convert/cli/` and only parses arguments and
calls the library. A `MythosError` becomes one line on stderr and exit code 2; anything else is a
bug and says so (with the traceback under `--debug` or `MYTHOS_DEBUG=1`).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated

import typer

from mythos_convert import __version__
from mythos_convert.cli.options import DebugOpt, QuietOpt
from mythos_convert.errors import MythosError
from mythos_convert.support import interrupts

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
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    from mythos_convert.support.ui import set_quiet

    set_quiet(quiet)
    _state["debug"] = _state["debug"] or debug


def _register() -> None:
    """Import each command module and attach its function; modules stay independent."""
    from mythos_convert.cli import (
        card_cmd,
        demo_cmd,
        eval_cmd,
        generate_cmd,
        gguf_cmd,
        hf_cmd,
        imatrix_cmd,
        mlx_cmd,
        native_cmd,
        push_cmd,
        space_cmd,
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
    app.command("imatrix")(imatrix_cmd.imatrix)
    app.command("mlx")(mlx_cmd.mlx)
    app.command("eval")(eval_cmd.eval_)
    app.command("card")(card_cmd.card)
    app.command("push")(push_cmd.push)
    app.command("space")(space_cmd.space)
    app.command("demo")(demo_cmd.demo)


_register()


def main() -> None:
    """Console entry point: every failure ends as one line on stderr and a meaningful exit code.

    2: bad input (a MythosError, a usage mistake, a file the system refuses); 1: a bug; 130: Ctrl-C
    (SIGINT), 143: SIGTERM, each after the command's cleanup (`interrupts`).
    """
    with interrupts.handled():
        _run()


def _run() -> None:
    if "--debug" in sys.argv:
        _state["debug"] = True
    try:
        code = app(standalone_mode=False)
    except MythosError as exc:
        _fail(exc, str(exc), exc.exit_code)
    except (KeyboardInterrupt, typer.Abort) as exc:
        _fail_signal(exc)
    except OSError as exc:  # the system refused a file (disk full, permissions, a file where a folder goes)
        _fail_signal(exc)
        where = f": {exc.filename}" if exc.filename else ""
        _fail(exc, f"{exc.strerror or exc}{where}: check the path, permissions and free space", 2)
    except Exception as exc:
        _fail_signal(exc)
        if _is_click_error(exc):
            if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command or group: show its help
                exc.show()
                sys.exit(exc.exit_code)
            _fail(exc, f"{exc.format_message()}{_usage_hint(exc)}", exc.exit_code)
        # anything else is a bug: say so in one line unless debugging
        _fail(exc, f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1, prefix="")
    if code == 130:  # typer turns KeyboardInterrupt inside a command (our signals' too) into exit code 130
        _fail_signal(None)
    sys.exit(code if isinstance(code, int) else 0)


def _fail_signal(exc: BaseException | None) -> None:
    """After SIGINT/SIGTERM (or a bare KeyboardInterrupt): its word and 128+signal, whatever it raised
    on its way out (a worker it also reached may have failed first)."""
    signum = interrupts.received()
    if signum is None:
        if exc is not None and not isinstance(exc, (KeyboardInterrupt, typer.Abort)):
            return  # no signal: the caller reports the error
        signum = signal.SIGINT  # a KeyboardInterrupt before our handler, or stdin closed (typer.Abort)
    if exc is not None and _state["debug"]:
        raise exc
    typer.echo(interrupts.HANDLED[signal.Signals(signum)], err=True)
    sys.exit(128 + signum)


def _fail(exc: BaseException, message: str, code: int, prefix: str = "error: ") -> None:
    if _state["debug"]:
        raise exc
    text = " ".join(message.split("\n")).strip()
    typer.echo(f"{prefix}{text}", err=True)
    sys.exit(code)


def _is_click_error(exc: BaseException) -> bool:
    """Usage mistakes (click's, or typer's vendored click's) that click would print as a boxed block."""
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)


def _usage_hint(exc: BaseException) -> str:
    ctx = getattr(exc, "ctx", None)
    return f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
